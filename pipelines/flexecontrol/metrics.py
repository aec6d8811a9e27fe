"""Controllability numbers: SSIM between edge maps, mIoU between segmentations (thesis table 9.2), and
object placement: is each object of the condition where the condition put it (box IoU), with its words?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InvalidInputError
from ..shapesworld.conditions import CANNY_HIGH, CANNY_LOW, SEGMENTATION_PALETTE, segmentation_from_detections
from ..shapesworld.detector import Detection, detect
from ..shapesworld.metrics import box_iou
from ..shapesworld.scene import ObjectTruth
from ..utils import to_rgb_array

_PALETTE = np.array(list(SEGMENTATION_PALETTE.values()), dtype=np.int32)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two grey images (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, 8-bit constants)."""
    if a.shape != b.shape or a.ndim != 2:
        raise InvalidInputError(f"SSIM needs two grey images of one shape, got {a.shape} and {b.shape}.")
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(index.mean())


def image_edges(image) -> np.ndarray:
    """Canny edges of an image with the ShapesWorld thresholds (uint8 [H, W], 255 on edges)."""
    return cv2.Canny(cv2.cvtColor(to_rgb_array(image), cv2.COLOR_RGB2GRAY), CANNY_LOW, CANNY_HIGH)


def edge_ssim(condition_edges: np.ndarray, image) -> float:
    """SSIM between a condition's edge map and the Canny edges of the generated ``image``."""
    edges = image_edges(image)
    if condition_edges.shape != edges.shape:
        condition_edges = cv2.resize(condition_edges, edges.shape[::-1], interpolation=cv2.INTER_NEAREST)
    return ssim(condition_edges, edges)


def palette_classes(segmentation: np.ndarray) -> np.ndarray:
    """Class index per pixel (order of ``SEGMENTATION_PALETTE``, 0 = background) of a palette map."""
    distances = np.abs(segmentation[..., None, :].astype(np.int32) - _PALETTE).sum(axis=-1)
    return distances.argmin(axis=-1)


def segmentation_miou(condition: np.ndarray, image) -> float:
    """Mean IoU between a segmentation condition and the detector's segmentation of ``image``.

    Classes are the palette's (background, circle, square, triangle); the mean
    runs over the classes present in either map.
    """
    rgb = to_rgb_array(image)
    predicted = palette_classes(segmentation_from_detections(detect(rgb), rgb.shape[:2]))
    target = palette_classes(condition if condition.shape[:2] == rgb.shape[:2]
                             else cv2.resize(condition, rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST))
    ious = []
    for label in np.union1d(np.unique(predicted), np.unique(target)):
        inter = np.logical_and(predicted == label, target == label).sum()
        union = np.logical_or(predicted == label, target == label).sum()
        ious.append(inter / union)
    return float(np.mean(ious))


# An object counts as placed when a detection's box overlaps its box by at least this IoU.
PLACEMENT_IOU = 0.5


@dataclass
class Placement:
    """Which of a condition's objects the detector found in the output where they were drawn."""

    # One flag per object: some detection's box has IoU >= PLACEMENT_IOU with the object's box.
    placed: list[bool]
    # ... and that detection has the object's shape and colour.
    right: list[bool]


def object_placement(objects: Sequence[ObjectTruth], image, detections: list[Detection] | None = None,
                     iou: float = PLACEMENT_IOU) -> Placement:
    """For each object the condition drew, is it in ``image`` where it was drawn (and with its shape and colour)?

    ``objects`` carry the truth boxes, shapes and colours (ShapesWorld scenes);
    the detector (or ``detections``) reads the image. A detection serves one
    object at most, the best-overlapping right one first.
    """
    found = detect(to_rgb_array(image)) if detections is None else list(detections)
    placed, right, used = [], [], set()
    for obj in objects:
        overlaps = [(box_iou(obj.box, d.box), k) for k, d in enumerate(found) if k not in used]
        hits = [(o, k) for o, k in overlaps if o >= iou]
        good = [(o, k) for o, k in hits if found[k].shape == obj.shape and found[k].colour == obj.colour]
        chosen = max(good or hits, default=None)
        if chosen is not None:
            used.add(chosen[1])
        placed.append(chosen is not None)
        right.append(bool(good))
    return Placement(placed, right)


@dataclass
class DrawnObject:
    """An object a condition map shows: its box in the map's pixels and its shape, when the map says it."""

    box: tuple[float, float, float, float]
    # "circle", "square" or "triangle"; None when the detector cannot name it.
    shape: str | None
    # bool [H, W]: the object's filled region.
    mask: np.ndarray


# Strokes and segments smaller than this share of the frame are specks, not objects.
MIN_OBJECT_FRACTION = 0.004


def _shape_of_region(region: np.ndarray) -> str | None:
    """The detector's shape for a filled region, painted in a saturated colour on grey."""
    canvas = np.full((*region.shape, 3), 128, np.uint8)
    canvas[region] = (220, 40, 40)
    found = detect(canvas)
    return max(found, key=lambda d: (d.mask & region).sum()).shape if found else None


def _components(mask: np.ndarray) -> list[np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    least = max(4, MIN_OBJECT_FRACTION * mask.size)
    return [labels == k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= least]


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def drawn_objects(kind: str, condition: np.ndarray) -> list[DrawnObject]:
    """The objects a condition map shows, read from the map alone (no truth needed).

    - canny / sketch: each stroke (connected lines) is one object; its convex
      hull is the object's region (ShapesWorld shapes are convex, and a hull
      also closes an outline left open), whose shape the detector names;
    - segmentation: each connected segment of one palette colour, with that colour's shape;
    - depth: not read (a depth map's background is a ramp, not a colour), so no objects.
    """
    if kind == "segmentation":
        classes = palette_classes(condition)
        names = list(SEGMENTATION_PALETTE)
        return [DrawnObject(_mask_box(m), names[c], m) for c in range(1, len(names)) for m in _components(classes == c)]
    if kind == "depth":
        return []
    grey = condition if condition.ndim == 2 else cv2.cvtColor(condition, cv2.COLOR_RGB2GRAY)
    objects = []
    for stroke in _components(grey > 0):
        points = cv2.findNonZero(stroke.astype(np.uint8))
        hull = np.zeros(stroke.shape, np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
        region = hull > 0
        objects.append(DrawnObject(_mask_box(region), _shape_of_region(region), region))
    return objects


def placement_of_drawn(objects: Sequence[DrawnObject], image, detections: list[Detection] | None = None,
                       iou: float = PLACEMENT_IOU) -> list[Detection | None]:
    """For each drawn object, the detection in ``image`` at its place (box IoU >= ``iou``) with its shape
    when the map tells it (else any), or None. A detection serves one object at most."""
    found = detect(to_rgb_array(image)) if detections is None else list(detections)
    out, used = [], set()
    for obj in objects:
        hits = [(box_iou(obj.box, d.box), k) for k, d in enumerate(found)
                if k not in used and (obj.shape is None or d.shape == obj.shape)]
        best = max([h for h in hits if h[0] >= iou], default=None)
        if best is not None:
            used.add(best[1])
        out.append(None if best is None else found[best[1]])
    return out
