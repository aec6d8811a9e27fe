"""Condition maps as people draw them, made from ShapesWorld truth: wobbly outlines, scribbles, brushes.

The studio's canvas is :data:`CANVAS` pixels wide; a person traces an object
with a round brush several pixels thick, by hand: the line wobbles, is a little
off in position and size, and often does not close. Clean Canny of a render
looks nothing like that, so a model trained on clean maps alone ignores a
drawing. Every map here is painted on a black ``CANVAS`` canvas and brought to
the model's size by the studio's own :func:`.conditions.from_drawing`, so
training, the bench and the browser test see exactly what the tab makes.

- **outline** (canny, sketch): the object's contour, resampled, shifted and
  scaled a little, with a smooth random wobble, maybe left open, drawn with a
  brush of random width;
- **scribble** (sketch): a zigzag filling the object's interior, sometimes
  instead of the outline;
- **brush** (segmentation, depth): the wobbly outline filled with the shape's
  palette colour, or with the grey of the object's nearness.

Every draw is a function of a ``numpy`` generator, so a seed gives the same map.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..shapesworld.conditions import SEGMENTATION_PALETTE
from ..shapesworld.scene import DEPTH_FAR, DEPTH_NEAR, ObjectTruth, Scene
from .conditions import canonical_type, from_drawing

# The studio's drawing canvas (pixels a side) and the brush widths drawn with (the studio's default brush
# leaves lines about 20 canvas pixels wide, 5 at 64x64).
CANVAS = 256
BRUSH_WIDTHS = (6, 24)
# How far a hand strays, as fractions of the object's size: position, size, wobble amplitude.
SHIFT_FRACTION = 0.08
SCALE_RANGE = (0.9, 1.12)
WOBBLE_FRACTION = 0.05
# Share of outlines left open, and the largest gap (fraction of the contour).
OPEN_PROBABILITY = 0.4
MAX_GAP = 0.2
# Share of sketch maps drawn as a scribble instead of an outline.
SCRIBBLE_PROBABILITY = 0.25


def _contour(mask: np.ndarray, scale: float) -> np.ndarray:
    """The outer contour of ``mask`` in canvas coordinates, float [P, 2] (x, y)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=len)[:, 0, :].astype(np.float64)
    return (points + 0.5) * scale


def _resample(points: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced along the closed polyline ``points``."""
    closed = np.vstack([points, points[:1]])
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))]
    targets = np.linspace(0.0, lengths[-1], count, endpoint=False)
    return np.stack([np.interp(targets, lengths, closed[:, i]) for i in range(2)], axis=1)


def hand_contour(mask: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """The contour of ``mask`` (a ``size``-pixel frame) as a hand traces it on the canvas: float [P, 2]."""
    points = _resample(_contour(mask, scale), 96)
    centre = points.mean(axis=0)
    extent = float(np.ptp(points, axis=0).max()) or 1.0
    shift = rng.normal(0.0, SHIFT_FRACTION * extent, 2)
    stretch = rng.uniform(*SCALE_RANGE, 2)
    points = centre + (points - centre) * stretch + shift
    # Smooth wobble: a few low-frequency sinusoids along the contour, along its normal.
    phase = np.linspace(0.0, 2.0 * np.pi, len(points), endpoint=False)
    wobble = sum(rng.normal(0.0, WOBBLE_FRACTION * extent / k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
                 for k in (2, 3, 5))
    normal = points - points.mean(axis=0)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-6
    return points + normal * np.asarray(wobble)[:, None]


def _open(points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The contour as a stroke: closed, or rotated to start anywhere and cut short by a gap."""
    if rng.random() >= OPEN_PROBABILITY:
        return points, True
    start = int(rng.integers(len(points)))
    gap = max(1, int(rng.uniform(0.03, MAX_GAP) * len(points)))
    return np.roll(points, -start, axis=0)[: len(points) - gap], False


def _polyline(canvas: np.ndarray, points: np.ndarray, closed: bool, colour, width: int) -> None:
    cv2.polylines(canvas, [np.round(points).astype(np.int32)], closed, colour, width, lineType=cv2.LINE_AA)


def _scribble(canvas: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale: float, width: int) -> None:
    """A zigzag across the object's interior, back and forth at a random angle."""
    ys, xs = np.nonzero(mask)
    pts = (np.stack([xs, ys], axis=1) + 0.5) * scale
    angle = rng.uniform(0, np.pi)
    along, across = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    u, v = pts @ along, pts @ across
    rows = np.linspace(v.min(), v.max(), max(3, int((v.max() - v.min()) / (1.5 * width)) + 1))
    path = []
    for k, row in enumerate(rows):
        near = np.abs(v - row) <= scale
        if not near.any():
            continue
        ends = (u[near].min(), u[near].max())
        for end in (ends if k % 2 == 0 else ends[::-1]):
            path.append(end * along + row * across)
    if len(path) >= 2:
        path = np.array(path) + rng.normal(0.0, 0.02 * np.ptp(u), (len(path), 2))
        _polyline(canvas, path, False, (255, 255, 255), width)


def nearness_grey(obj: ObjectTruth) -> int:
    """The grey level of ``obj``'s depth in a depth map (near = bright), as :func:`.shapesworld.conditions.depth`."""
    return int(np.clip(round(255.0 * (DEPTH_FAR - obj.depth) / (DEPTH_FAR - DEPTH_NEAR)), 0, 255))


def draw_objects(objects: Sequence[ObjectTruth], kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``CANVAS`` x ``CANVAS`` RGB canvas with ``objects`` (masks of a ``size`` frame) drawn as ``kind``."""
    kind = canonical_type(kind)
    scale = CANVAS / size
    canvas = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    # Far objects first, so a nearer brush covers them (as in the scene).
    for obj in sorted(objects, key=lambda o: -o.depth):
        if not obj.mask.any():
            continue
        width = int(rng.integers(BRUSH_WIDTHS[0], BRUSH_WIDTHS[1] + 1))
        if kind == "sketch" and rng.random() < SCRIBBLE_PROBABILITY:
            _scribble(canvas, obj.mask, rng, scale, width)
            continue
        points = hand_contour(obj.mask, rng, scale)
        if kind in ("canny", "sketch"):
            stroke, closed = _open(points, rng)
            _polyline(canvas, stroke, closed, (255, 255, 255), width)
            continue
        fill = SEGMENTATION_PALETTE[obj.shape] if kind == "segmentation" else (nearness_grey(obj),) * 3
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], tuple(int(c) for c in fill))
    return canvas


def drawn_map(scene: Scene, kind: str, rng: np.random.Generator, objects: Sequence[int] | None = None,
              size: int | None = None) -> np.ndarray:
    """The condition map of ``scene``'s objects (all, or the indices ``objects``) drawn by hand as ``kind``.

    Painted on the studio's canvas and read back by :func:`.from_drawing` at
    ``size`` (default: the scene's size): uint8 ``[H, W]``, or ``[H, W, 3]``
    for segmentation.
    """
    chosen = scene.objects if objects is None else [scene.objects[i] for i in objects]
    return from_drawing(draw_objects(chosen, kind, rng, scene.size), kind, size or scene.size)
