"""Frame-aware text: each frame's spatial cross-attention reads its own caption context, and knows where it looks.

diffusers' UNet3D hands every frame the same caption (``encoder_hidden_states``
repeated per frame), and its spatial cross-attention queries carry no absolute
position. To draw "a red circle moves from left to right" an object's token
would have to be attended on the left in the first frame and on the right in
the last; with one context for all frames and position-free queries the only
route is through features the temporal layers happen to mix in, and the tiny
model never found it (``docs/notes/mojito.md``: flipping the direction changed
its denoising error by 0.03%). Two additions make the route direct:

- **Per-frame contexts.** A small transformer reads the caption's tokens c_L
  (eq. 10.8, so the intensity c_M is among them) together with one frame token
  (a learned projection of the frame index's sinusoid) and returns, per frame,

      c_L^f = c_L + W_o Mixer([c_L; e_f])[:N],

  so direction words, the intensity and the frame index meet in one nonlinear
  map and each frame's object keys can say where the object is at that frame.
  ``W_o`` starts at zero: every frame starts with c_L, the model unchanged.
- **Query positions.** Each spatial cross-attention's query input gets
  ``W_p g(x, y)``, a zero-initialised projection of a 2D Fourier grid of the
  pixel's position, so a key can ask for a place, as in the layout-conditioned
  image models (GLIGEN's grounding tokens meet position-aware queries).

This is an addition to the tiny backbone, not a thesis equation (the thesis'
backbones are pretrained text-to-video models that already ground motion
words); Directional Motion Control, which reads and steers these same
cross-attention maps (eq. 10.5-10.7), and the MIM are unchanged by it.

Measured (2026-12-04, run W: 900 steps on top of a 600-step model, 54 min at two threads; ``docs/notes/mojito.md``):
the object words' attention centroid still moved by -0.0004 of the frame width along the caption's direction, and
the bench's unguided direction was 0.353 (17 straight cases), so no pack ships with it; it is a training option
(``python -m pipelines.mojito.train --frame-text 1``) for a longer or differently supervised run.

The weights belong to the pack's :class:`~.modulator.MotionIntensityEncoder`
(config ``frame_text_layers`` and ``frame_text_query_dims``);
:func:`add_frame_text` installs a forward pre-hook on the UNet that builds the
contexts of each call (per thread, so concurrent studio calls never see each
other's captions) and one on each spatial cross-attention that uses them.
"""

from __future__ import annotations

import math
import threading

import torch
from diffusers import UNet3DConditionModel
from torch import nn

from ..attention.layers import attention_module, cross_attention_layers
from .model import FramePositions

# Fourier frequencies of the query grid: pi * 2^k for k < GRID_OCTAVES over coordinates in [0, 1]
# (the lowest has period 2, so every place on the grid has its own code).
GRID_OCTAVES = 5
# Frame tokens a mixer has when its pack records no frame positions.
MAX_FRAME_TOKENS = 64


def grid_features(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fourier features of each pixel centre of an ``height`` x ``width`` grid: [height * width, 4 * GRID_OCTAVES].

    Row-major (the order of a spatial transformer's tokens); per octave k: sin and cos of pi 2^k x, then of
    pi 2^k y, with x, y = (index + 0.5) / side in (0, 1).
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    angles = math.pi * (2.0 ** torch.arange(GRID_OCTAVES, device=device, dtype=torch.float32))  # [K]
    parts = []
    for coordinate in (x.reshape(-1, 1), y.reshape(-1, 1)):
        parts += [torch.sin(coordinate * angles), torch.cos(coordinate * angles)]
    return torch.cat(parts, dim=-1).to(dtype)


class FrameText(nn.Module):
    """The per-frame context mixer and the query-position projections of one pack.

    Args:
        text_dim: width D of c_L.
        query_dims: input width of each spatial cross-attention's query, in
            :func:`~pipelines.attention.layers.cross_attention_layers` order.
        layers: transformer layers of the mixer.
        heads: attention heads of the mixer.
        max_frames: frames the frame tokens exist for.
    """

    def __init__(self, text_dim: int, query_dims: tuple[int, ...], layers: int = 1, heads: int = 4,
                 max_frames: int = MAX_FRAME_TOKENS) -> None:
        super().__init__()
        self.register_buffer("frame_table", FramePositions(text_dim, max_frames).table[0].clone(), persistent=False)
        self.frame_in = nn.Linear(text_dim, text_dim)
        layer = nn.TransformerEncoderLayer(text_dim, heads, 4 * text_dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(text_dim, text_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.query_positions = nn.ModuleList(nn.Linear(4 * GRID_OCTAVES, width, bias=False) for width in query_dims)
        for projection in self.query_positions:
            nn.init.zeros_(projection.weight)

    def contexts(self, caption: torch.Tensor, frames: int) -> torch.Tensor:
        """c_L [B, N, D] -> c_L^f for every frame: [B * frames, N, D], frame-major within each video
        (the order in which the UNet3D lays out a video's frames)."""
        if frames > self.frame_table.shape[0]:
            raise ValueError(f"{frames} frames exceed the {self.frame_table.shape[0]} frame tokens of this model")
        batch, tokens, dim = caption.shape
        frame = self.frame_in(self.frame_table[:frames].to(caption.dtype))  # [F, D]
        sequence = torch.cat([caption[:, None].expand(batch, frames, tokens, dim),
                              frame[None, :, None].expand(batch, frames, 1, dim)], dim=2)
        mixed = self.mixer(sequence.reshape(batch * frames, tokens + 1, dim))[:, :tokens]
        return caption.repeat_interleave(frames, dim=0) + self.out(mixed)

    def positions(self, layer: int, tokens: int, dtype: torch.dtype) -> torch.Tensor:
        """What layer ``layer`` adds to its query input for a square map of ``tokens`` pixels: [tokens, C]."""
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"frame-aware text needs square latents; a map of {tokens} pixels is not square")
        projection = self.query_positions[layer]
        return projection(grid_features(side, side, projection.weight.device, projection.weight.dtype)).to(dtype)


def frame_text_query_dims(unet: nn.Module) -> tuple[int, ...]:
    """The query input width of each spatial cross-attention of ``unet``, in layer order."""
    return tuple(attention_module(unet, name).to_q.in_features for name in cross_attention_layers(unet))


class _ContextsOfThisCall(threading.local):
    """The per-frame contexts of the UNet call running in this thread."""

    contexts: torch.Tensor | None = None


def add_frame_text(unet: UNet3DConditionModel, frame_text: FrameText) -> None:
    """Make ``unet``'s spatial cross-attention use ``frame_text`` (see the module docstring).

    Installing again (a new pack's ``frame_text`` on the same UNet) replaces the module the hooks use.
    Raises ``ValueError`` if its query widths do not match the UNet's.
    """
    widths = tuple(p.out_features for p in frame_text.query_positions)
    if widths != frame_text_query_dims(unet):
        raise ValueError(f"query position widths {widths} do not match the UNet's cross-attention "
                         f"{frame_text_query_dims(unet)}")
    installed = getattr(unet, "_frame_text", None)
    if installed is not None:
        installed["module"] = frame_text
        return
    state = {"module": frame_text, "current": _ContextsOfThisCall()}
    unet._frame_text = state
    unet.register_forward_pre_hook(_build_contexts(state), with_kwargs=True)
    for index, name in enumerate(cross_attention_layers(unet)):
        attention_module(unet, name).register_forward_pre_hook(_use_contexts(state, index), with_kwargs=True)


def _build_contexts(state: dict):
    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        caption = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        current = state["current"]
        current.contexts = (state["module"].contexts(caption, sample.shape[2])
                            if caption is not None and sample is not None and sample.ndim == 5 else None)

    return hook


def _use_contexts(state: dict, layer: int):
    def hook(module, args, kwargs):
        contexts = state["current"].contexts
        hidden = args[0] if args else kwargs["hidden_states"]
        if contexts is None or hidden.ndim != 3:
            return None
        given = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        if given is None or given.shape[0] != contexts.shape[0] or given.shape[1] != contexts.shape[1]:
            raise ValueError(f"frame-aware text made contexts {tuple(contexts.shape)} for a call whose "
                             f"cross-attention got {None if given is None else tuple(given.shape)}")
        hidden = hidden + state["module"].positions(layer, hidden.shape[1], hidden.dtype)
        contexts = contexts.to(given.dtype)
        if len(args) > 1:
            return (hidden, contexts, *args[2:]), kwargs
        rest = {key: value for key, value in kwargs.items() if key != "hidden_states"}
        return (hidden, *args[1:]), {**rest, "encoder_hidden_states": contexts}

    return hook
