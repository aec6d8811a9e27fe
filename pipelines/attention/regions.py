"""Regional cross-attention: tie a phrase's tokens to a region of the image while sampling.

Dense layout conditioning in the spirit of DenseDiffusion (Kim et al., ICCV
2023): at every spatial cross-attention layer the pre-softmax scores of a
region's tokens get ``+strength`` at the region's pixels and ``-strength``
elsewhere, so "red" is read where the red object is to be and not beside it.
It needs no training and no gradient; tokens of no region are untouched.

The bias is an additive attention mask (``[B, pixels, tokens]``), which
:class:`~.processor.CrossAttentionProcessor` and diffusers' attention both
accept; each layer gets the regions resized (area) to its own grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from ..errors import InvalidInputError, WorldStudioError
from .layers import PROCESSOR_SUFFIX, cross_attention_layers
from .processor import CrossAttentionProcessor

# Default bias on the scores of a region's tokens (pre-softmax, so e^2 ~ 7x the weight inside vs outside).
DEFAULT_STRENGTH = 5.0


@dataclass
class Region:
    """Tokens (positions in the encoded prompt) that belong to a region: float mask [H, W] in [0, 1]."""

    tokens: list[int]
    mask: torch.Tensor


def region_bias(regions: Sequence[Sequence[Region]], side: int, tokens: int, strength: float) -> torch.Tensor:
    """The additive score bias ``[B, side*side, tokens]`` for a batch; ``regions[b]`` are image ``b``'s.

    ``bias[b, p, t] = strength * (2 m_r(p) - 1)`` for each token ``t`` of region
    ``r`` (``m_r`` the region's mask resized to ``side x side``), 0 elsewhere.
    """
    bias = torch.zeros(len(regions), side * side, tokens)
    for b, image_regions in enumerate(regions):
        for region in image_regions:
            small = F.interpolate(region.mask[None, None].float(), size=(side, side), mode="area")[0, 0].flatten()
            inside = [t for t in region.tokens if 0 <= t < tokens]
            bias[b][:, inside] += (strength * (2.0 * small - 1.0))[:, None]
    return bias


class RegionBiasProcessor(CrossAttentionProcessor):
    """A :class:`CrossAttentionProcessor` whose scores get the :func:`region_bias` of the layer's grid."""

    def __init__(self, name: str, regions: Sequence[Sequence[Region]], strength: float) -> None:
        super().__init__(name)
        self.regions, self.strength = regions, strength
        self._cache: dict[tuple[int, int, int], torch.Tensor] = {}

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise InvalidInputError(f"{self.name} is not a cross-attention layer.")
        pixels = hidden_states.shape[-1] * hidden_states.shape[-2] if hidden_states.ndim == 4 else hidden_states.shape[1]
        side = int(round(pixels**0.5))
        if side * side != pixels or hidden_states.shape[0] != len(self.regions):
            raise InvalidInputError(f"{self.name}: a {pixels}-pixel map of batch {hidden_states.shape[0]} does not fit "
                                    f"square regions for a batch of {len(self.regions)}.")
        key = (side, encoder_hidden_states.shape[1], hidden_states.shape[0])
        if key not in self._cache:
            self._cache[key] = region_bias(self.regions, side, encoder_hidden_states.shape[1], self.strength)
        bias = self._cache[key].to(hidden_states.device, hidden_states.dtype)
        attention_mask = bias if attention_mask is None else attention_mask + bias
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class RegionalAttention:
    """Within the block, every text cross-attention layer of ``unet`` biases its scores by ``regions``::

        with RegionalAttention(unet, [[], [Region(tokens=[2, 3], mask=circle)]]):  # CFG: [unconditional, text]
            noise = unet(latents, t, encoder_hidden_states=emb).sample

    ``regions[b]`` are the regions of batch row ``b`` (as the UNet is called,
    so with classifier-free guidance the unconditional rows get none). The
    original processors come back on exit, also after an exception.
    """

    def __init__(self, unet: nn.Module, regions: Sequence[Sequence[Region]], strength: float = DEFAULT_STRENGTH) -> None:
        self.unet, self.regions, self.strength = unet, [list(r) for r in regions], float(strength)
        self.layers = cross_attention_layers(unet)
        self._original: dict[str, Any] | None = None

    def __enter__(self) -> RegionalAttention:
        if self._original is not None:
            raise WorldStudioError("This RegionalAttention is already active.")
        original = dict(self.unet.attn_processors)
        replaced = {**original, **{name + PROCESSOR_SUFFIX: RegionBiasProcessor(name, self.regions, self.strength)
                                   for name in self.layers}}
        self.unet.set_attn_processor(replaced)  # diffusers pops entries from the dict it is given
        self._original = original
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            self.unet.set_attn_processor(dict(self._original))
        finally:
            self._original = None
