"""Discffusion: image-text matching from a diffusion UNet's cross-attention (thesis ch. 5).

For one image and C captions, at each noise level: ``z_t`` (eq. 5.3) goes
through the UNet once per caption (one batch), the shared recorder
(:mod:`pipelines.attention`) keeps each selected layer's attention map ``A``
(pixels x tokens, per head), LogSumExp pooling over tokens averaged over
pixels (eq. 5.4) gives one number per head, heads are averaged, then layers and
noise levels are averaged. Dynamic head weighting (eq. 5.7) has two readings here:
``"attribution"`` replaces each head's map by its attribution ``A_h * df/dA_h``
(detached gradient, element-wise) before the pooling, as the equation is
written; ``"scalar"`` keeps the maps and weights each head's pooled score by
its share ``|sum_ij A_h * df/dA_h|`` of the total attribution (an earlier,
coarser reading, kept as a named variant). What the thesis' own
code computes is summarised in ``docs/notes/discffusion.md``: it pools the
*pre-softmax* scores ``QK^T/sqrt(d)`` (``values="logits"``) and adds the
denoising-error contrast ``||eps - eps_uncond|| - ||eps - eps_c||``
(``denoising_weight``); both readings are options here and the bench
(``bench/matching.py``) measures which works on the tiny pack.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..attention import (
    AttentionOffsets,
    CrossAttentionControl,
    average_resized,
    cross_attention_layers,
    heatmap_size,
    lse_pool,
    token_indices,
)
from ..attention.store import LayerSelector, layer_predicate
from ..errors import InvalidInputError
from .backbone import DiffusionBackbone, as_numpy
from .inputs import check_captions, check_image
from .results import MatchResult

Values = Literal["logits", "probs"]
Tokens = Literal["all", "prompt"]
# "none": mean over heads; "attribution": eq. 5.7 as written; "scalar": one weight per head (module docstring)
HeadWeighting = Literal["none", "attribution", "scalar"]
HEAD_WEIGHTINGS: tuple[HeadWeighting, ...] = ("none", "attribution", "scalar")


@dataclass(frozen=True)
class Reading:
    """How one attention map becomes a number (eq. 5.4)."""

    # "logits": pre-softmax QK^T/sqrt(d), as the Discffusion code; "probs": softmax, as the thesis text reads
    values: Values = "logits"
    # lambda of eq. 5.4 (1 in the thesis and the code; large lambda -> mean of the row maxima)
    lam: float = 1.0
    # "all": every position up to the tokenizer's length (the code keeps padding); "prompt": BOS..EOS only
    tokens: Tokens = "all"

    def __post_init__(self) -> None:
        if self.values not in ("logits", "probs"):
            raise InvalidInputError(f"values must be 'logits' or 'probs', got {self.values!r}.")
        if self.tokens not in ("all", "prompt"):
            raise InvalidInputError(f"tokens must be 'all' or 'prompt', got {self.tokens!r}.")
        if not (np.isfinite(self.lam) and self.lam > 0):
            raise InvalidInputError(f"lambda must be a positive finite number, got {self.lam!r}.")


@dataclass(frozen=True)
class DiscffusionConfig:
    """Settings of the Discffusion score.

    Defaults follow the thesis' code (``docs/notes/discffusion.md``): pre-softmax logits, lambda 1, the
    denoising-error term with weight 1, all cross-attention layers. Two noise levels keep it cheap. On tiny
    pack v2, whose words were taught where things are at high noise, (0.5, 0.7) scored 0.99 text against
    0.88 for pack v1's choice (0.2, 0.4) in a sweep of every pair of levels 0.1-0.8 on 100 tuning groups
    (seed 3000, disjoint from the bench's; the note's "Pack v2" table).
    """

    # noise levels in (0, 1] (t = level * T); several are an ensemble (thesis table 5.3)
    noise_levels: tuple[float, ...] = (0.5, 0.7)
    # seed of the noise bank: one epsilon per level, shared by every caption (scores are deterministic)
    seed: int = 0
    reading: Reading = field(default_factory=Reading)
    # which cross-attention layers: "all", "last-per-stage" (the code's choice: the last block with
    # cross-attention in each of down/mid/up) or dotted name segments
    layers: LayerSelector = "all"
    # weight of the attention term f(A) and of the denoising contrast ||eps-eps_0|| - ||eps-eps_c||
    attention_weight: float = 1.0
    denoising_weight: float = 1.0
    # dynamic attention-head weighting (eq. 5.7): "none" (plain mean over heads), "attribution" (each head's
    # map replaced by A_h * df/dA_h before pooling, as written) or "scalar" (one weight per head)
    head_weighting: HeadWeighting = "none"
    # UNet rows per batch
    batch_size: int = 33

    def __post_init__(self) -> None:
        if self.attention_weight == 0 and self.denoising_weight == 0:
            raise InvalidInputError("attention_weight and denoising_weight are both 0: nothing to score.")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be positive, got {self.batch_size}.")
        if self.head_weighting not in HEAD_WEIGHTINGS:
            raise InvalidInputError(f"head_weighting must be one of {HEAD_WEIGHTINGS}, got {self.head_weighting!r}.")

    @property
    def needs_uncond(self) -> bool:
        return self.denoising_weight != 0


def select_layers(unet: torch.nn.Module, layers: LayerSelector) -> list[str]:
    """Cross-attention layer names chosen by ``layers`` (see :class:`DiscffusionConfig`)."""
    available = cross_attention_layers(unet)
    if layers == "all" or layers is None:
        return available
    if layers == "last-per-stage":
        chosen = []
        for stage in ("down_blocks", "mid_block", "up_blocks"):
            in_stage = [name for name in available if name.startswith(stage)]
            if in_stage:
                last_block = max(in_stage, key=lambda name: int(name.split(".")[1]) if stage != "mid_block" else 0)
                block = ".".join(last_block.split(".")[:2]) if stage != "mid_block" else "mid_block"
                chosen.extend(name for name in in_stage if name.startswith(block + "."))
        return chosen
    wanted = layer_predicate(layers)
    chosen = [name for name in available if wanted(name)]
    if not chosen:
        raise InvalidInputError(f"layers={layers!r} selects none of {available}.")
    return chosen


def attention_values(maps: torch.Tensor, reading: Reading, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The map ``A`` that eq. 5.4 pools: the logits, or their softmax over tokens (``reading.values``),
    ``[R, heads, h, w, m]``; tokens outside ``token_mask`` ``[R, m]`` (True = keep) are ``-inf``."""
    if token_mask is not None:
        maps = maps.masked_fill(~token_mask[:, None, None, None, :], float("-inf"))
    if reading.values == "probs":
        maps = maps.softmax(dim=-1)
        if token_mask is not None:
            maps = maps.masked_fill(~token_mask[:, None, None, None, :], float("-inf"))
    return maps


def pool_heads(maps: torch.Tensor, reading: Reading, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5.4 per head: ``1/n sum_i 1/lam log sum_j exp(lam A_ij)``, ``[R, heads, h, w, m] -> [R, heads]``.

    ``maps`` are logits; ``reading.values == "probs"`` pools their softmax.
    ``token_mask`` ``[R, m]`` (True = keep) restricts the tokens before the softmax and the sum.
    """
    values = attention_values(maps, reading, token_mask)
    return lse_pool(values.flatten(2, 3), reading.lam)  # [R, heads, h * w, m] -> [R, heads]


def head_attribution(maps: torch.Tensor, reading: Reading, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Thesis eq. 5.7, ``Attr_h(A) = A_h * sum_{k=1}^H df(A)/dA_h``, element-wise, ``[R, heads, h, w, m]``.

    ``A`` is the map the reading pools (:func:`attention_values`) and ``f(A)`` is eq. 5.4 averaged over the
    ``H`` heads, so ``sum_k df(A)/dA_h = H df(A)/dA_h = df(A_h)/dA_h``, which for LSE pooling is
    ``softmax_j(lam A_h)_ij / n`` (n pixels), computed in that closed form. The gradient is detached (the
    thesis: "the gradient weights are detached and utilized solely as scalar multipliers"), so when
    ``maps`` carry a graph (prompt learning) gradients flow through ``A_h`` only. Masked tokens stay ``-inf``.
    """
    values = attention_values(maps, reading, token_mask)
    pixels = values.shape[2] * values.shape[3]
    grad = (reading.lam * values.detach()).softmax(dim=-1) / pixels  # masked tokens (-inf) get 0
    keep = torch.isfinite(values.detach())
    finite = torch.where(keep, values, torch.zeros_like(values))
    return torch.where(keep, finite * grad, torch.full_like(values, float("-inf")))


def pool_attributions(maps: torch.Tensor, reading: Reading, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5.4 on each head's attribution map (eq. 5.7), ``[R, heads, h, w, m] -> [R, heads]``."""
    return lse_pool(head_attribution(maps, reading, token_mask).flatten(2, 3), reading.lam)


def head_weights(maps: torch.Tensor, reading: Reading, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The ``"scalar"`` reading of eq. 5.7: one weight per head, ``[R, heads, h, w, m] -> [R, heads]``, rows
    sum to 1. A head's weight is its share of the total attribution ``|sum_ij Attr_h(A)|``
    (:func:`head_attribution`); heads with no attribution at all get equal weights.
    """
    attribution = head_attribution(maps, reading, token_mask).detach()
    attribution = torch.where(torch.isfinite(attribution), attribution, torch.zeros_like(attribution))
    totals = attribution.flatten(2).sum(dim=-1).abs()  # [R, heads]
    total = totals.sum(dim=1, keepdim=True)
    uniform = torch.full_like(totals, 1.0 / totals.shape[1])
    return torch.where(total > 0, totals / total.clamp_min(1e-12), uniform)


def pooled_per_head(maps: torch.Tensor, reading: Reading, weighting: HeadWeighting,
                    token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head scores ``[R, heads]`` whose mean over heads is the layer's attention term under ``weighting``:
    ``f(A_h)`` ("none"), ``f(Attr_h(A))`` ("attribution", eq. 5.7 as written) or ``H w_h f(A_h)`` ("scalar")."""
    if weighting == "attribution":
        return pool_attributions(maps, reading, token_mask)
    pooled = pool_heads(maps, reading, token_mask)
    if weighting == "scalar":
        return pooled * head_weights(maps, reading, token_mask) * pooled.shape[1]
    return pooled


@dataclass
class LevelRecord:
    """What one noise level gave for every row (row 0 is the empty caption when recorded)."""

    timestep: int
    # head weighting -> reading -> layer -> per-head scores [R, heads] (:func:`pooled_per_head`)
    pooled: dict[HeadWeighting, dict[Reading, dict[str, torch.Tensor]]]
    # ||eps - eps_theta(z_t, c)||_2 per row [R]
    errors: torch.Tensor
    # layer -> head-averaged probabilities [R, h, w, m] (heatmaps), or empty
    maps: dict[str, torch.Tensor]


@dataclass
class DiscffusionFeatures:
    """Everything one forward pass per noise level gave; :meth:`DiscffusionScorer.combine` reads it."""

    captions: list[str]
    layers: list[str]
    levels: list[LevelRecord]
    has_uncond: bool
    image_size: tuple[int, int]  # (height, width) of the input image
    unet_evaluations: int
    seconds: float


class DiscffusionScorer:
    """Discffusion matching scores, per-word heatmaps and (with offsets) prompt-learned scores."""

    def __init__(
        self,
        backbone: DiffusionBackbone,
        config: DiscffusionConfig | None = None,
        offsets: AttentionOffsets | None = None,
    ) -> None:
        self.backbone = backbone
        self.config = config or DiscffusionConfig()
        self.offsets = offsets
        self.layers = select_layers(backbone.unet, self.config.layers)

    # -- forward --------------------------------------------------------------------------

    def _token_mask(self, captions: Sequence[str], uncond: bool) -> torch.Tensor:
        """True up to and including each row's EOS ``[R, L]``."""
        texts = ([""] if uncond else []) + list(captions)
        ids = self.backbone.token_ids(texts)
        eos = self.backbone.tokenizer.eos_token_id
        first_eos = (ids == eos).int().argmax(dim=1)  # padding is EOS too: the first one ends the prompt
        positions = torch.arange(ids.shape[1], device=ids.device)
        return positions[None, :] <= first_eos[:, None]

    def run_level(
        self,
        latent: torch.Tensor,
        text: torch.Tensor,
        timestep: int,
        noise: torch.Tensor,
        readings: Sequence[Reading],
        token_mask: torch.Tensor,
        *,
        head_weightings: Sequence[HeadWeighting] | None = None,
        differentiable: bool = False,
        keep_maps: bool = False,
    ) -> LevelRecord:
        """One noise level: the UNet on ``z_t`` for every row of ``text``, pooled as ``readings`` and
        ``head_weightings`` (default: the config's) ask."""
        rows = text.shape[0]
        weightings = list(dict.fromkeys(head_weightings or [self.config.head_weighting]))
        z_t = self.backbone.add_noise(latent, noise, timestep).expand(rows, -1, -1, -1)
        pooled: dict[HeadWeighting, dict[Reading, dict[str, list]]] = {
            w: {r: {n: [] for n in self.layers} for r in readings} for w in weightings}
        maps: dict[str, list] = {n: [] for n in self.layers}
        predictions = []
        step = self.config.batch_size
        for start in range(0, rows, step):
            chunk = slice(start, start + step)
            with CrossAttentionControl(
                self.backbone.unet, layers=self.layers, values="logits", keep_steps="last",
                differentiable=differentiable, offsets=self.offsets,
            ) as control:
                predictions.append(self.backbone.predict_noise(z_t[chunk], timestep, text[chunk]))
            for name in self.layers:
                logits = control.store.maps_for(name)  # [r, heads, h, w, m]
                mask = token_mask[chunk]
                for reading in readings:
                    token_subset = mask if reading.tokens == "prompt" else None
                    for weighting in weightings:
                        pooled[weighting][reading][name].append(
                            pooled_per_head(logits, reading, weighting, token_subset))
                if keep_maps:
                    maps[name].append(logits.detach().softmax(dim=-1).mean(dim=1).float().cpu())
        prediction = torch.cat(predictions)  # [R, C, h, w]
        errors = (prediction.float() - noise.float()).flatten(1).norm(dim=1)  # [R]
        return LevelRecord(
            timestep=timestep,
            pooled={w: {r: {n: torch.cat(v) for n, v in d.items()} for r, d in by_reading.items()}
                    for w, by_reading in pooled.items()},
            errors=errors,
            maps={n: torch.cat(v) for n, v in maps.items() if v},
        )

    def features(
        self,
        image,
        captions: str | Sequence[str],
        *,
        readings: Sequence[Reading] | None = None,
        head_weightings: Sequence[HeadWeighting] | None = None,
        keep_maps: bool = False,
        uncond: bool | None = None,
    ) -> DiscffusionFeatures:
        """Run the UNet once per noise level on all captions (plus the empty one when needed); every reading
        and head weighting asked for (default: the config's) is pooled from the same passes."""
        started = time.perf_counter()
        array = check_image(image)
        captions = check_captions(captions, self.backbone.tokenizer)
        readings = list(readings or [self.config.reading])
        uncond = self.config.needs_uncond if uncond is None else uncond
        evaluations = self.backbone.unet_evaluations
        latent = self.backbone.encode_image(array)
        text = self.backbone.encode_text(([""] if uncond else []) + captions)
        mask = self._token_mask(captions, uncond)
        levels = []
        with torch.no_grad():
            for index, timestep in enumerate(self.backbone.timesteps_for(self.config.noise_levels)):
                noise = self.backbone.noise(latent.shape, self.config.seed, index)
                levels.append(self.run_level(latent, text, timestep, noise, readings, mask,
                                             head_weightings=head_weightings, keep_maps=keep_maps))
        return DiscffusionFeatures(
            captions=captions, layers=list(self.layers), levels=levels, has_uncond=uncond,
            image_size=array.shape[:2], unet_evaluations=self.backbone.unet_evaluations - evaluations,
            seconds=time.perf_counter() - started,
        )

    # -- scores -----------------------------------------------------------------------------

    def attention_term(self, level: LevelRecord, reading: Reading, head_weighting: HeadWeighting) -> torch.Tensor:
        """f(A) of every row at one level (per head as ``head_weighting`` reads eq. 5.7, averaged over heads),
        averaged over the selected layers ``[R]``."""
        if reading not in level.pooled.get(head_weighting, {}):
            raise InvalidInputError(f"These features were computed without head weighting {head_weighting!r} "
                                    f"for this reading; computed: {sorted(level.pooled)}.")
        pooled = level.pooled[head_weighting][reading]
        return torch.stack([pooled[name].mean(dim=1) for name in self.layers]).mean(dim=0)

    def combine(self, features: DiscffusionFeatures, config: DiscffusionConfig | None = None) -> MatchResult:
        """Scores from :meth:`features` under ``config`` (default: the scorer's): average over levels of
        ``attention_weight * f(A) + denoising_weight * (||eps - eps_0|| - ||eps - eps_c||)``."""
        config = config or self.config
        if config.denoising_weight and not features.has_uncond:
            raise InvalidInputError("The denoising term needs the empty caption's prediction; it was not run.")
        first = 1 if features.has_uncond else 0
        attention, denoising = [], []
        for level in features.levels:
            attention.append(self.attention_term(level, config.reading, config.head_weighting)[first:])
            if features.has_uncond:
                denoising.append(level.errors[0] - level.errors[first:])
        terms = {"attention": as_numpy(torch.stack(attention).mean(dim=0))}
        if denoising:
            terms["denoising"] = as_numpy(torch.stack(denoising).mean(dim=0))
        scores = config.attention_weight * terms["attention"]
        if config.denoising_weight:
            scores = scores + config.denoising_weight * terms["denoising"]
        return MatchResult(
            captions=list(features.captions), scores=np.asarray(scores, dtype=np.float64), method="discffusion",
            unet_evaluations=features.unet_evaluations, seconds=features.seconds, terms=terms,
        )

    def score(self, image, captions: str | Sequence[str]) -> MatchResult:
        """Discffusion scores of ``image`` against each caption (higher = better)."""
        return self.combine(self.features(image, captions))

    # -- heatmaps ----------------------------------------------------------------------------

    def heatmaps(
        self,
        features: DiscffusionFeatures,
        caption_index: int,
        *,
        layer: str | None = None,
        level: int | None = None,
        size: int = 128,
    ) -> dict[str, np.ndarray]:
        """Per-word attention heatmaps of one caption, each ``[h, w]`` in [0, 1] with the image's aspect.

        ``layer`` (a name from :attr:`layers`) and ``level`` (an index into the
        noise levels) pick one map; ``None`` averages. Needs ``keep_maps=True``.
        """
        if not features.levels[0].maps:
            raise InvalidInputError("Heatmaps need features computed with keep_maps=True.")
        if not 0 <= caption_index < len(features.captions):
            raise InvalidInputError(f"caption_index {caption_index} is out of range for {len(features.captions)}.")
        if layer is not None and layer not in features.layers:
            raise InvalidInputError(f"Layer {layer!r} was not recorded; recorded: {features.layers}.")
        if level is not None and not 0 <= level < len(features.levels):
            raise InvalidInputError(f"Noise level index {level} is out of range for {len(features.levels)}.")
        caption = features.captions[caption_index]
        row = caption_index + (1 if features.has_uncond else 0)
        height, width = features.image_size
        out_size = heatmap_size(height, width, size)
        levels = features.levels if level is None else [features.levels[level]]
        layers = features.layers if layer is None else [layer]
        result = {}
        for word in dict.fromkeys(re.findall(r"[A-Za-z0-9]+", caption)):
            try:
                ids = token_indices(self.backbone.tokenizer, caption, word)
            except InvalidInputError:
                continue  # beyond the tokenizer's length
            heat = average_resized((record.maps[name][row][..., ids].sum(dim=-1) for record in levels
                                    for name in layers), out_size)
            result[word] = as_numpy(heat.clamp(0, 1))
        return result

