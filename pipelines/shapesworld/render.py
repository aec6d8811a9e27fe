"""Rasterisation shared by still scenes and videos: anti-aliased shapes and backgrounds.

Pixel ``(row i, column j)`` covers the square ``[j, j+1) x [i, i+1)`` in
continuous image coordinates, so a box ``(x0, y0, x1, y1)`` in float pixels
lines up with the pixel grid and a shape of side ``s`` covers about ``s*s*fill``
pixels. Coverage is measured by supersampling, which gives each edge pixel the
fraction of it that the shape covers; the truth mask is ``coverage >= 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ..errors import InvalidInputError
from .vocab import SHAPES

Box = tuple[float, float, float, float]
Texture = Literal["plain", "gradient", "noise"]
TEXTURES: tuple[str, ...] = ("plain", "gradient", "noise")

# Sub-samples per pixel side when measuring coverage (16 samples per pixel).
SUPERSAMPLE = 4
# Grid of the low-frequency "noise" texture before it is resized to the frame.
NOISE_GRID = 4
# Rec. 601 luma weights: grayscale as OpenCV's cvtColor computes it.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Background:
    """A plain or lightly textured, low-saturation background."""

    # Mean RGB colour; its chroma (max - min channel) stays small so it never looks like an object.
    colour: tuple[int, int, int]
    # "plain", "gradient" (linear ramp in a random direction) or "noise" (smooth blobs).
    texture: Texture = "plain"
    # Peak grey-level change of the texture, added equally to all channels (no chroma added).
    amplitude: float = 0.0
    # Seed of the texture's direction or blobs, so the same Background renders the same pixels.
    texture_seed: int = 0

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise InvalidInputError(f"Unknown background texture {self.texture!r}; expected one of {TEXTURES}.")
        if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
            raise InvalidInputError(f"A background colour is three values in 0..255, got {self.colour!r}.")

    @property
    def luminance(self) -> float:
        """Mean grey level of the background (Rec. 601 luma)."""
        return float(np.dot(LUMA, np.asarray(self.colour, dtype=np.float32)))


def luminance(rgb: tuple[int, int, int]) -> float:
    """Grey level of an RGB colour (Rec. 601 luma), as the grayscale flow and Canny see it."""
    return float(np.dot(LUMA, np.asarray(rgb, dtype=np.float32)))


def render_background(background: Background, size: int) -> np.ndarray:
    """Render ``background`` as a float32 ``[size, size, 3]`` array of grey levels in 0..255."""
    base = np.broadcast_to(np.asarray(background.colour, dtype=np.float32), (size, size, 3))
    if background.texture == "plain" or background.amplitude == 0:
        return base.copy()
    rng = np.random.default_rng(background.texture_seed)
    if background.texture == "gradient":
        angle = rng.uniform(0.0, 2.0 * np.pi)
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
        field = ramp / max(float(np.abs(ramp).max()), 1e-6)
    else:
        grid = rng.uniform(-1.0, 1.0, (NOISE_GRID, NOISE_GRID)).astype(np.float32)
        field = np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), -1.0, 1.0)
    return np.clip(base + background.amplitude * field[..., None], 0.0, 255.0)


def shape_box(center: tuple[float, float], side: float) -> Box:
    """Axis-aligned box ``(x0, y0, x1, y1)`` of a shape of ``side`` pixels centred at ``center``."""
    half = side / 2.0
    return (center[0] - half, center[1] - half, center[0] + half, center[1] + half)


def shape_coverage(shape: str, box: Box, frame: int | tuple[int, int]) -> np.ndarray:
    """Fraction of each pixel covered by ``shape`` drawn in ``box``: float32 ``[H, W]`` in [0, 1].

    ``frame`` is the side of a square frame or its (height, width). In its box
    a circle is the inscribed ellipse, a square fills the box, and a triangle
    points up with its apex at the top centre and its base on the bottom edge
    (fill ratio 1/2). The shape may extend past the frame.
    """
    if shape not in SHAPES:
        raise InvalidInputError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")
    height, width = (frame, frame) if isinstance(frame, (int, np.integer)) else frame
    coverage = np.zeros((height, width), dtype=np.float32)
    x0, y0, x1, y1 = box
    cols = np.arange(max(0, int(np.floor(x0))), min(width, int(np.ceil(x1))))
    rows = np.arange(max(0, int(np.floor(y0))), min(height, int(np.ceil(y1))))
    if cols.size == 0 or rows.size == 0 or x1 <= x0 or y1 <= y0:
        return coverage
    offsets = (np.arange(SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    # Sample positions in box units: u, v in [-1, 1] across the box.
    u = ((cols[:, None] + offsets[None, :]).reshape(1, -1) - (x0 + x1) / 2.0) / ((x1 - x0) / 2.0)
    v = ((rows[:, None] + offsets[None, :]).reshape(-1, 1) - (y0 + y1) / 2.0) / ((y1 - y0) / 2.0)
    if shape == "circle":
        inside = u * u + v * v <= 1.0
    elif shape == "square":
        inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    else:
        inside = (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    block = inside.reshape(rows.size, SUPERSAMPLE, cols.size, SUPERSAMPLE).mean(axis=(1, 3))
    coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = block
    return coverage


def composite(canvas: np.ndarray, coverage: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Paint ``colour`` over the float canvas ``[H, W, 3]`` in place, weighted by ``coverage``."""
    alpha = coverage[..., None]
    canvas *= 1.0 - alpha
    canvas += alpha * np.asarray(colour, dtype=np.float32)


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Round a float canvas in 0..255 to ``uint8``."""
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
