"""Motion Intensity Modulator (thesis 10.3.3, eq. 10.8).

The Optical Flow Map Generator is ShapesWorld's Farneback intensity
(:func:`pipelines.shapesworld.motion_intensity`: level = round(magnitude /
0.005) clipped to 1..10). The Motion Intensity Encoder turns a level into a
word ("one" ... "ten"), embeds the word with a learned layer M to c_M, and
duplicates c_M over every token of the text embedding: the condition is
c_L = c_T + c_M. Row 0 ("none") is the embedding of no intensity, used for
classifier-free guidance and for generation without MIM; it stays zero, so
"none" leaves the text embedding unchanged.

The encoder's config also carries ``frame_positions``: how many frames the
pack's temporal layers have sinusoidal positions for (0 for none; see
:func:`.model.add_frame_positions`). Both are the pack's motion conditioning,
and this is the component a Mojito pack adds to a stock text-to-video folder.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import InvalidInputError

INTENSITY_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def check_intensity(level) -> int:
    """``level`` as an int in 1..10, else :class:`InvalidInputError` echoing it."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or level != level or int(level) != level:
        raise InvalidInputError(f"Motion intensity must be an integer from 1 to 10, got {level!r}.")
    if not 1 <= int(level) <= len(INTENSITY_WORDS):
        raise InvalidInputError(f"Motion intensity must be from 1 to 10, got {level!r}.")
    return int(level)


class MotionIntensityEncoder(ModelMixin, ConfigMixin):
    """The learned layer M: an intensity word -> c_M, added to every token (c_L = c_T + c_M, eq. 10.8)."""

    @register_to_config
    def __init__(self, embedding_dim: int = 64, words: tuple[str, ...] = INTENSITY_WORDS,
                 frame_positions: int = 0) -> None:
        super().__init__()
        # Row 0 is "none"; row k is words[k-1]. Zero-initialised: training starts from the text-only condition.
        self.embedding = nn.Embedding(len(words) + 1, embedding_dim)
        nn.init.zeros_(self.embedding.weight)

    def word(self, level: int) -> str:
        """The word of an intensity level, e.g. 7 -> "seven"."""
        return self.config.words[check_intensity(level) - 1]

    def index(self, levels) -> torch.Tensor:
        """Row indices [B] for levels (int 1..10, or None for "none")."""
        rows = [0 if level is None else self.config.words.index(self.word(level)) + 1 for level in levels]
        return torch.tensor(rows, dtype=torch.long, device=self.embedding.weight.device)

    def forward(self, text_embeddings: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """c_T [B, N, D] and intensity rows [B] -> c_L = c_T + c_M, c_M duplicated over the N tokens."""
        motion = self.embedding(rows)  # [B, D]
        motion = torch.where((rows == 0)[:, None], torch.zeros_like(motion), motion)
        return text_embeddings + motion[:, None, :].to(text_embeddings.dtype)
