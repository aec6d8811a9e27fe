"""Did the object follow the path, at the asked speed? (thesis 10.4.2)

Per frame, a detector finds the object named by the phrase: the ShapesWorld
pixel detector for the tiny pack (the phrase's colour and shape words), or
OWL-ViT (the thesis' detector) through transformers' zero-shot object
detection for hub models. Against the target boxes:

- **mIoU**: mean IoU over frames (a frame with no detection counts 0);
- **AP50**: average precision at IoU 0.5, over frames, detections ranked by confidence;
- **CD**: centroid distance over the frame diagonal ("normalized to 1"), over frames with a detection;
- **hit rate**: share of frames whose detected centre lies inside the target box;
- **plausible**: share of frames whose detection has the phrase's shape and colour
  and a size within 2x of a reference size (the unguided median in the bench),
  so that painting a bar that fills the box does not count (the issue's warning);
- **motion alignment**: |measured intensity - requested| / 10, the measured
  intensity being the Farneback magnitude in level units (continuous), as in
  ``shapesworld.motion_intensity``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InvalidInputError
from ..shapesworld import COLOURS, SHAPES, box_iou, centroid_distance, detect, motion_intensity
from ..shapesworld.metrics import average_precision
from ..shapesworld.video import INTENSITY_STEP, VIDEO_SIDE_RANGE
from .trajectory import to_pixels

# A detection is plausible if its size (sqrt of its area) is within this factor of the reference.
PLAUSIBLE_SIZE_FACTOR = 2.0


@dataclass
class FrameDetection:
    """The phrase's object in one frame, or nothing (box None)."""

    box: tuple[float, float, float, float] | None  # pixels
    confidence: float = 0.0
    # Whether colour and shape match the phrase (always True for OWL-ViT, which is asked for the phrase).
    matches: bool = False
    # sqrt of the object's area in pixels.
    size: float = 0.0


@dataclass
class TrackMetrics:
    miou: float
    ap50: float
    cd: float
    hit_rate: float
    plausible: float
    detected: float

    def as_dict(self) -> dict:
        return {k: round(v, 4) if np.isfinite(v) else None for k, v in asdict(self).items()}


def phrase_object(phrase: str) -> tuple[str | None, str | None]:
    """The ShapesWorld colour and shape words of a phrase (None where it names none)."""
    words = phrase.lower().split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    return colour, shape


def shapes_detections(frames: np.ndarray, phrase: str) -> list[FrameDetection]:
    """Per frame, the best ShapesWorld detection for the phrase: right colour and shape first, then right colour."""
    colour, shape = phrase_object(phrase)
    if colour is None and shape is None:
        raise InvalidInputError(f"{phrase!r} names no ShapesWorld colour or shape; use OWL-ViT for other phrases.")
    out = []
    for frame in frames:
        found = detect(frame)
        exact = [d for d in found if (colour is None or d.colour == colour) and (shape is None or d.shape == shape)]
        loose = [d for d in found if colour is not None and d.colour == colour]
        pool = exact or loose
        if not pool:
            out.append(FrameDetection(None))
            continue
        best = max(pool, key=lambda d: d.confidence)
        out.append(FrameDetection(tuple(float(v) for v in best.box), float(best.confidence), bool(exact),
                                  float(np.sqrt(max(best.area, 0.0)))))
    return out


def owlvit_from_manager(manager) -> tuple:
    """The preset's ``detector`` (OWL-ViT) and its processor, each loaded once per model manager."""

    def processor():
        from transformers import OwlViTProcessor

        return OwlViTProcessor.from_pretrained(manager.source_location("detector"))

    return manager.get("detector"), manager.derived("owlvit-processor", processor)


def owlvit_detections(frames: np.ndarray, phrase: str, model, processor) -> list[FrameDetection]:
    """Per frame, OWL-ViT's best box for the text query ``phrase`` (zero-shot object detection)."""
    import torch

    height, width = frames.shape[1:3]
    inputs = processor(text=[[phrase]] * len(frames), images=list(frames), return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    scores = outputs.logits[..., 0].sigmoid()  # [T, patches]
    best = scores.argmax(dim=1)
    out = []
    for t in range(len(frames)):
        cx, cy, w, h = outputs.pred_boxes[t, best[t]].tolist()  # normalised centre and size
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        out.append(FrameDetection(box, float(scores[t, best[t]]), True, float(np.sqrt(w * width * h * height))))
    return out


def typical_size(frame_side: int) -> float:
    """The side of a ShapesWorld video object, midway in its range: the reference size without an unguided run."""
    return float(np.mean(VIDEO_SIDE_RANGE) * frame_side)


def track_metrics(detections: list[FrameDetection], target_boxes: np.ndarray, frame_side: int,
                  reference_size: float | None = None) -> TrackMetrics:
    """mIoU, AP50, CD, hit rate and plausible share of per-frame detections against target boxes (fractions)."""
    targets = to_pixels(target_boxes, frame_side)
    if len(detections) != len(targets):
        raise InvalidInputError(f"{len(detections)} frames of detections for {len(targets)} target boxes.")
    reference = reference_size or typical_size(frame_side)
    ious, cds, hits, plausible = [], [], [], []
    predictions = []
    for det, target in zip(detections, targets):
        target = tuple(float(v) for v in target)
        if det.box is None:
            ious.append(0.0)
            hits.append(False)
            plausible.append(False)
            predictions.append([])
            continue
        ious.append(box_iou(det.box, target))
        cds.append(centroid_distance(det.box, target, frame_side))
        cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
        hits.append(target[0] <= cx <= target[2] and target[1] <= cy <= target[3])
        ratio = det.size / reference if reference > 0 else np.inf
        plausible.append(det.matches and 1 / PLAUSIBLE_SIZE_FACTOR <= ratio <= PLAUSIBLE_SIZE_FACTOR)
        predictions.append([(det.box, det.confidence)])
    ap = average_precision(predictions, [[tuple(float(v) for v in t)] for t in targets], 0.5)
    return TrackMetrics(
        miou=float(np.mean(ious)), ap50=ap, cd=float(np.mean(cds)) if cds else float("nan"),
        hit_rate=float(np.mean(hits)), plausible=float(np.mean(plausible)),
        detected=float(np.mean([d.box is not None for d in detections])),
    )


def motion_alignment(frames: np.ndarray, requested: int) -> tuple[float, float]:
    """(measured intensity in level units, |measured - requested| / 10) for a generated video."""
    _, magnitude = motion_intensity(frames)
    measured = magnitude / INTENSITY_STEP
    return float(measured), float(abs(measured - requested) / 10.0)


def detected_centres(detections: list[FrameDetection], frame_side: int) -> np.ndarray:
    """Detected box centres per frame as fractions ``[T, 2]`` (NaN where nothing was found)."""
    out = np.full((len(detections), 2), np.nan)
    for i, det in enumerate(detections):
        if det.box is not None:
            out[i] = ((det.box[0] + det.box[2]) / 2 / frame_side, (det.box[1] + det.box[3]) / 2 / frame_side)
    return out
