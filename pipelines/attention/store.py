"""Storage for recorded cross-attention probabilities, one entry per UNet call.

A UNet call is one *step*. Each step keeps, per cross-attention layer, the
probabilities softmax(QK^T / sqrt(d)) (or, with ``values="logits"``, the
pre-softmax scores QK^T / sqrt(d)) reshaped to the layer's spatial grid:

- image UNets (sample ``[B, C, H, W]``): ``[B, heads, h, w, tokens]``
- video UNets (sample ``[B, C, F, H, W]``): ``[B, F, heads, h, w, tokens]``

where ``h, w`` is the latent ``H, W`` after the layer's downsamplings. The batch
axis is the UNet's full batch, so a classifier-free-guidance batch
(uncond + cond) is kept whole and sliced by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import InvalidInputError, WorldStudioError

LayerSelector = Callable[[str], bool] | str | Sequence[str] | None
"""Which layers: ``None`` (all), a predicate on the layer name, or dotted name
segments such as ``"mid_block"`` or ``["up_blocks.1", "down_blocks.0"]``."""

StepSelector = Callable[[int], bool] | Collection[int] | None
"""Which UNet calls (0-based, counted by the control): ``None`` (all), a
predicate, or a collection of call indices such as ``range(5)``."""


def layer_predicate(layers: LayerSelector) -> Callable[[str], bool]:
    """Turn a :data:`LayerSelector` into a predicate on layer names.

    A string matches whole dotted segments, so ``"up_blocks.1"`` selects
    ``up_blocks.1.attentions.0...`` but not ``up_blocks.10...``.
    """
    if layers is None:
        return lambda name: True
    if callable(layers):
        return layers
    parts = [layers] if isinstance(layers, str) else list(layers)
    if not parts or not all(isinstance(p, str) and p.strip(".") for p in parts):
        raise InvalidInputError(f"layers must be a predicate, a name segment or a list of them, got {layers!r}.")
    wanted = [f".{p.strip('.')}." for p in parts]
    return lambda name: any(w in f".{name}." for w in wanted)


def step_predicate(steps: StepSelector) -> Callable[[int], bool]:
    """Turn a :data:`StepSelector` into a predicate on UNet call indices."""
    if steps is None:
        return lambda step: True
    if callable(steps):
        return steps
    chosen = frozenset(steps)
    if not all(isinstance(s, int) and s >= 0 for s in chosen):
        raise InvalidInputError(f"steps must be non-negative UNet call indices, got {steps!r}.")
    return chosen.__contains__


def latent_grid(num_pixels: int, height: int, width: int) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of a UNet feature map with ``num_pixels`` positions.

    The latent is ``height x width``; each UNet downsample is a stride-2
    convolution (kernel 3, padding 1) that rounds up, so after ``k`` of them
    the grid is ``ceil(H / 2^k) x ceil(W / 2^k)``. Average-pool downsamplers
    round down, which is tried second.
    """
    level = 0
    while True:
        scale = 2**level
        up = (-(-height // scale), -(-width // scale))
        down = (height // scale, width // scale)
        for h, w in (up, down):
            if h * w == num_pixels:
                return h, w
        if up[0] * up[1] < num_pixels or up == (1, 1):
            raise WorldStudioError(
                f"A cross-attention layer saw {num_pixels} positions, which is no power-of-two "
                f"downsampling of the {height}x{width} latent."
            )
        level += 1


@dataclass
class StepMaps:
    """Cross-attention maps recorded during one UNet call."""

    # index of the UNet call, counted by the control (0-based)
    step: int
    # shape of the UNet's sample: [B, C, H, W] or [B, C, F, H, W]
    latent_shape: tuple[int, ...]
    # layer name -> [B, heads, h, w, tokens] or [B, F, heads, h, w, tokens]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def is_video(self) -> bool:
        return len(self.latent_shape) == 5


class AttentionStore:
    """Cross-attention probabilities per layer, head, token and step.

    ``differentiable=True`` keeps the maps in the autograd graph so an energy on
    them can be differentiated with respect to the latent (thesis eq. 10.7).
    Otherwise maps are detached, and ``to_cpu=True`` also moves them to the CPU
    as float32. ``keep_steps="last"`` drops the previous step's maps (and the
    graph they hold) when a new step is recorded, so a guided sampling loop
    does not grow memory; ``reset()`` drops everything. ``values="logits"``
    records the pre-softmax scores ``QK^T / sqrt(d)`` in float32 instead of
    the probabilities (their softmax over the last axis gives the
    probabilities back); the Discffusion score pools these (thesis eq. 5.4).
    """

    def __init__(
        self,
        *,
        differentiable: bool = False,
        to_cpu: bool = False,
        steps: StepSelector = None,
        keep_steps: Literal["all", "last"] = "all",
        values: Literal["probs", "logits"] = "probs",
    ) -> None:
        if keep_steps not in ("all", "last"):
            raise InvalidInputError(f"keep_steps must be 'all' or 'last', got {keep_steps!r}.")
        if values not in ("probs", "logits"):
            raise InvalidInputError(f"values must be 'probs' or 'logits', got {values!r}.")
        self.values = values
        self.differentiable = differentiable
        self.to_cpu = to_cpu
        self.keep_steps = keep_steps
        self._wants_step = step_predicate(steps)
        self._records: list[StepMaps] = []
        self._current: StepMaps | None = None

    # -- filled by CrossAttentionControl -------------------------------------------------

    def begin_step(self, step: int, latent_shape: tuple[int, ...]) -> None:
        """Start UNet call ``step`` on a sample of ``latent_shape`` (or skip it if unselected)."""
        if len(latent_shape) not in (4, 5):
            raise InvalidInputError(
                f"The UNet sample must be [B, C, H, W] or [B, C, F, H, W], got shape {list(latent_shape)}."
            )
        if not self._wants_step(step):
            self._current = None
            return
        if self.keep_steps == "last":
            self._records.clear()
        self._current = StepMaps(step=step, latent_shape=tuple(latent_shape))
        self._records.append(self._current)

    @property
    def recording(self) -> bool:
        """Whether the current UNet call is being recorded."""
        return self._current is not None

    def add(self, layer: str, probs: torch.Tensor, heads: int) -> None:
        """Store one layer's probabilities for the current step.

        ``probs`` is ``[B*F*heads, n, m]`` as returned by diffusers'
        ``Attention.get_attention_scores`` (batch-major, then frame, then head).
        """
        record = self._current
        if record is None:
            return
        height, width = record.latent_shape[-2:]
        h, w = latent_grid(probs.shape[1], height, width)
        batch = record.latent_shape[0]
        lead = (batch, record.latent_shape[2], heads) if record.is_video else (batch, heads)
        if probs.shape[0] != torch.Size(lead).numel():
            raise WorldStudioError(
                f"Layer {layer} gave attention for {probs.shape[0]} batch*heads rows; the sample "
                f"{list(record.latent_shape)} with {heads} heads needs {torch.Size(lead).numel()}."
            )
        maps = probs.reshape(*lead, h, w, probs.shape[-1])  # [B, (F,) heads, h, w, m]
        if not self.differentiable:
            maps = maps.detach()
            if self.to_cpu:
                maps = maps.to("cpu", torch.float32)
        record.maps[layer] = maps

    # -- read by the methods -------------------------------------------------------------

    def reset(self) -> None:
        """Drop every recorded step (and, in differentiable mode, the graphs they hold)."""
        self._records.clear()
        self._current = None

    @property
    def records(self) -> list[StepMaps]:
        """Recorded steps, oldest first."""
        return list(self._records)

    @property
    def steps(self) -> list[int]:
        """UNet call index of each recorded step, oldest first."""
        return [r.step for r in self._records]

    @property
    def num_steps(self) -> int:
        return len(self._records)

    @property
    def layer_names(self) -> list[str]:
        """Names of the recorded layers, in the order the UNet ran them."""
        names: dict[str, None] = {}
        for record in self._records:
            names.update(dict.fromkeys(record.maps))
        return list(names)

    def step_maps(self, step: int = -1) -> StepMaps:
        """The ``step``-th recorded step (list indexing: ``-1`` is the latest)."""
        if not self._records:
            raise InvalidInputError("Nothing was recorded: run the UNet inside CrossAttentionControl first.")
        try:
            return self._records[step]
        except IndexError:
            raise InvalidInputError(f"step {step} is out of range for {len(self._records)} recorded steps.") from None

    def maps_for(self, layer: str, step: int = -1, batch: slice | None = None) -> torch.Tensor:
        """One layer's maps at the ``step``-th recorded step.

        Returns ``[B, heads, h, w, tokens]`` for an image UNet or
        ``[B, F, heads, h, w, tokens]`` for a video UNet; ``batch`` slices the
        batch axis (e.g. ``slice(B // 2, None)`` for the conditional half of a
        classifier-free-guidance batch).
        """
        record = self.step_maps(step)
        if layer not in record.maps:
            raise InvalidInputError(f"Layer {layer!r} was not recorded; recorded: {sorted(record.maps)}.")
        maps = record.maps[layer]
        return maps if batch is None else maps[batch]
