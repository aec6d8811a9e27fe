"""Text-aware temporal attention: a pixel's frames also attend to the caption (decoupled, as in IP-Adapter).

diffusers' UNet3D sees the caption only in its spatial cross-attention, one
frame at a time, and the frame index only in its temporal layers
(:class:`~.model.FramePositions`). "From left to right" needs the two
together, and the shipped tiny model showed it does not get there: flipping
the caption's direction changed its denoising error by 0.03% at most
(``docs/notes/mojito.md``).

Here every temporal transformer block's self-attention over a pixel's frames
gets a second attention with the same queries (which carry each frame's
position) over the caption tokens c_L of eq. 10.8, with its own key and value
projections, summed before the output projection:

    out = W_o [softmax(Q K_f^T / sqrt(d)) V_f + softmax(Q K_c^T / sqrt(d)) V_c],
    K_c = c_L W_kc,  V_c = c_L W_vc,

IP-Adapter's decoupled cross-attention run over time. The attention weights
over the caption now depend on the frame, so a direction word can ask for
different features in the first and the last frame. ``W_vc`` starts at zero:
a model equipped with it denoises exactly as before until training moves it.
This is an addition to the tiny backbone, not a thesis equation (the thesis'
backbones are pretrained text-to-video models); Directional Motion Control
and the MIM are unchanged by it.

Measured (2026-12-02, ``--resume --temporal-text --mim-tokens``, 800 steps on the
shipped pack, 43 min at two threads): the flipped-direction gap stayed at
0.013% (true caption lower in 0.52 of cases), so the shipped pack does not
use it; it is a training option (``python -m pipelines.mojito.train
--temporal-text``) for a longer run, not part of the tiny pack.

The projections belong to the pack's :class:`~.modulator.MotionIntensityEncoder`
(its config's ``temporal_text_dims``); :func:`add_temporal_text` installs
processors that use them, and a forward pre-hook on the UNet hands each call's
``encoder_hidden_states`` to them (per thread, so concurrent calls in the
studio never see each other's captions).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from diffusers import UNet3DConditionModel
from diffusers.models.attention_processor import Attention
from torch import nn

from .model import temporal_blocks


class CaptionKeyValue(nn.Module):
    """W_kc, W_vc of one temporal block: caption tokens [B, N, D] -> keys and values [B, N, inner]."""

    def __init__(self, text_dim: int, inner_dim: int) -> None:
        super().__init__()
        self.to_k = nn.Linear(text_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(text_dim, inner_dim, bias=False)
        nn.init.zeros_(self.to_v.weight)

    def forward(self, caption: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_k(caption), self.to_v(caption)


class _CaptionOfThisCall(threading.local):
    """The ``encoder_hidden_states`` of the UNet call running in this thread."""

    caption: torch.Tensor | None = None


class TemporalTextAttnProcessor:
    """Temporal self-attention plus attention of the same queries to the caption, one query projection for both.

    The frames part is what diffusers' ``AttnProcessor2_0`` computes for a temporal block's ``attn1``
    (no norms, mask or residual inside the attention; :func:`add_temporal_text` checks that).
    """

    def __init__(self, key_value: CaptionKeyValue, current: _CaptionOfThisCall) -> None:
        self.key_value = key_value
        self.current = current

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
        # hidden_states: [B * h * w, F, C], batch-major (TransformerTemporalModel's layout)
        rows, frames, _ = hidden_states.shape
        heads = attn.heads
        query = attn.to_q(hidden_states)
        key, value = attn.to_k(hidden_states), attn.to_v(hidden_states)
        per_frame = [t.view(rows, frames, heads, -1).transpose(1, 2) for t in (query, key, value)]
        out = F.scaled_dot_product_attention(*per_frame).transpose(1, 2).reshape(rows, frames, -1)
        caption = self.current.caption
        if caption is not None:
            batch, tokens = caption.shape[:2]
            # every pixel and frame of one video asks the same caption: one attention per video
            video_query = query.reshape(batch, rows * frames // batch, heads, -1).transpose(1, 2)
            text_key, text_value = (t.to(query.dtype).reshape(batch, tokens, heads, -1).transpose(1, 2)
                                    for t in self.key_value(caption.to(query.dtype)))
            text = F.scaled_dot_product_attention(video_query, text_key, text_value)  # [B, heads, h*w*F, d]
            out = out + text.transpose(1, 2).reshape(rows, frames, -1)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


def temporal_text_dims(unet: UNet3DConditionModel) -> tuple[int, ...]:
    """The inner width of each temporal block's attention, in :func:`~.model.temporal_blocks` order."""
    return tuple(block.attn1.inner_dim for block in temporal_blocks(unet))


def add_temporal_text(unet: UNet3DConditionModel, key_values: nn.ModuleList) -> None:
    """Give every temporal block of ``unet`` a :class:`TemporalTextAttnProcessor` using ``key_values`` (one each).

    Idempotent for the same ``key_values``. Raises ``ValueError`` if their widths do not match the UNet's.
    """
    blocks = temporal_blocks(unet)
    for block in blocks:
        attn = block.attn1
        if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_q is not None \
                or attn.residual_connection or attn.is_cross_attention:
            raise ValueError("text-aware temporal attention expects plain temporal self-attention blocks")
    widths = tuple(kv.to_k.out_features for kv in key_values)
    if widths != temporal_text_dims(unet):
        raise ValueError(f"caption key/value widths {widths} do not match the UNet's temporal blocks "
                         f"{temporal_text_dims(unet)}")
    current = caption_of_this_call(unet)
    for block, key_value in zip(blocks, key_values):
        block.attn1.set_processor(TemporalTextAttnProcessor(key_value, current))


def caption_of_this_call(unet: nn.Module) -> _CaptionOfThisCall:
    """The per-thread holder of the ``encoder_hidden_states`` of ``unet``'s running call (a forward pre-hook fills
    it; installed once per UNet and shared by everything that reads the condition inside the UNet)."""
    current = getattr(unet, "_caption_of_this_call", None)
    if current is None:
        current = _CaptionOfThisCall()
        unet._caption_of_this_call = current
        unet.register_forward_pre_hook(_remember_caption(current), with_kwargs=True)
    return current


def _remember_caption(current: _CaptionOfThisCall):
    def hook(module, args, kwargs):
        current.caption = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)

    return hook
