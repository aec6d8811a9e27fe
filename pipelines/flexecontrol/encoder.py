"""The copied encoder: a ControlNet copy of the base UNet's encoder and middle block, with FlexEControl's adapter.

``ControlNetModel.from_unet`` (diffusers) is the copy (thesis 9.2: "the copied
Stable Diffusion encoder ... which accepts structural conditional input").
Four ways to train it, in the same code (thesis 9.3.2, baselines):

- ``"flexecontrol"``: the copy frozen; shared Kronecker x low-rank updates
  (eq. 9.2, :class:`~.adapter.KroneckerLowRankLayer`) on its cross-attention
  projections (or, with ``targets="all"``, on every linear/conv weight that
  splits into ``n x n`` blocks);
- ``"full"``: every weight of the copy trained (the ControlNet / Uni-ControlNet analogue);
- ``"lora"``: PEFT LoRA (rank ``rank``) on the same projections;
- ``"phm"``: Kronecker-only updates with factors shared across layers (:class:`~.adapter.PHMAdaptedLayer`).

In every method the condition embedding (``controlnet_cond_embedding``) and
the zero convolutions (``controlnet_down_blocks``, ``controlnet_mid_block``)
are trained too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import InvalidInputError, ModelNotFoundError
from ..shapesworld.conditions import CONDITION_TYPES
from .adapter import KroneckerLowRankLayer, PHMAdaptedLayer, fits, replace_layers, set_condition_type

METHODS: tuple[str, ...] = ("flexecontrol", "full", "lora", "phm")
# Trained in every method: the condition embedding and the zero convolutions.
ALWAYS_TRAINED = ("controlnet_cond_embedding", "controlnet_down_blocks", "controlnet_mid_block")
CROSS_ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
# diffusers' ControlNet condition embedding for an 8x autoencoder; one entry per level, 2x down between levels.
CONDITION_EMBEDDING_CHANNELS = (16, 32, 96, 256)
CONFIG_NAME = "flexecontrol_config.json"
WEIGHTS_NAME = "encoder_trainable.safetensors"


@dataclass
class EncoderConfig:
    """How the copied encoder is adapted and trained."""

    # One of METHODS.
    method: str = "flexecontrol"
    # n of eq. 9.2: Kronecker terms, and the side of each H_i (also PHM's n).
    kron_terms: int = 4
    # r of eq. 9.2 (and the LoRA rank; the thesis uses 4 for LoRA).
    rank: int = 4
    # Condition types with their own fast weights u, v.
    condition_types: tuple[str, ...] = CONDITION_TYPES
    # "cross-attention": attn2 projections only (the thesis' choice); "all": every linear/conv weight that fits.
    targets: Literal["cross-attention", "all"] = "cross-attention"
    # Where the frozen weights came from (recorded for people; the weights are not stored).
    base: str = ""
    # Channels of the condition embedding (set from the autoencoder's downsampling).
    embedding_channels: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"Unknown method {self.method!r}; expected one of {METHODS}.")
        if self.targets not in ("cross-attention", "all"):
            raise InvalidInputError(f"targets must be 'cross-attention' or 'all', got {self.targets!r}.")
        if self.kron_terms < 1 or self.rank < 1:
            raise InvalidInputError(f"kron_terms and rank must be >= 1, got {self.kron_terms} and {self.rank}.")
        unknown = [t for t in self.condition_types if t not in CONDITION_TYPES]
        if unknown:
            raise InvalidInputError(f"Unknown condition types {unknown}; expected some of {CONDITION_TYPES}.")
        self.condition_types = tuple(self.condition_types)
        self.embedding_channels = tuple(self.embedding_channels)


def embedding_channels_for(vae_scale_factor: int) -> tuple[int, ...]:
    """Condition-embedding channels whose downsampling matches the autoencoder's (4x -> 3 levels, 8x -> 4)."""
    levels = int(round(math.log2(vae_scale_factor))) + 1
    if 2 ** (levels - 1) != vae_scale_factor or levels > len(CONDITION_EMBEDDING_CHANNELS):
        raise InvalidInputError(f"The autoencoder's scale factor must be 2, 4 or 8, got {vae_scale_factor}.")
    return CONDITION_EMBEDDING_CHANNELS[:levels]


def adapted_layer_names(controlnet: nn.Module, targets: str, n: int) -> list[str]:
    """Names of the frozen layers that get an update: cross-attention projections, or every fitting linear/conv."""
    names = []
    for name, module in controlnet.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or name.startswith(ALWAYS_TRAINED):
            continue
        if targets == "cross-attention" and not any(name.endswith(f"attn2.{p}") for p in CROSS_ATTENTION_PROJECTIONS):
            continue
        if fits(module, n):
            names.append(name)
    return names


class CopiedEncoder(nn.Module):
    """The copied encoder with its adapter; ``forward`` gives the residuals for the frozen UNet.

    ``forward`` returns, for each condition, ``(down_residuals, mid_residual)``
    as ``ControlNetModel`` does.
    """

    def __init__(self, controlnet: ControlNetModel, config: EncoderConfig) -> None:
        super().__init__()
        self.controlnet = controlnet
        self.config = config
        self.adapted_layers = self._adapt()
        # What :meth:`condition_types` made active (None outside it); a nested block restores the outer one.
        self._active_types: str | list[str] | None = None

    def _adapt(self) -> list[str]:
        cfg, net = self.config, self.controlnet
        if cfg.method == "full":
            net.requires_grad_(True)
            return []
        net.requires_grad_(False)
        names = adapted_layer_names(net, cfg.targets, cfg.kron_terms)
        if not names:
            raise InvalidInputError(f"No layer of the copied encoder fits n={cfg.kron_terms} for targets={cfg.targets!r}.")
        if cfg.method == "flexecontrol":
            replace_layers(net, names, lambda _, m: KroneckerLowRankLayer(m, cfg.kron_terms, cfg.rank, cfg.condition_types))
        elif cfg.method == "phm":
            # A_i shared by every layer (PHM), owned here so it is registered once.
            self.phm_shared = nn.Parameter(torch.randn(cfg.kron_terms, cfg.kron_terms, cfg.kron_terms) / cfg.kron_terms**0.5)
            replace_layers(net, names, lambda _, m: PHMAdaptedLayer(m, self.phm_shared))
        else:  # lora
            from peft import LoraConfig, inject_adapter_in_model

            inject_adapter_in_model(LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, target_modules=names), net)
            for name, parameter in net.named_parameters():
                parameter.requires_grad_("lora_" in name)
        for prefix in ALWAYS_TRAINED:
            getattr(net, prefix).requires_grad_(True)
        return names

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self, always_trained_lr: float) -> list[dict]:
        """Optimiser groups: the condition embedding and zero convolutions (``ALWAYS_TRAINED``) at
        ``always_trained_lr``, the rest at the optimiser's default rate."""
        first = {id(p) for prefix in ALWAYS_TRAINED for p in getattr(self.controlnet, prefix).parameters()}
        trainable = self.trainable_parameters()
        groups = [{"params": [p for p in trainable if id(p) in first], "lr": always_trained_lr},
                  {"params": [p for p in trainable if id(p) not in first]}]
        return [group for group in groups if group["params"]]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    @contextmanager
    def condition_types(self, condition_types: Sequence[str]) -> Iterator[None]:
        """Run with each type's fast weights active on its chunk of the batch (other methods share all weights)."""
        unknown = [t for t in condition_types if t not in self.config.condition_types]
        if unknown or not condition_types:
            raise InvalidInputError(
                f"Unknown condition types {unknown or condition_types!r}; expected some of {list(self.config.condition_types)}."
            )
        previous = self._active_types
        self._active_types = condition_types[0] if len(condition_types) == 1 else list(condition_types)
        set_condition_type(self, self._active_types)
        try:
            yield
        finally:
            self._active_types = previous
            set_condition_type(self, previous)

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """The condition embedding of maps ``[B, 3, H, W]``: ``[B, C, h, w]`` at the latent size."""
        return self.controlnet.controlnet_cond_embedding(maps)

    @contextmanager
    def embedded_inputs(self) -> Iterator[None]:
        """Within this block ``forward`` takes maps already passed through :meth:`embed`.

        A sampling loop embeds its fixed maps once instead of at every step
        (about a fifth of the copy's work at 64x64). The embedding module is
        put back on exit, also after an exception.
        """
        embedding = self.controlnet.controlnet_cond_embedding
        self.controlnet.controlnet_cond_embedding = nn.Identity()
        try:
            yield
        finally:
            self.controlnet.controlnet_cond_embedding = embedding

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
        conditions: Sequence[tuple[str, torch.Tensor]],
    ) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        """Residuals ``(down, mid)`` of each ``(type, maps [B, 3, H, W])`` condition, in one batched pass.

        The K conditions are stacked along the batch (``K * B`` rows); each
        type's fast weights act on its own chunk.
        """
        k = len(conditions)
        timestep = torch.as_tensor(timestep, device=sample.device)
        repeated_t = timestep.repeat(k) if timestep.ndim else timestep
        with self.condition_types([kind for kind, _ in conditions]):
            down, mid = self.controlnet(
                sample.repeat(k, 1, 1, 1), repeated_t, encoder_hidden_states=encoder_hidden_states.repeat(k, 1, 1),
                controlnet_cond=torch.cat([maps for _, maps in conditions]), return_dict=False,
            )
        down_chunks = [d.chunk(k) for d in down]
        return [([d[j] for d in down_chunks], m) for j, m in enumerate(mid.chunk(k))]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {id(p) for p in self.trainable_parameters()}
        return {k: v.detach().contiguous() for k, v in self.state_dict(keep_vars=True).items() if id(v) in names}

    def save(self, folder: str | Path) -> None:
        """Write the config and the trained tensors only (the frozen copy is rebuilt from the base UNet)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_file({k: v.float() for k, v in self.trainable_state_dict().items()}, str(folder / WEIGHTS_NAME))


def build_copied_encoder(
    unet: UNet2DConditionModel, vae_scale_factor: int, config: EncoderConfig | None = None, *, copy_weights: bool = True
) -> CopiedEncoder:
    """``ControlNetModel.from_unet(unet)`` with a condition embedding matching the autoencoder, then adapted.

    ``copy_weights=False`` skips copying the UNet's weights (for counting
    parameters of a model built on the ``meta`` device).
    """
    config = config or EncoderConfig()
    config.embedding_channels = embedding_channels_for(vae_scale_factor)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=config.embedding_channels, load_weights_from_unet=copy_weights
    )
    return CopiedEncoder(controlnet, config)


def load_copied_encoder(folder: str | Path, unet: UNet2DConditionModel, vae_scale_factor: int) -> CopiedEncoder:
    """Rebuild the copy from ``unet`` and load the trained tensors saved by :meth:`CopiedEncoder.save`."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ModelNotFoundError(
            f"No FlexEControl weights in {folder} (need {CONFIG_NAME} and {WEIGHTS_NAME}); "
            "train them with `make tiny-flexecontrol`."
        )
    saved = json.loads((folder / CONFIG_NAME).read_text())
    config = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    encoder = build_copied_encoder(unet, vae_scale_factor, config)
    state = load_file(str(folder / WEIGHTS_NAME))
    expected = set(encoder.trainable_state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise ModelNotFoundError(f"{folder / WEIGHTS_NAME} does not fit this encoder (missing {missing}, extra {extra}).")
    encoder.load_state_dict(state, strict=False)
    return encoder.eval()


def trainable_counts(unet: UNet2DConditionModel, vae_scale_factor: int, methods: Sequence[str] = METHODS, **kwargs) -> dict[str, int]:
    """Trainable parameters of each method's copied encoder over ``unet`` (weights need not be real)."""
    return {
        m: build_copied_encoder(unet, vae_scale_factor, EncoderConfig(method=m, **kwargs), copy_weights=False).num_trainable()
        for m in methods
    }
