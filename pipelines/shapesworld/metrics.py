"""Numbers that judge images against truth or captions: IoU, centroid distance, AP, relations, verdicts.

Boxes are ``(x0, y0, x1, y1)`` in float pixels everywhere (see :mod:`.render`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .captions import CaptionSpec, ObjectSpec, parse_caption
from .detector import Detection, detect
from .render import Box
from .vocab import RELATIONS

# "A left of B" holds when B's centre is right of A's centre by at least this
# fraction of the two boxes' mean width (heights for above / below).
RELATION_MARGIN = 0.5


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 when either is empty."""
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_center(box: Box) -> tuple[float, float]:
    """Centre (x, y) of a box."""
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def centroid_distance(a: Box, b: Box, size: int | tuple[int, int]) -> float:
    """Distance between box centres divided by the frame diagonal, thesis 10.4 "normalized to 1".

    ``size`` is the frame side, or (width, height). Two centres inside the
    frame are at most one diagonal apart, so the result lies in [0, 1].
    """
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"Frame size must be positive, got {size!r}.")
    (ax, ay), (bx, by) = box_center(a), box_center(b)
    return float(math.hypot(ax - bx, ay - by) / math.hypot(width, height))


def average_precision(
    predictions: Sequence[Sequence[tuple[Box, float]]],
    truths: Sequence[Sequence[Box]],
    iou_threshold: float = 0.5,
) -> float:
    """Average precision over many images (PASCAL VOC, all-point interpolation).

    ``predictions[i]`` lists (box, score) for image ``i`` and ``truths[i]`` its
    true boxes. A prediction is a true positive when it overlaps a not yet
    matched true box of its image with IoU >= ``iou_threshold`` (best scores
    are matched first). With no true boxes at all, AP is 1 if nothing was
    predicted and 0 otherwise.
    """
    if len(predictions) != len(truths):
        raise InvalidInputError(f"{len(predictions)} prediction lists for {len(truths)} truth lists.")
    n_true = sum(len(t) for t in truths)
    ranked = sorted(
        ((score, image, box) for image, preds in enumerate(predictions) for box, score in preds),
        key=lambda item: -item[0],
    )
    if n_true == 0:
        return 1.0 if not ranked else 0.0
    matched = [np.zeros(len(t), dtype=bool) for t in truths]
    hits = np.zeros(len(ranked))
    for rank, (_, image, box) in enumerate(ranked):
        ious = [box_iou(box, truth) for truth in truths[image]]
        if ious:
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold and not matched[image][best]:
                matched[image][best] = True
                hits[rank] = 1.0
    true_positives = np.cumsum(hits)
    recall = np.concatenate([[0.0], true_positives / n_true])
    precision = np.concatenate([[1.0], true_positives / np.arange(1, len(ranked) + 1)])
    # Make precision monotone from the right, then integrate over recall steps.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def ap50(predictions: Sequence[tuple[Box, float]], truths: Sequence[Box]) -> float:
    """Average precision at IoU 0.5 for one image: (box, score) predictions against true boxes."""
    return average_precision([predictions], [truths], 0.5)


def relation_holds(box_a: Box, box_b: Box, relation: str, margin: float = RELATION_MARGIN) -> bool:
    """True if "A <relation> B" holds by centroid order with a margin.

    "left of": B's centre x exceeds A's by ``margin`` x the mean of their widths;
    "above": B's centre y exceeds A's by ``margin`` x the mean of their heights
    (y points down); "right of" and "below" are the mirror cases.
    """
    if relation not in RELATIONS:
        raise InvalidInputError(f"Unknown relation {relation!r}; expected one of {RELATIONS}.")
    (ax, ay), (bx, by) = box_center(box_a), box_center(box_b)
    if relation in ("left of", "right of"):
        gap = (bx - ax) if relation == "left of" else (ax - bx)
        extent = ((box_a[2] - box_a[0]) + (box_b[2] - box_b[0])) / 2.0
    else:
        gap = (by - ay) if relation == "above" else (ay - by)
        extent = ((box_a[3] - box_a[1]) + (box_b[3] - box_b[1])) / 2.0
    return gap >= margin * extent


@dataclass
class Verdict:
    """Whether an image shows what a caption says, and which part failed."""

    # The image shows every named object and the relation (if any).
    ok: bool
    # Every colour word of the caption is the colour of some detection.
    colour_ok: bool
    # Every shape word of the caption is the shape of some detection.
    shape_ok: bool
    # Every named object (colour and shape together) is found, each by its own detection.
    both_present: bool
    # The relation holds for some such assignment; None when the caption states no relation.
    relation_ok: bool | None
    # The parsed caption.
    spec: CaptionSpec
    # For each caption object, the detection assigned to it (None if not found).
    matched: list[Detection | None]
    # Everything the detector found.
    detections: list[Detection]


def _matches(obj: ObjectSpec, detection: Detection) -> bool:
    return detection.colour == obj.colour and detection.shape == obj.shape


def caption_verdict(image, caption: str, detections: list[Detection] | None = None) -> Verdict:
    """Does ``image`` contain what ``caption`` says? Uses :func:`.detect` and :func:`.parse_caption`.

    Objects are matched one detection each (extra objects in the image are
    allowed). Among the assignments where every object is found, the verdict
    prefers one where the relation holds, then the highest total confidence.
    A video caption's motion is not judged here (one image has no motion).
    Pass ``detections`` to reuse a detector run.
    """
    spec = parse_caption(caption)
    found = detect(image) if detections is None else detections
    colours_seen = {d.colour for d in found}
    shapes_seen = {d.shape for d in found}
    colour_ok = all(obj.colour in colours_seen for obj in spec.objects)
    shape_ok = all(obj.shape in shapes_seen for obj in spec.objects)

    candidates = [[d for d in found if _matches(obj, d)] for obj in spec.objects]
    best: tuple[bool, float] | None = None
    matched: list[Detection | None] = [c[0] if c else None for c in candidates]
    for assignment in itertools.product(*candidates):
        if len({id(d) for d in assignment}) < len(assignment):
            continue
        holds = spec.relation is None or relation_holds(assignment[0].box, assignment[1].box, spec.relation)
        key = (holds, sum(d.confidence for d in assignment))
        if best is None or key > best:
            best, matched = key, list(assignment)
    both_present = best is not None
    relation_ok = None if spec.relation is None else bool(best is not None and best[0])
    return Verdict(
        ok=both_present and relation_ok is not False,
        colour_ok=colour_ok,
        shape_ok=shape_ok,
        both_present=both_present,
        relation_ok=relation_ok,
        spec=spec,
        matched=matched,
        detections=found,
    )
