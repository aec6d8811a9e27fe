"""A pixel detector for ShapesWorld objects in any RGB image (clean, blurred, noisy, generated).

1. **Colour.** Chroma (max - min channel) separates objects from the
   low-saturation background: pixels at least :data:`CHROMA_THRESHOLD` above
   the image's median chroma form 8-connected components. Each pixel votes for
   the palette colour of nearest hue, weighted by its chroma; a component whose
   winner holds less than :data:`COLOUR_PURITY` of the vote is split into one
   region per colour (touching objects in generated images). Regions under
   ``min_area`` go.
2. **Coverage (matting).** A pixel that an object covers a fraction ``a`` of
   has colour ``a * C + (1 - a) * B`` for object colour ``C`` and background
   ``B``; so ``a`` is the pixel's projection onto the segment from ``B`` to
   ``C``. ``B`` is the median colour of clear pixels around the component,
   ``C`` the median colour of the region's most saturated half (by 3x3-median
   chroma). ``alpha`` is computed on the region and a one-pixel ring and not
   clipped, so noise averages out; its sum, centroid and spread do not change
   under blur. The mask is ``alpha >= 0.5``.
3. **Shape, by analysis by synthesis.** For each shape the box of the ideal
   shape with the same area, centroid and x/y spread is computed (the fill
   ratio is pi/4, 1 or 1/2; a triangle's centre of mass lies 2/3 down its box).
   The shape is rendered in that box, blurred by each of :data:`BLUR_STEPS`
   (fractions of its side) and compared with ``alpha``; the error of its best
   blur, per pixel of area, is the shape's misfit. The shape with the least
   misfit wins and its box is the detection's box.

Confidence = colour purity x the shape's probability, a softmax of
``-misfit / SHAPE_TEMPERATURE`` over the three shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InvalidInputError
from ..utils import to_rgb_array
from .render import Box, shape_coverage
from .vocab import COLOURS, SHAPES, hue_degrees

# Least chroma above the background's (median) chroma for a pixel to belong to an object.
CHROMA_THRESHOLD = 30.0
# A component whose main colour holds less than this share of the chroma vote is split by colour.
COLOUR_PURITY = 0.8
# Default least mask area of a detection: this fraction of the image, at least MIN_AREA_PIXELS.
MIN_AREA_FRACTION = 0.004
MIN_AREA_PIXELS = 4.0
# Region pixels above this percentile of 3x3-median-filtered chroma give the object's full colour.
CORE_PERCENTILE = 50.0
# Least clear pixels around a component for a local background colour (else the image's is used).
MIN_BACKGROUND_PIXELS = 8
# Gaussian blurs tried when fitting a shape, as fractions of the shape's side.
BLUR_STEPS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15)
# Misfit scale of the shape softmax (squared coverage error per pixel of area).
SHAPE_TEMPERATURE = 0.01
# Ideal shapes: (fill ratio of the box, centre of mass as a fraction of the box
# height from the top, variance ratio x/y), as drawn by ``render.shape_coverage``.
SHAPE_MODELS: dict[str, tuple[float, float, float]] = {
    "circle": (np.pi / 4, 0.5, 1.0),
    "square": (1.0, 0.5, 1.0),
    "triangle": (0.5, 2.0 / 3.0, 0.75),
}

_PALETTE_NAMES = tuple(COLOURS)
_PALETTE_HUES = np.array([hue_degrees(COLOURS[name]) for name in _PALETTE_NAMES], dtype=np.float32)


@dataclass
class Detection:
    """One object found in an image."""

    colour: str
    shape: str
    # (x0, y0, x1, y1) in float pixels, the same convention as the scene truth.
    box: Box
    # bool [H, W]: pixels at least half covered.
    mask: np.ndarray
    # In [0, 1]: colour purity x shape probability.
    confidence: float
    # Coverage-weighted centre (x, y) in pixels.
    centroid: tuple[float, float]
    # Soft area in pixels (sum of coverage).
    area: float
    # Probability of each shape.
    shape_scores: dict[str, float]


def _nearest_colour(hue: np.ndarray) -> np.ndarray:
    """Index into the palette of the nearest hue (circular distance in degrees)."""
    diff = np.abs(hue[..., None] - _PALETTE_HUES)
    return np.argmin(np.minimum(diff, 360.0 - diff), axis=-1)


def _fitted_box(shape: str, area: float, centroid: tuple[float, float], spread: tuple[float, float]) -> Box:
    """The box of the ideal ``shape`` with this coverage area, centroid and x/y variances."""
    fill, centre_of_mass, variance_ratio = SHAPE_MODELS[shape]
    aspect = np.sqrt(max(spread[0] / max(spread[1], 1e-6) / variance_ratio, 1e-6))
    width, height = np.sqrt(area / fill * aspect), np.sqrt(area / fill / aspect)
    cx, cy = centroid[0], centroid[1] - (centre_of_mass - 0.5) * height
    return (float(cx - width / 2), float(cy - height / 2), float(cx + width / 2), float(cy + height / 2))


def _shape_misfit(alpha: np.ndarray, shape: str, box: Box, area: float) -> float:
    """Least squared error per pixel of area between ``alpha`` and ``shape`` in ``box``, over blurs."""
    template = shape_coverage(shape, box, alpha.shape)
    side = float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
    errors = []
    for step in BLUR_STEPS:
        blurred = cv2.GaussianBlur(template, (0, 0), step * side) if step > 0 else template
        errors.append(float(np.square(blurred - alpha).sum()))
    return min(errors) / max(area, 1e-6)


def _measure(
    region: np.ndarray,
    rgb: np.ndarray,
    smooth_chroma: np.ndarray,
    background: np.ndarray,
    colour: str,
    purity: float,
    min_area: float,
) -> Detection | None:
    """Turn one colour region (bool mask of a window) into a Detection in window coordinates."""
    core = region & (smooth_chroma >= np.percentile(smooth_chroma[region], CORE_PERCENTILE))
    direction = np.median(rgb[core], axis=0) - background
    ring = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    projection = (rgb - background) @ direction / max(float(direction @ direction), 1e-6)
    alpha = np.where(ring, projection, 0.0).astype(np.float32)
    mask = alpha >= 0.5
    area = float(alpha.sum())
    if mask.sum() < min_area or area <= 0:
        return None
    ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]] + 0.5
    centroid = (float((alpha * xs).sum() / area), float((alpha * ys).sum() / area))
    spread = (
        max(float((alpha * (xs - centroid[0]) ** 2).sum() / area), 1e-6),
        max(float((alpha * (ys - centroid[1]) ** 2).sum() / area), 1e-6),
    )
    boxes = {shape: _fitted_box(shape, area, centroid, spread) for shape in SHAPES}
    misfits = np.array([_shape_misfit(alpha, shape, boxes[shape], area) for shape in SHAPES])
    probabilities = np.exp(-(misfits - misfits.min()) / SHAPE_TEMPERATURE)
    probabilities /= probabilities.sum()
    best = int(np.argmax(probabilities))
    return Detection(
        colour=colour,
        shape=SHAPES[best],
        box=boxes[SHAPES[best]],
        mask=mask,
        confidence=float(np.clip(purity * probabilities[best], 0.0, 1.0)),
        centroid=centroid,
        area=area,
        shape_scores={shape: float(p) for shape, p in zip(SHAPES, probabilities)},
    )


def _to_image(detection: Detection, top: int, left: int, height: int, width: int) -> Detection:
    """Move a detection measured in a window at (top, left) into image coordinates."""
    mask = np.zeros((height, width), dtype=bool)
    window = detection.mask
    mask[top : top + window.shape[0], left : left + window.shape[1]] = window
    x0, y0, x1, y1 = detection.box
    detection.box = (x0 + left, y0 + top, x1 + left, y1 + top)
    detection.centroid = (detection.centroid[0] + left, detection.centroid[1] + top)
    detection.mask = mask
    return detection


def detect(image, min_area: float | None = None) -> list[Detection]:
    """Find the coloured circles, squares and triangles in ``image`` (array or PIL, any size).

    ``min_area`` is the least mask area in pixels (default: 0.4% of the image,
    at least 4 pixels). The image's median chroma is taken as the background's,
    so objects must cover less than half of the image. Detections are sorted by
    confidence, highest first.
    """
    rgb = to_rgb_array(image).astype(np.float32)
    height, width = rgb.shape[:2]
    if min_area is None:
        min_area = max(MIN_AREA_PIXELS, MIN_AREA_FRACTION * height * width)
    elif min_area < 0:
        raise InvalidInputError(f"min_area must be >= 0, got {min_area}.")

    # 1. Chroma, hue, candidate pixels, background colour away from them.
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    smooth_chroma = cv2.medianBlur(chroma, 3)
    colour_index = _nearest_colour(cv2.cvtColor(rgb / 255.0, cv2.COLOR_RGB2HSV)[..., 0])
    candidate = ((chroma - float(np.median(chroma))) >= CHROMA_THRESHOLD).astype(np.uint8)
    clear = cv2.dilate(candidate, np.ones((3, 3), np.uint8)) == 0
    global_background = np.median(rgb[clear], axis=0) if clear.any() else np.median(rgb.reshape(-1, 3), axis=0)

    # Components, each in a window with a 2-pixel margin; colour vote; split of mixed ones.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate, connectivity=8)
    detections = []
    for label in range(1, count):
        x, y, w, h, pixels = (int(v) for v in stats[label])
        if pixels < min_area:
            continue
        top, left = max(0, y - 2), max(0, x - 2)
        window = (slice(top, min(height, y + h + 2)), slice(left, min(width, x + w + 2)))
        component = labels[window] == label
        window_colours = colour_index[window]
        votes = np.bincount(window_colours[component], weights=chroma[window][component], minlength=len(_PALETTE_NAMES))
        winner = int(votes.argmax())
        purity = float(votes[winner] / votes.sum())
        if purity >= COLOUR_PURITY:
            regions = [(winner, component)]
        else:
            regions = []
            for index in np.flatnonzero(votes):
                sub_count, sub_labels = cv2.connectedComponents(
                    (component & (window_colours == index)).astype(np.uint8), connectivity=8
                )
                regions += [(int(index), sub_labels == sub) for sub in range(1, sub_count)]

        # 2-3. Coverage and shape of each region, against the background around it.
        local = clear[window]
        background = (
            np.median(rgb[window][local], axis=0) if local.sum() >= MIN_BACKGROUND_PIXELS else global_background
        )
        for index, region in regions:
            if region.sum() < min_area:
                continue
            detection = _measure(
                region,
                rgb[window],
                smooth_chroma[window],
                background,
                _PALETTE_NAMES[index],
                purity,
                min_area,
            )
            if detection is not None:
                detections.append(_to_image(detection, top, left, height, width))
    return sorted(detections, key=lambda d: -d.confidence)
