"""Motion Intensity Modulator (thesis 10.3.3, eq. 10.8).

The Optical Flow Map Generator is ShapesWorld's Farneback intensity
(:func:`pipelines.shapesworld.motion_intensity`: level = round(magnitude /
0.005) clipped to 1..10). The Motion Intensity Encoder turns a level into a
word ("one" ... "ten") and embeds the word with a learned layer M to c_M. The
thesis then "duplicates and concatenates c_M with itself, so that its
influence is strong enough when combined with the text embeddings", and
writes the combination c_L = c_T + c_M. Two readings, both implemented
(config ``combine``):

- ``"add"`` (the first shipped packs): c_M is added to every token of c_T,
  and row 0 ("none") stays zero, so "none" leaves c_T unchanged. Measured
  weakness: adding one vector to every key shifts every attention logit of a
  query by the same amount, so c_M cannot change any attention weight; it only
  adds a constant to each cross-attention output, which the next GroupNorm
  largely removes (``docs/notes/mojito.md``: a far level changed the
  denoising error by 0.12%).
- ``"tokens"``: c_M, duplicated ``copies`` times, is appended to c_T as extra
  context tokens, c_L = [c_T; c_M; c_M]. The intensity then has its own keys,
  so attention to it can differ between pixels and, through the text-aware
  temporal attention (:mod:`.temporal_text`), between frames. Row 0 ("none")
  is learned like the others (the tokens are always there, so classifier-free
  guidance batches keep one length).

The encoder's config also carries ``frame_positions``: how many frames the
pack's temporal layers have sinusoidal positions for (0 for none; see
:func:`.model.add_frame_positions`), and ``temporal_text_dims``: the widths of
the caption key/value projections its temporal blocks attend to the caption
through (empty for none; see :mod:`.temporal_text`), whose weights it holds; and
``frame_text_layers`` / ``frame_text_query_dims``: the per-frame context mixer and query positions of
frame-aware text (0 / empty for none; see :mod:`.frame_text`), also held here; and
``spatial_heads``: the image UNet's head count per level, which its UNet3D's spatial attentions take
over (empty: the UNet3D's own split; see :func:`.model.set_spatial_heads`); and ``time_embedding_dim``: the width of
the map W_t that also adds c_M to the UNet's time embedding (0 for none; "tokens" only; see :mod:`.time_intensity`),
whose weights it holds; and ``frame_clock``: whether the temporal layers' frame positions run on a clock set by the
level (see :mod:`.frame_clock`; "tokens" and frame positions only). All of it is the pack's motion conditioning, and this is the component a Mojito pack
adds to a stock text-to-video folder.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import InvalidInputError
from .frame_text import MAX_FRAME_TOKENS, FrameText
from .temporal_text import CaptionKeyValue
from .time_intensity import IntensityToTime

COMBINE_MODES = ("add", "tokens")
INTENSITY_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def check_intensity(level) -> int:
    """``level`` as an int in 1..10, else :class:`InvalidInputError` echoing it."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or level != level or int(level) != level:
        raise InvalidInputError(f"Motion intensity must be an integer from 1 to 10, got {level!r}.")
    if not 1 <= int(level) <= len(INTENSITY_WORDS):
        raise InvalidInputError(f"Motion intensity must be from 1 to 10, got {level!r}.")
    return int(level)


def ordinal_level_rows(levels: int, dim: int, norm: float) -> torch.Tensor:
    """[levels, dim] starting rows for the levels 1..``levels``, each of length ``norm``: row k is
    (cos(k theta_m), sin(k theta_m)) for theta_m = pi m / (levels * dim / 2), m = 1..dim/2. Every angle stays
    below pi, so the distance between two rows grows with the distance between their levels.

    A zero-initialised M (the shipped packs) stays near zero under AdamW: after 1500 steps its rows had length
    0.1-0.18 beside text tokens of length 7.6 (``docs/notes/mojito.md``), so c_M's tokens were almost empty keys and
    values, the same for every level. Started at the text tokens' length, the levels are told apart from step 0.
    """
    if dim % 2:
        raise ValueError(f"the ordinal code needs an even width, got {dim}")
    angles = (torch.arange(1, levels + 1, dtype=torch.float32)[:, None] * torch.pi
              * torch.arange(1, dim // 2 + 1, dtype=torch.float32)[None] / (levels * dim // 2))
    rows = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).flatten(1)
    return rows * (norm / rows.norm(dim=1, keepdim=True))


class MotionIntensityEncoder(ModelMixin, ConfigMixin):
    """The learned layer M: an intensity word -> c_M, combined with c_T (c_L = c_T + c_M, eq. 10.8) by ``combine``."""

    @register_to_config
    def __init__(self, embedding_dim: int = 64, words: tuple[str, ...] = INTENSITY_WORDS,
                 frame_positions: int = 0, temporal_text_dims: tuple[int, ...] = (), combine: str = "add",
                 copies: int = 2, frame_text_layers: int = 0, frame_text_query_dims: tuple[int, ...] = (),
                 spatial_heads: tuple[int, ...] = (), time_embedding_dim: int = 0,
                 frame_clock: bool = False) -> None:
        super().__init__()
        if combine not in COMBINE_MODES or copies < 1:
            raise ValueError(f"combine must be one of {COMBINE_MODES} and copies >= 1, got {combine!r}, {copies!r}")
        if time_embedding_dim and combine != "tokens":
            raise ValueError("the time-embedding path reads c_M as the last context token: it needs combine='tokens'")
        if frame_clock and (combine != "tokens" or not frame_positions):
            raise ValueError("the frame clock reads c_M as the last context token and runs the frame positions: "
                             "it needs combine='tokens' and frame_positions > 0")
        # Row 0 is "none"; row k is words[k-1]. Zero-initialised: training starts from the text-only condition
        # ("tokens": from tokens with zero keys and values).
        self.embedding = nn.Embedding(len(words) + 1, embedding_dim)
        nn.init.zeros_(self.embedding.weight)
        # One W_kc, W_vc per temporal block of the pack's UNet (.temporal_text), if it has them.
        self.temporal_text = nn.ModuleList(CaptionKeyValue(embedding_dim, width) for width in temporal_text_dims)
        # Per-frame contexts and query positions for the spatial cross-attention (.frame_text), if it has them.
        self.frame_text = (FrameText(embedding_dim, tuple(frame_text_query_dims), layers=frame_text_layers,
                                     max_frames=frame_positions or MAX_FRAME_TOKENS)
                           if frame_text_layers else None)
        # W_t, adding c_M to the UNet's time embedding (.time_intensity), if the pack has it.
        self.to_time = IntensityToTime(embedding_dim, time_embedding_dim) if time_embedding_dim else None

    @torch.no_grad()
    def start_levels_at(self, norm: float) -> None:
        """Set the level rows to :func:`ordinal_level_rows` of length ``norm`` (row 0, "none", is kept)."""
        rows = ordinal_level_rows(len(self.config.words), self.config.embedding_dim, norm)
        self.embedding.weight[1:] = rows.to(self.embedding.weight)

    def word(self, level: int) -> str:
        """The word of an intensity level, e.g. 7 -> "seven"."""
        return self.config.words[check_intensity(level) - 1]

    def index(self, levels) -> torch.Tensor:
        """Row indices [B] for levels (int 1..10, or None for "none")."""
        rows = [0 if level is None else self.config.words.index(self.word(level)) + 1 for level in levels]
        return torch.tensor(rows, dtype=torch.long, device=self.embedding.weight.device)

    @property
    def extra_tokens(self) -> int:
        """Context tokens the encoder appends to c_T (0 for ``"add"``)."""
        return self.config.copies if self.config.combine == "tokens" else 0

    def forward(self, text_embeddings: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """c_T [B, N, D] and intensity rows [B] -> c_L: [B, N, D] (``"add"``) or [B, N + copies, D] (``"tokens"``)."""
        motion = self.embedding(rows).to(text_embeddings.dtype)  # [B, D]
        if self.config.combine == "tokens":
            return torch.cat([text_embeddings, motion[:, None, :].expand(-1, self.config.copies, -1)], dim=1)
        motion = torch.where((rows == 0)[:, None], torch.zeros_like(motion), motion)
        return text_embeddings + motion[:, None, :]
