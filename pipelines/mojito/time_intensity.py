"""The MIM as a global condition: c_M added to the UNet's time embedding.

The thesis' MIM ablation (Table 10.4, "Global Conditional Input") also tried
"combining the intensity embedding with FPS and time embeddings, using this
global embedding as a conditioning input for convolution layers", and reports
that it "shows good motion alignment but significantly degrades video
quality"; Stable Video Diffusion conditions on its motion bucket the same way.
Here a zero-initialised linear map W_t takes c_M to the time-embedding width
and adds it to the embedding every ResNet block of the UNet3D reads (per frame,
as a scale-and-shift of its features):

    emb = TimeEmbedding(t) + W_t c_M.

It sits beside the "tokens" reading of eq. 10.8 (c_L = [c_T; c_M; c_M]): the
UNet receives c_L, and c_M is its last token, so nothing else has to be handed
to the UNet. W_t starts at zero: a model equipped with it denoises exactly as
before until training moves it. The map belongs to the pack's
:class:`~.modulator.MotionIntensityEncoder` (config ``time_embedding_dim``).
"""

from __future__ import annotations

import torch
from diffusers import UNet3DConditionModel
from torch import nn

from .temporal_text import caption_of_this_call


class IntensityToTime(nn.Module):
    """W_t: c_M [B, D] -> a time-embedding offset [B, time_dim]; zero at initialisation."""

    def __init__(self, embedding_dim: int, time_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embedding_dim, time_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        return self.proj(motion)


def time_embedding_dim(unet: UNet3DConditionModel) -> int:
    """The width of ``unet``'s time embedding (what every ResNet block reads)."""
    return unet.time_embedding.linear_2.out_features


def add_time_intensity(unet: UNet3DConditionModel, to_time: IntensityToTime) -> None:
    """Add ``to_time(c_M)`` to ``unet``'s time embedding on every call, c_M being the last context token.

    Idempotent for the same ``to_time``. Raises ``ValueError`` if its width does not match the UNet's.
    """
    if to_time.proj.out_features != time_embedding_dim(unet):
        raise ValueError(f"the intensity's time map gives width {to_time.proj.out_features}, the UNet's time "
                         f"embedding has {time_embedding_dim(unet)}")
    # (map, hook handle) as a plain tuple, so the map does not become a submodule in the UNet's state dict.
    installed = getattr(unet, "_time_intensity", None)
    if installed is not None and installed[0] is to_time:
        return
    if installed is not None:
        installed[1].remove()
    current = caption_of_this_call(unet)

    def add_intensity(module, args, output):
        context = current.caption
        if context is None:
            return output
        return output + to_time(context[:, -1].to(output.dtype))

    unet._time_intensity = (to_time, unet.time_embedding.register_forward_hook(add_intensity))
