"""FlexEControl's training losses: cross-attention supervision and masked diffusion, thesis eq. 9.3-9.6."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError


def segment_attention(maps: Sequence[torch.Tensor], token_sets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Unified attention map per segment, thesis eq. 9.3: ``A_j = 1/L sum_l sum_i [T_i in T_j] CA_i^l``.

    ``maps``: L recorded layers, each ``[B, heads, h, w, tokens]`` (heads are
    averaged, then each layer is resized bilinearly to ``size``);
    ``token_sets``: ``[B, J, tokens]``, 1 where token i belongs to segment j
    (the Iverson bracket). Returns ``[B, J, *size]``.
    """
    if not maps:
        raise InvalidInputError("No cross-attention maps were recorded for L_ca.")
    total = 0.0
    for layer in maps:
        per_pixel = layer.mean(dim=1).permute(0, 3, 1, 2)  # [B, tokens, h, w]
        if per_pixel.shape[-2:] != size:
            per_pixel = F.interpolate(per_pixel, size=size, mode="bilinear", align_corners=False)
        total = total + torch.einsum("bmhw,bjm->bjhw", per_pixel, token_sets.to(per_pixel.dtype))
    return total / len(maps)


def cross_attention_loss(
    maps: Sequence[torch.Tensor], token_sets: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """``L_ca = E ||A_j(v_j, z_t) - M_j||^2``, thesis eq. 9.4.

    ``masks``: ``[B, J, H, W]`` segment masks in [0, 1], area-resized to the
    finest recorded map; ``valid``: ``[B, J]`` bool, which segments exist
    (scenes have 1-3 objects). The squared error is averaged over pixels and
    over valid segments.
    """
    size = max((tuple(m.shape[2:4]) for m in maps), key=lambda s: s[0] * s[1])
    attention = segment_attention(maps, token_sets, size)  # [B, J, h, w]
    target = F.adaptive_avg_pool2d(masks.to(attention.dtype), size)  # [B, J, h, w]
    per_segment = (attention - target).square().mean(dim=(2, 3))  # [B, J]
    if valid is None:
        return per_segment.mean()
    weights = valid.to(per_segment.dtype)
    return (per_segment * weights).sum() / weights.sum().clamp(min=1.0)


def condition_mask(conditions: Sequence[torch.Tensor], latent_size: tuple[int, int]) -> torch.Tensor:
    """``M`` of eq. 9.5: the union of the conditions' non-zero pixels, max-pooled to the latent grid.

    ``conditions``: maps ``[B, C, H, W]``; returns ``[B, 1, h, w]`` in {0, 1}.
    """
    union = torch.stack([(c.abs().amax(dim=1, keepdim=True) > 0) for c in conditions]).any(dim=0).float()
    return F.adaptive_max_pool2d(union, latent_size)


def masked_diffusion_loss(prediction: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_mask = E ||(eps - eps_theta(z_t, t)) * M||^2``, thesis eq. 9.5, averaged over every latent entry.

    ``mask`` ``[B, 1, h, w]`` broadcasts over the latent channels.
    """
    return ((noise.float() - prediction.float()) * mask).square().mean()


def total_loss(ldm: torch.Tensor, ca: torch.Tensor | None, mask: torch.Tensor | None, lambda_ca: float,
               lambda_mask: float) -> torch.Tensor:
    """``L_total = L_ldm + lambda_ca L_ca + lambda_mask L_mask``, thesis eq. 9.6 (a term with lambda 0 is left out)."""
    loss = ldm
    if lambda_ca and ca is not None:
        loss = loss + lambda_ca * ca
    if lambda_mask and mask is not None:
        loss = loss + lambda_mask * mask
    return loss
