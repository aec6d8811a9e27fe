"""A frame clock set by the motion intensity: temporal positions at f x level / 5 instead of f.

In ShapesWorld an object at intensity level k moves k steps of the same length every frame, so in frame f it
is at p_0 + f k v: a product of the frame index and the level. With the sinusoidal frame positions of
:class:`.model.FramePositions` the UNet must learn that product for every level, and the tiny packs learn
little of it: run J2 (``docs/notes/mojito.md``) moved the measured speed by one to three levels over the
whole range of ten. Evaluating the same sinusoids at the clock time tau = f k / 5 makes the object's place a
function of tau alone, one map from clock time to displacement that every level shares, and the level that
the Motion Intensity Modulator (eq. 10.8) encodes sets how fast that clock runs. The "none" row (no intensity,
and classifier-free guidance's empty row) runs at 1, level 5's rate.

The level is read off the running call's context: in the MIM's "tokens" reading (c_L = [c_T; c_M; c_M]) the
last context token is exactly a row of the MIM's embedding, and the nearest row names the level. So every
batch row (CFG's, training's dropped ones) gets its own rate without anything else handed to the UNet.
"""

from __future__ import annotations

import torch
from diffusers import UNet3DConditionModel
from torch import nn

from .model import FramePositions, temporal_blocks
from .temporal_text import _CaptionOfThisCall, caption_of_this_call

# The level whose clock runs at one clock tick per frame (also the "none" row's rate).
REFERENCE_LEVEL = 5


class LevelClock:
    """Per-video clock rates [B] of the running UNet call: level / ``REFERENCE_LEVEL``, 1 for the "none" row.

    Reads c_M as the last token of the call's ``encoder_hidden_states`` and takes the nearest row of
    ``embedding`` (row 0 "none", row k level k). ``None`` outside a UNet call.
    """

    def __init__(self, embedding: nn.Embedding, current: _CaptionOfThisCall) -> None:
        self.embedding = embedding
        self.current = current

    def __call__(self) -> torch.Tensor | None:
        caption = self.current.caption
        if caption is None:
            return None
        table = self.embedding.weight.detach().float()
        rows = torch.cdist(caption[:, -1].detach().float().to(table.device), table).argmin(dim=1)
        return torch.where(rows == 0, torch.ones_like(rows, dtype=torch.float32), rows.float() / REFERENCE_LEVEL)


def add_frame_clock(unet: UNet3DConditionModel, embedding: nn.Embedding) -> int:
    """Let every temporal block's :class:`FramePositions` run on the :class:`LevelClock` of ``embedding`` (the MIM's
    level rows). Replaces a clock installed before; returns how many blocks got it. Raises ``ValueError`` if
    ``unet`` has no frame positions."""
    blocks = [block for block in temporal_blocks(unet) if isinstance(block.pos_embed, FramePositions)]
    if not blocks:
        raise ValueError("the frame clock runs the temporal layers' frame positions: this UNet has none")
    clock = LevelClock(embedding, caption_of_this_call(unet))
    for block in blocks:
        block.pos_embed.clock = clock
    return len(blocks)
