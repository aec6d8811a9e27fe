"""Trajectories for Directional Motion Control: keyframed boxes per object phrase (thesis eq. 10.3-10.4).

Coordinates are fractions of the frame, ``(x0, y0, x1, y1)`` with x to the
right and y down, so one trajectory fits any resolution (:func:`to_pixels`).
A :class:`Trajectory` holds the keyframes of one object phrase; ``boxes(T)``
interpolates them to one box per frame, linearly or smoothly (monotone cubic,
which hits every keyframe exactly and never overshoots, so boxes stay inside
the frame). Before its first keyframe and after its last the box holds still.
:func:`boxes_from_points` is eq. 10.4 (a point path expanded by tolerances
Delta_x, Delta_y); :func:`preset_trajectory` draws the usual paths.

Bad input raises a subclass of :class:`~pipelines.errors.InvalidInputError`
naming the value: :class:`TooFewKeyframesError`, :class:`KeyframeOrderError`,
:class:`KeyframeRangeError`, :class:`BoxOutsideFrameError`,
:class:`BoxSizeError`, :class:`PhraseNotInPromptError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError

Box = tuple[float, float, float, float]
Interpolation = Literal["linear", "smooth"]
INTERPOLATIONS: tuple[str, ...] = ("linear", "smooth")
# A box side below this fraction of the frame is under one latent pixel of a 16x16 latent.
MIN_BOX_SIDE = 1.0 / 16
PRESETS: tuple[str, ...] = ("left to right", "right to left", "up", "down", "diagonal", "zigzag", "arc", "circle")
# Slack for boxes computed in floating point (a box edge at 1.0000001 is inside).
EPS = 1e-6


class TooFewKeyframesError(InvalidInputError):
    """A trajectory needs at least two keyframes."""


class KeyframeOrderError(InvalidInputError):
    """Keyframe frames must increase strictly."""


class KeyframeRangeError(InvalidInputError):
    """A keyframe lies before frame 0 or after the video's last frame."""


class BoxOutsideFrameError(InvalidInputError):
    """A box reaches outside the frame."""


class BoxSizeError(InvalidInputError):
    """A box has zero, negative or too small a side."""


class PhraseNotInPromptError(InvalidInputError):
    """The object phrase is not words of the prompt."""


def check_box(box: Sequence[float], what: str = "box") -> Box:
    """``box`` as four floats inside the unit frame with sides of at least :data:`MIN_BOX_SIDE`."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InvalidInputError(f"A {what} is four numbers (x0, y0, x1, y1), got {box!r}.") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InvalidInputError(f"The {what} {box!r} has a value that is not a finite number.")
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        raise BoxSizeError(f"The {what} {(x0, y0, x1, y1)} has zero or negative size (x1 must exceed x0, y1 y0).")
    if min(x0, y0) < -EPS or max(x1, y1) > 1 + EPS:
        raise BoxOutsideFrameError(
            f"The {what} {(x0, y0, x1, y1)} reaches outside the frame; coordinates are fractions in [0, 1]."
        )
    if min(x1 - x0, y1 - y0) < MIN_BOX_SIDE - EPS:
        raise BoxSizeError(
            f"The {what} {(x0, y0, x1, y1)} is too small: each side must be at least {MIN_BOX_SIDE:.4f} of the frame."
        )
    return (max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0))


@dataclass(frozen=True)
class Keyframe:
    """The box an object should occupy at one frame (0-based)."""

    frame: int
    box: Box


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes of the monotone cubic through (x, y): no overshoot between knots."""
    h = np.diff(x)
    delta = np.diff(y) / h
    slopes = np.zeros_like(y)
    if len(x) == 2:
        return np.full_like(y, delta[0])
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            slopes[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    for end, (d0, d1, h0, h1) in ((0, (delta[0], delta[1], h[0], h[1])), (-1, (delta[-1], delta[-2], h[-1], h[-2]))):
        slope = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if slope * d0 <= 0:
            slope = 0.0
        elif d0 * d1 < 0 and abs(slope) > abs(3 * d0):
            slope = 3 * d0
        slopes[end] = slope
    return slopes


def _pchip(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Monotone cubic Hermite interpolation of (x, y) at ``at`` (inside [x0, x_end])."""
    slopes = _pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    s = (at - x[k]) / h
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y[k] + h10 * h * slopes[k] + h01 * y[k + 1] + h11 * h * slopes[k + 1]


@dataclass(frozen=True)
class Trajectory:
    """Keyframed boxes for the object named by ``phrase`` (words of the prompt, e.g. "red circle")."""

    phrase: str
    keyframes: tuple[Keyframe, ...]
    interpolation: Interpolation = "linear"

    def __post_init__(self) -> None:
        if not isinstance(self.phrase, str) or not self.phrase.strip():
            raise InvalidInputError(f"A trajectory needs an object phrase, got {self.phrase!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise InvalidInputError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}.")
        keyframes = tuple(
            k if isinstance(k, Keyframe) else Keyframe(*k) for k in self.keyframes
        )
        if len(keyframes) < 2:
            raise TooFewKeyframesError(
                f"The trajectory of {self.phrase!r} has {len(keyframes)} keyframe(s); it needs at least two."
            )
        frames = []
        for i, key in enumerate(keyframes):
            if isinstance(key.frame, bool) or not float(key.frame).is_integer():
                raise InvalidInputError(f"Keyframe {i} of {self.phrase!r} has frame {key.frame!r}; frames are integers.")
            if key.frame < 0:
                raise KeyframeRangeError(f"Keyframe {i} of {self.phrase!r} is at frame {key.frame}, before frame 0.")
            frames.append(int(key.frame))
        for i in range(1, len(frames)):
            if frames[i] <= frames[i - 1]:
                raise KeyframeOrderError(
                    f"Keyframes of {self.phrase!r} must be in increasing frame order; frame {frames[i]} "
                    f"follows frame {frames[i - 1]}."
                )
        checked = tuple(
            Keyframe(f, check_box(k.box, f"box of {self.phrase!r} at frame {f}")) for f, k in zip(frames, keyframes)
        )
        object.__setattr__(self, "phrase", " ".join(self.phrase.split()))
        object.__setattr__(self, "keyframes", checked)

    @property
    def last_frame(self) -> int:
        return self.keyframes[-1].frame

    def check_frames(self, n_frames: int) -> None:
        """Raise :class:`KeyframeRangeError` if a keyframe lies beyond frame ``n_frames - 1``."""
        if self.last_frame >= n_frames:
            raise KeyframeRangeError(
                f"The trajectory of {self.phrase!r} has a keyframe at frame {self.last_frame}, beyond the last "
                f"frame {n_frames - 1} of a {n_frames}-frame video."
            )

    def boxes(self, n_frames: int) -> np.ndarray:
        """One box per frame, float64 ``[n_frames, 4]``; every keyframe's box is reproduced exactly."""
        self.check_frames(n_frames)
        x = np.array([k.frame for k in self.keyframes], dtype=np.float64)
        y = np.array([k.box for k in self.keyframes], dtype=np.float64)  # [K, 4]
        at = np.clip(np.arange(n_frames, dtype=np.float64), x[0], x[-1])
        if self.interpolation == "linear":
            out = np.stack([np.interp(at, x, y[:, c]) for c in range(4)], axis=1)
        else:
            out = np.stack([_pchip(x, y[:, c], at) for c in range(4)], axis=1)
        for key in self.keyframes:  # exact at the knots, whatever the rounding
            out[key.frame] = key.box
        return out

    def centres(self, n_frames: int) -> np.ndarray:
        """Box centres per frame ``[n_frames, 2]`` (the trajectory T of eq. 10.3, as fractions)."""
        boxes = self.boxes(n_frames)
        return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)

    def rows(self) -> list[list[float]]:
        """Keyframes as table rows ``[frame, x0, y0, x1, y1]``."""
        return [[k.frame, *k.box] for k in self.keyframes]

    @classmethod
    def from_rows(cls, phrase: str, rows, interpolation: Interpolation = "linear") -> "Trajectory":
        """A trajectory from table rows ``[frame, x0, y0, x1, y1]`` (blank rows skipped)."""
        keyframes = []
        for i, row in enumerate(rows):
            values = [v for v in row if v not in (None, "")]
            if not values:
                continue
            try:
                frame, *box = (float(v) for v in row)
            except (TypeError, ValueError):
                raise InvalidInputError(f"Row {i + 1} {list(row)!r} must be five numbers: frame, x0, y0, x1, y1.") from None
            if len(box) != 4:
                raise InvalidInputError(f"Row {i + 1} {list(row)!r} must be five numbers: frame, x0, y0, x1, y1.")
            if not frame.is_integer():
                raise InvalidInputError(f"Row {i + 1} has frame {frame!r}; frames are integers.")
            keyframes.append(Keyframe(int(frame), tuple(box)))
        return cls(phrase, tuple(keyframes), interpolation)


def boxes_from_points(points, tolerance: float | tuple[float, float]) -> np.ndarray:
    """Eq. 10.4: each point (x_i, y_i) becomes B_i = {|x - x_i| <= Delta_x, |y - y_i| <= Delta_y}.

    ``points`` ``[L, 2]`` and ``tolerance`` (Delta_x, Delta_y, or one value for
    both) are fractions of the frame; returns ``[L, 4]`` boxes, each checked
    to lie inside the frame.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise TooFewKeyframesError(f"A point path is at least two (x, y) points, got shape {list(points.shape)}.")
    dx, dy = (tolerance, tolerance) if np.isscalar(tolerance) else tolerance
    boxes = np.stack([points[:, 0] - dx, points[:, 1] - dy, points[:, 0] + dx, points[:, 1] + dy], axis=1)
    for i, box in enumerate(boxes):
        check_box(box, f"box around point {i} {tuple(points[i])}")
    return boxes


def trajectory_from_points(phrase: str, points, tolerance, frames: Sequence[int] | None = None) -> Trajectory:
    """A trajectory whose keyframes are the eq. 10.4 boxes of ``points`` (at ``frames``, default 0..L-1)."""
    boxes = boxes_from_points(points, tolerance)
    frames = range(len(boxes)) if frames is None else frames
    if len(frames) != len(boxes):
        raise InvalidInputError(f"{len(frames)} frames were given for {len(boxes)} points.")
    return Trajectory(phrase, tuple(Keyframe(int(f), tuple(b)) for f, b in zip(frames, boxes)))


def preset_points(name: str, n_frames: int, side: float = 0.3) -> np.ndarray:
    """Centres ``[n_frames, 2]`` of a preset path for a box of side ``side``, kept inside the frame."""
    if name not in PRESETS:
        raise InvalidInputError(f"Unknown trajectory preset {name!r}; choose one of {PRESETS}.")
    if not MIN_BOX_SIDE <= side <= 0.8:
        raise BoxSizeError(f"A preset's box side must be in [{MIN_BOX_SIDE:.4f}, 0.8] of the frame, got {side!r}.")
    if n_frames < 2:
        raise InvalidInputError(f"A trajectory spans at least 2 frames, got {n_frames!r}.")
    lo, hi = side / 2, 1 - side / 2
    mid = 0.5
    s = np.linspace(0.0, 1.0, n_frames)
    if name == "left to right":
        return np.stack([lo + (hi - lo) * s, np.full_like(s, mid)], axis=1)
    if name == "right to left":
        return np.stack([hi - (hi - lo) * s, np.full_like(s, mid)], axis=1)
    if name == "up":
        return np.stack([np.full_like(s, mid), hi - (hi - lo) * s], axis=1)
    if name == "down":
        return np.stack([np.full_like(s, mid), lo + (hi - lo) * s], axis=1)
    if name == "diagonal":
        return np.stack([lo + (hi - lo) * s, hi - (hi - lo) * s], axis=1)
    if name == "zigzag":  # two teeth: down-up-down-up across the frame
        tooth = 1 - np.abs(((s * 4) % 2) - 1)
        return np.stack([lo + (hi - lo) * s, lo + (hi - lo) * (0.2 + 0.6 * tooth)], axis=1)
    if name == "arc":  # a half-parabola bump, like a bounce
        return np.stack([lo + (hi - lo) * s, hi - (hi - lo) * 4 * s * (1 - s)], axis=1)
    angle = 2 * np.pi * s  # circle, starting at the left and going clockwise on screen
    radius = (hi - lo) / 2
    return np.stack([mid - radius * np.cos(angle), mid - radius * np.sin(angle)], axis=1)


def preset_trajectory(name: str, phrase: str, n_frames: int = 16, side: float = 0.3) -> Trajectory:
    """A preset path (:data:`PRESETS`) as one keyframe per frame, boxes of side ``side`` (eq. 10.4)."""
    return trajectory_from_points(phrase, preset_points(name, n_frames, side), side / 2)


def phrase_words(prompt: str) -> list[str]:
    """The prompt's words, lower case, punctuation dropped (what a phrase may be built from)."""
    return re.findall(r"[\w']+", prompt.lower())


def check_phrase(prompt: str, phrase: str) -> str:
    """``phrase`` if its words appear consecutively in ``prompt`` (case-insensitive), else raise."""
    words, wanted = phrase_words(prompt), phrase_words(phrase)
    if not wanted:
        raise PhraseNotInPromptError(f"The object phrase {phrase!r} has no words.")
    for start in range(len(words) - len(wanted) + 1):
        if words[start: start + len(wanted)] == wanted:
            return " ".join(wanted)
    raise PhraseNotInPromptError(f"The object phrase {phrase!r} is not in the prompt {prompt!r}.")


def check_trajectories(prompt: str, trajectories, n_frames: int) -> dict[str, np.ndarray]:
    """Validated per-frame boxes ``{phrase: [n_frames, 4]}`` from Trajectory objects or ``{phrase: boxes}``.

    ``trajectories`` is a sequence of :class:`Trajectory` or a mapping from a
    phrase to a Trajectory or to an array of per-frame boxes (fractions).
    """
    items: list[tuple[str, object]]
    if isinstance(trajectories, Mapping):
        items = list(trajectories.items())
    else:
        items = [(t.phrase, t) for t in trajectories]
    if not items:
        raise InvalidInputError("No trajectory was given: add at least one object with keyframes.")
    out: dict[str, np.ndarray] = {}
    for phrase, value in items:
        phrase = check_phrase(prompt, phrase)
        if phrase in out:
            raise InvalidInputError(f"The object phrase {phrase!r} has two trajectories; give each object one.")
        if isinstance(value, Trajectory):
            boxes = value.boxes(n_frames)
        else:
            boxes = np.asarray(value, dtype=np.float64)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise InvalidInputError(f"Boxes of {phrase!r} must be [frames, 4], got shape {list(boxes.shape)}.")
            if len(boxes) != n_frames:
                raise KeyframeRangeError(f"{phrase!r} has {len(boxes)} boxes for a {n_frames}-frame video.")
            boxes = np.array([check_box(b, f"box of {phrase!r} at frame {i}") for i, b in enumerate(boxes)])
        out[phrase] = boxes
    return out


def to_pixels(boxes: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """Fraction boxes ``[..., 4]`` to pixel boxes for a ``width`` x ``height`` frame."""
    height = width if height is None else height
    return np.asarray(boxes, dtype=np.float64) * np.array([width, height, width, height], dtype=np.float64)


def from_pixels(boxes: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """Pixel boxes ``[..., 4]`` to fractions of a ``width`` x ``height`` frame."""
    height = width if height is None else height
    return np.asarray(boxes, dtype=np.float64) / np.array([width, height, width, height], dtype=np.float64)
