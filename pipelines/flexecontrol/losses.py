"""FlexEControl's training losses: masked diffusion and the total, thesis eq. 9.5-9.6.

The cross-attention supervision ``L_ca`` (eq. 9.3-9.4) is shared with the tiny pack's pretraining and lives in
:mod:`pipelines.attention.supervision`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


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
