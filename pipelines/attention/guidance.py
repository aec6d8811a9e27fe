"""Box guidance on cross-attention (thesis 10.3.2, eq. 10.5-10.7): Mojito's Directional Motion Control, also
used on one frame to lay out objects of a text-to-image model (:mod:`.layout`, the Match tab, the About tab).

For each object phrase n with per-frame boxes B_i, and each chosen
cross-attention layer gamma, the phrase's attention map A_i (mean over its
tokens and the heads) at every frame i gives the energy

    E_i = (1 - sum_{u in B_i} A_{i,u,n} / sum_u A_{i,u,n})^2            (eq. 10.5)

and the temporal smoothness of the maps

    T_s = E_i ||A_i - A_{i-1}||^2                                        (eq. 10.6)

In the first K denoising steps the latent moves down the gradient of
sum_i sum_gamma (E_i + lambda T_s):

    z <- z - sigma_t^2 eta grad_z E,   sigma_t^2 = (1 - abar_t) / abar_t   (eq. 10.7)

:func:`sigma_squared` is that factor, read from the scheduler. It grows
without bound at high noise (about 200 at t = 999 of SD's schedule), which the
scratch experiment of the issue saw blow up; ``gradient="normalized"`` (the
default) therefore divides the gradient by its RMS and uses the bounded form
sigma_t^2 / (1 + sigma_t^2) = 1 - abar_t, so eta is the RMS step of the latent
at full noise; ``gradient="raw"`` is eq. 10.7 as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError, WorldStudioError
from .control import CrossAttentionControl

# Cross-attention layers guided by default: "the mid-block and the initial layers of the upsampling branch" (10.4.3).
DEFAULT_LAYERS: tuple[str, ...] = ("mid_block", "up_blocks.1")
GRADIENTS: tuple[str, ...] = ("normalized", "raw")


class GuidanceDivergedError(WorldStudioError):
    """Guidance drove the latent to NaN or infinity (the guidance strength is too large)."""


@dataclass(frozen=True)
class GuidanceConfig:
    """Settings of Directional Motion Control."""

    # eta: guidance strength (eq. 10.7). 0 turns guidance off.
    strength: float = 0.1
    # K: guided denoising steps from the start (the thesis' default is 10).
    steps: int = 10
    # lambda: weight of the temporal smoothness term (eq. 10.6).
    smoothness: float = 1.0
    # Cross-attention layers (name segments, see pipelines.attention.LayerSelector).
    layers: tuple[str, ...] = DEFAULT_LAYERS
    # "normalized" (RMS-normalised gradient, bounded sigma) or "raw" (eq. 10.7 as written).
    gradient: Literal["normalized", "raw"] = "normalized"
    # Gradient steps per guided denoising step (several small steps instead of one big one).
    inner_steps: int = 1

    def __post_init__(self) -> None:
        if not np.isfinite(self.strength) or self.strength < 0:
            raise InvalidInputError(f"Guidance strength must be a finite number >= 0, got {self.strength!r}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise InvalidInputError(f"Guidance steps must be an integer >= 0, got {self.steps!r}.")
        if not np.isfinite(self.smoothness) or self.smoothness < 0:
            raise InvalidInputError(f"The smoothness weight lambda must be >= 0, got {self.smoothness!r}.")
        if self.gradient not in GRADIENTS:
            raise InvalidInputError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}.")
        if isinstance(self.inner_steps, bool) or not isinstance(self.inner_steps, int) or not 1 <= self.inner_steps <= 10:
            raise InvalidInputError(f"inner_steps must be an integer in 1..10, got {self.inner_steps!r}.")
        if not self.layers:
            raise InvalidInputError("Guidance needs at least one cross-attention layer.")

    @property
    def active(self) -> bool:
        return self.strength > 0 and self.steps > 0


def box_masks(boxes, height: int, width: int) -> torch.Tensor:
    """Share of each cell of an ``height`` x ``width`` grid that each box covers: float ``[T, height, width]``.

    ``boxes`` ``[T, 4]`` are fractions of the frame. A cell fully inside a box
    is 1, outside 0, a cut cell its covered area, so a box need not align with
    the (coarse) attention grid.
    """
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    edges_x = torch.arange(width + 1, dtype=torch.float32) / width
    edges_y = torch.arange(height + 1, dtype=torch.float32) / height

    def cover(lo, hi, edges, n):  # [T, n]
        left = torch.maximum(lo[:, None], edges[None, :-1])
        right = torch.minimum(hi[:, None], edges[None, 1:])
        return (right - left).clamp(min=0) * n

    cx = cover(boxes[:, 0], boxes[:, 2], edges_x, width)
    cy = cover(boxes[:, 1], boxes[:, 3], edges_y, height)
    return cy[:, :, None] * cx[:, None, :]


def box_energy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Eq. 10.5 per frame: ``(1 - sum_{u in B_i} A_i,u / sum_u A_i,u)^2``; maps and masks ``[T, h, w]`` -> ``[T]``."""
    inside = (maps * masks.to(maps.dtype)).flatten(1).sum(1)
    total = maps.flatten(1).sum(1).clamp(min=1e-12)
    return (1.0 - inside / total) ** 2


def temporal_smoothness(maps: torch.Tensor) -> torch.Tensor:
    """Eq. 10.6: mean over consecutive frames of ``||A_i - A_{i-1}||^2``; maps ``[T, h, w]`` -> scalar."""
    if maps.shape[0] < 2:
        return maps.new_zeros(())
    return (maps[1:] - maps[:-1]).flatten(1).square().sum(1).mean()


def sigma_squared(scheduler, timestep) -> float:
    """sigma_t^2 = (1 - abar_t) / abar_t of eq. 10.7, from ``scheduler.alphas_cumprod``."""
    alpha_bar = float(scheduler.alphas_cumprod[int(timestep)])
    return (1.0 - alpha_bar) / alpha_bar


def phrase_maps(layer_maps: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """A video layer's maps ``[F, heads, h, w, tokens]`` -> the phrase's map per frame ``[F, h, w]``."""
    return layer_maps[..., list(tokens)].mean(dim=-1).mean(dim=1)


@dataclass
class GuidanceTarget:
    """One object: its token positions in the prompt and its per-frame boxes (fractions)."""

    phrase: str
    tokens: list[int]
    boxes: np.ndarray  # [T, 4]
    _masks: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def masks(self, height: int, width: int, device, dtype) -> torch.Tensor:
        key = (height, width)
        if key not in self._masks:
            self._masks[key] = box_masks(self.boxes, height, width)
        return self._masks[key].to(device, dtype)


def total_energy(store_maps: dict[str, torch.Tensor], targets: Sequence[GuidanceTarget], smoothness: float,
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """sum over objects, frames and layers of E_i + lambda T_s (the sum inside eq. 10.7).

    ``store_maps`` maps layer names to ``[F, heads, h, w, tokens]`` (batch already
    sliced to one video). Returns the energy and each phrase's mean E_i (for reports).
    """
    energy, per_phrase = None, {}
    for target in targets:
        phrase_total = []
        for maps in store_maps.values():
            frame_maps = phrase_maps(maps, target.tokens)  # [F, h, w]
            masks = target.masks(frame_maps.shape[1], frame_maps.shape[2], frame_maps.device, frame_maps.dtype)
            per_frame = box_energy(frame_maps, masks)
            term = per_frame.sum() + smoothness * frame_maps.shape[0] * temporal_smoothness(frame_maps)
            energy = term if energy is None else energy + term
            phrase_total.append(float(per_frame.detach().mean()))
        per_phrase[target.phrase] = float(np.mean(phrase_total))
    return energy, per_phrase


def guidance_step(latents: torch.Tensor, gradient: torch.Tensor, config: GuidanceConfig, scheduler, timestep,
                  ) -> torch.Tensor:
    """Eq. 10.7: ``z - sigma_t^2 eta grad`` (raw) or its normalised, bounded form (see the module docstring)."""
    sigma2 = sigma_squared(scheduler, timestep)
    if config.gradient == "raw":
        step = sigma2 * config.strength * gradient
    else:
        rms = gradient.square().mean().sqrt().clamp(min=1e-12)
        step = (sigma2 / (1.0 + sigma2)) * config.strength * gradient / rms
    updated = latents - step
    if not torch.isfinite(updated).all():
        raise GuidanceDivergedError(
            f"Guidance strength {config.strength} drove the latent to NaN/inf at timestep {int(timestep)}; "
            "lower the guidance strength."
        )
    return updated


class _StopForward(Exception):
    """Raised by a hook once every guided layer has run: the rest of the UNet is not needed for the energy."""


def guide_latents(unet, scheduler, latents: torch.Tensor, timestep, cond: torch.Tensor,
                  targets: Sequence[Sequence[GuidanceTarget]], config: GuidanceConfig,
                  ) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """One gradient update of eq. 10.7 on a batch of latents, image (``[B, C, h, w]``) or video
    (``[B, C, F, h, w]``), from the conditional branch's cross-attention maps.

    ``targets[b]`` are sample b's objects (an image is a one-frame video: eq. 10.5 on its map, no
    smoothness term). The energies of the samples are summed, so each sample's gradient is its own;
    the normalised step (:func:`guidance_step`) is taken per sample. The UNet stops after the last
    guided layer. Returns the updated latents and each sample's mean E_i per phrase.
    """
    video = latents.ndim == 5
    with torch.enable_grad():
        latents = latents.detach().requires_grad_(True)
        control = CrossAttentionControl(unet, differentiable=True, layers=list(config.layers), keep_steps="last")
        pending = set(control.layers)

        def done(name):
            def hook(module, args, output):
                pending.discard(name)
                if not pending:
                    raise _StopForward
            return hook

        hooks = [unet.get_submodule(name).register_forward_hook(done(name)) for name in control.layers]
        try:
            with control:
                unet(scheduler.scale_model_input(latents, timestep), timestep, encoder_hidden_states=cond)
        except _StopForward:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        stored = {layer: control.store.maps_for(layer) for layer in control.layers}
        energy, reports = None, []
        for b, sample_targets in enumerate(targets):
            # [F, heads, h, w, tokens]: a video's frames, or the image as one frame
            maps = {layer: m[b] if video else m[b : b + 1] for layer, m in stored.items()}
            if not sample_targets:
                reports.append({})
                continue
            term, per_phrase = total_energy(maps, sample_targets, config.smoothness)
            energy = term if energy is None else energy + term
            reports.append(per_phrase)
        if energy is None:
            return latents.detach(), reports
        if not torch.isfinite(energy):
            raise GuidanceDivergedError("The guidance energy became NaN/inf; lower the guidance strength.")
        (gradient,) = torch.autograd.grad(energy, latents)
    updated = torch.stack([guidance_step(z, g, config, scheduler, timestep) if sample_targets else z
                           for z, g, sample_targets in zip(latents.detach(), gradient, targets)])
    return updated, reports
