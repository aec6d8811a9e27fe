"""What every matching method returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MatchResult:
    """Scores of one image against several captions (higher = better match)."""

    captions: list[str]
    scores: np.ndarray
    method: str
    unet_evaluations: int = 0
    seconds: float = 0.0
    # named parts of the score, each [C] (e.g. "attention", "denoising")
    terms: dict[str, np.ndarray] = field(default_factory=dict)

    def ranking(self) -> list[int]:
        """Caption indices, best first."""
        return [int(i) for i in np.argsort(-self.scores, kind="stable")]
