"""Checking and repairing the frames a GEN fits (thesis 11.3.2; issue 23, item 4).

A generated video does not always hold the objects its plan asks for: the tiny text-to-video model
drew "a big green triangle slides upward slowly" with a second green blob beside the triangle and
brown smudges in the corners, and "a red ball moves from left to right quickly" as a red bar mid-sweep
with a red fragment left at the start. Fitted as they are, the duplicates and fragments become Gaussians
of the scene.

1. **Check** (:func:`check_frames`): ShapesWorld's detector finds the objects of each frame; each plan
   object takes the detections of its colour (with several objects of one colour, the one nearest its
   trajectory box takes each). An object is *right* in a frame when exactly one detection is its own, it has
   the plan's shape and its area is within :data:`AREA_RANGE` of its shape's area in its box; a frame is
   *right* when every object is right and nothing else is detected.
2. **Repair** (:func:`repair_frames`): in a frame that is not right, the detections that are not a right
   object (duplicates, fragments, wrong shapes, unplanned objects) are erased by inpainting
   (``cv2.inpaint``, Telea, over their masks grown by ``grow`` pixels). Each object that was not right is
   then drawn again where its trajectory box says: its appearance is taken from the nearest frame where
   it is right (its pixels under the detector's mask, moved by the trajectory's shift between the two
   frames); with no such frame, its ShapesWorld shape and colour are drawn in its box. The repaired frames
   are checked again and repaired once more where needed (``passes``): erasing a duplicate can leave a halo
   of another colour that the detector then finds on its own.

``generate_scene`` regenerates a video with another seed when too few of its frames are right, then
repairs the rest; the detector judges and repairs frames, it never teaches the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..shapesworld.detector import Detection, detect
from ..shapesworld.render import composite, shape_coverage, to_uint8
from ..shapesworld.vocab import COLOURS
from .motion import object_name
from .plan import GenObject

# An object's detected area over its shape's area in its trajectory box, for it to be right. Measured on Mojito's
# frames: right objects 0.8-1.8 (the ball drawn larger than its box), a speck of the red square 0.14.
AREA_RANGE = (1.0 / 3.0, 3.0)


@dataclass
class FrameCheck:
    """What the detector found in each frame against a plan (module docstring, step 1)."""

    # Objects detected per frame (all colours), and the plan's count.
    counts: list[int]
    expected: int
    # bool [T, K]: plan object k is right in frame t.
    object_right: np.ndarray
    # Per frame, per object: the detections it took (several = duplicates, none = missing).
    owned: list[list[list[Detection]]]
    # Per frame: detections no plan object took (unplanned colours, surplus pieces).
    extras: list[list[Detection]]

    @property
    def frame_right(self) -> np.ndarray:
        """bool ``[T]``: every object right and nothing else detected."""
        return self.object_right.all(axis=1) & np.array([not e for e in self.extras])

    @property
    def right_fraction(self) -> float:
        return float(self.frame_right.mean())

    def summary(self) -> dict:
        return {"counts": self.counts, "expected": self.expected,
                "right_frames": [int(t) for t in np.flatnonzero(self.frame_right)]}


def box_centres(boxes: dict[str, np.ndarray], objects: tuple[GenObject, ...], size: tuple[int, int]) -> np.ndarray:
    """``[K, T, 2]`` pixel centres (x, y) of each object's trajectory box."""
    H, W = size
    return np.stack([(boxes[object_name(o)][:, :2] + boxes[object_name(o)][:, 2:]) / 2 * np.array([W, H])
                     for o in objects])


def owner(detection: Detection, objects: tuple[GenObject, ...], centres: np.ndarray,
          shape_first: bool = False) -> int | None:
    """The plan object a detection belongs to: among the objects of its colour, the one whose box centre
    (``centres`` ``[K, 2]``, this frame's) is nearest (with ``shape_first``, one of the detection's shape before
    any other); None when no object has its colour."""
    owners = [k for k, obj in enumerate(objects) if obj.colour == detection.colour]
    if not owners:
        return None
    centroid = np.array(detection.centroid)
    return min(owners, key=lambda k: (shape_first and detection.shape != objects[k].shape,
                                      float(np.hypot(*(centroid - centres[k])))))


def check_frames(frames: np.ndarray, objects: tuple[GenObject, ...], boxes: dict[str, np.ndarray]) -> FrameCheck:
    """The detector's view of ``frames`` (uint8 ``[T, H, W, 3]``) against the plan (module docstring, step 1)."""
    T, H, W = frames.shape[:3]
    centres = box_centres(boxes, objects, (H, W))
    right = np.zeros((T, len(objects)), bool)
    counts, owned, extras = [], [], []
    for t in range(T):
        detections = detect(frames[t])
        mine: list[list[Detection]] = [[] for _ in objects]
        rest = []
        for d in detections:
            k = owner(d, objects, centres[:, t])
            if k is None:
                rest.append(d)
            else:
                mine[k].append(d)
        for k, obj in enumerate(objects):
            box = tuple(boxes[object_name(obj)][t] * np.array([W, H, W, H]))
            ratio = mine[k][0].area / max(float(shape_coverage(obj.shape, box, (H, W)).sum()), 1.0) if mine[k] else 0.0
            right[t, k] = len(mine[k]) == 1 and mine[k][0].shape == obj.shape and AREA_RANGE[0] <= ratio <= AREA_RANGE[1]
        counts.append(len(detections))
        owned.append(mine)
        extras.append(rest)
    return FrameCheck(counts, len(objects), right, owned, extras)


def repair_frames(frames: np.ndarray, check: FrameCheck, objects: tuple[GenObject, ...],
                  boxes: dict[str, np.ndarray], grow: int = 2, passes: int = 2) -> tuple[np.ndarray, list[int]]:
    """Frames with every frame that is not right repaired (module docstring, step 2), and the repaired indices."""
    repaired: set[int] = set()
    for _ in range(passes):
        if check.frame_right.all():
            break
        frames, done = _repair_once(frames, check, objects, boxes, grow)
        repaired.update(done)
        check = check_frames(frames, objects, boxes)
    return frames, sorted(repaired)


def _repair_once(frames, check, objects, boxes, grow):
    T, H, W = frames.shape[:3]
    centres = box_centres(boxes, objects, (H, W))
    out = frames.copy()
    repaired = []
    kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
    for t in np.flatnonzero(~check.frame_right):
        wrong = [k for k in range(len(objects)) if not check.object_right[t, k]]
        erase = np.zeros((H, W), np.uint8)
        for d in check.extras[t] + [d for k in wrong for d in check.owned[t][k]]:
            erase |= d.mask.astype(np.uint8)
        frame = cv2.inpaint(out[t], cv2.dilate(erase, kernel), grow + 1, cv2.INPAINT_TELEA) if erase.any() else out[t]
        canvas = frame.astype(np.float32)
        for k in wrong:
            sources = np.flatnonzero(check.object_right[:, k])
            if sources.size:  # its pixels in the nearest right frame, moved along the trajectory
                s = int(sources[np.argmin(np.abs(sources - t))])
                shift = centres[k, t] - centres[k, s]
                move = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
                mask = check.owned[s][k][0].mask.astype(np.float32)
                alpha = cv2.warpAffine(cv2.GaussianBlur(mask, (3, 3), 0.5), move, (W, H))
                sprite = cv2.warpAffine(frames[s].astype(np.float32), move, (W, H))
                canvas = alpha[..., None] * sprite + (1.0 - alpha[..., None]) * canvas
            else:  # never right: its ShapesWorld shape in its box
                box = tuple(boxes[object_name(objects[k])][t] * np.array([W, H, W, H]))
                composite(canvas, shape_coverage(objects[k].shape, box, (H, W)), COLOURS[objects[k].colour])
        out[t] = to_uint8(canvas)
        repaired.append(int(t))
    return out, repaired
