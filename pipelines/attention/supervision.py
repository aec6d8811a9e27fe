"""Supervising cross-attention toward object masks (thesis eq. 9.3-9.4), shared by every model that trains it.

FlexEControl adds ``L_ca`` to its control training; the tiny pack applies the
same term while pretraining its text-to-image model, so that each object's
words attend to the object's pixels (DESIGN.md principle 5, "words point at
things").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .tokens import token_indices


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


def segment_features(features: torch.Tensor, token_sets: torch.Tensor) -> torch.Tensor:
    """Mean of each segment's token features: ``features`` [B, tokens, C], ``token_sets`` [B, J, tokens] (eq. 9.3's
    ``T_j``) -> [B, J, C]; a segment with no tokens gives 0."""
    sets = token_sets.to(features.dtype)
    return torch.einsum("bjm,bmc->bjc", sets, features) / sets.sum(-1, keepdim=True).clamp(min=1.0)


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


def phrase_token_sets(tokenizer, caption: str, phrases: Sequence[str], max_tokens: int,
                      slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``T_j`` of eq. 9.3 for each phrase: ``[slots, max_tokens]`` token indicators and ``[slots]`` validity.

    A repeated phrase ("a red circle and a red circle") takes its next occurrence;
    a phrase not found within the first ``max_tokens`` tokens is left invalid.
    """
    sets = torch.zeros(slots, max_tokens)
    valid = torch.zeros(slots, dtype=torch.bool)
    seen: dict[str, int] = {}
    for j, phrase in enumerate(list(phrases)[:slots]):
        occurrence = seen.get(phrase, 0)
        seen[phrase] = occurrence + 1
        try:
            positions = [p for p in token_indices(tokenizer, caption, phrase, occurrence=occurrence) if p < max_tokens]
        except InvalidInputError:
            continue
        if positions:
            sets[j, positions] = 1.0
            valid[j] = True
    return sets, valid
