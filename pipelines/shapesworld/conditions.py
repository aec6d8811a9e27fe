"""Condition maps for controllable generation (FlexEControl, thesis ch. 9): edges, sketch, segmentation, depth.

Every map is ``uint8`` at the scene's size: ``[H, W]`` for canny, sketch and
depth, ``[H, W, 3]`` for segmentation. Edge and sketch maps draw white (255)
lines on black (0), as ControlNet's canny and scribble inputs do.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import InvalidInputError
from ..utils import to_rgb_array
from .detector import Detection, detect
from .scene import DEPTH_FAR, DEPTH_NEAR, Scene

CONDITION_TYPES: tuple[str, ...] = ("canny", "sketch", "segmentation", "depth")

# Canny hysteresis thresholds on the grayscale image. Objects differ from the
# background by at least 40 grey levels (scene.MIN_LUMINANCE_CONTRAST) and the
# background texture by far less, so these find object outlines only.
CANNY_LOW, CANNY_HIGH = 50, 100
# Sketch strokes are one pixel wide per SKETCH_PIXELS_PER_STROKE frame pixels (at least one).
SKETCH_PIXELS_PER_STROKE = 128

# Segmentation palette: one fixed colour per shape class (not the object's own
# colour, which the prompt carries), black background.
SEGMENTATION_PALETTE: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "circle": (0, 255, 255),
    "square": (255, 0, 255),
    "triangle": (255, 255, 255),
}


def _image_of(scene_or_image) -> np.ndarray:
    return scene_or_image.image if isinstance(scene_or_image, Scene) else to_rgb_array(scene_or_image)


def canny(scene_or_image, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """Canny edges of the grayscale image: uint8 ``[H, W]``, 255 on edges."""
    grey = cv2.cvtColor(_image_of(scene_or_image), cv2.COLOR_RGB2GRAY)
    return cv2.Canny(grey, low, high)


def _outline(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """White inner outlines of ``masks`` on black, width scaled to the frame."""
    width = max(1, max(shape) // SKETCH_PIXELS_PER_STROKE)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    lines = np.zeros(shape, dtype=np.uint8)
    for mask in masks:
        filled = mask.astype(np.uint8)
        # Pad so that an object touching the frame is still outlined along the border.
        padded = cv2.copyMakeBorder(filled, width, width, width, width, cv2.BORDER_CONSTANT, value=0)
        inner = cv2.erode(padded, kernel)[width:-width, width:-width]
        lines[(filled > 0) & (inner == 0)] = 255
    return lines


def sketch(scene_or_image) -> np.ndarray:
    """A line drawing: the outline of every object, uint8 ``[H, W]``, 255 on strokes.

    From a :class:`Scene` it traces the truth masks; from an image, the masks
    that :func:`.detect` finds. Unlike Canny it draws one clean closed stroke
    per object and nothing of the background.
    """
    if isinstance(scene_or_image, Scene):
        masks = [obj.mask for obj in scene_or_image.objects]
        return _outline(masks, scene_or_image.image.shape[:2])
    image = to_rgb_array(scene_or_image)
    return _outline([d.mask for d in detect(image)], image.shape[:2])


def _paint(items: Sequence[tuple[str, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros((*shape, 3), dtype=np.uint8)
    for shape_name, mask in items:
        canvas[mask] = SEGMENTATION_PALETTE[shape_name]
    return canvas


def segmentation(scene: Scene) -> np.ndarray:
    """Truth segmentation: uint8 ``[H, W, 3]`` in :data:`SEGMENTATION_PALETTE` colours."""
    return _paint([(obj.shape, obj.mask) for obj in scene.objects], scene.image.shape[:2])


def segmentation_from_detections(detections: Sequence[Detection], size: int | tuple[int, int]) -> np.ndarray:
    """The segmentation map of detector output, same palette, for a ``size`` (or (H, W)) frame."""
    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    for detection in detections:
        if detection.mask.shape != shape:
            raise InvalidInputError(f"A detection mask has shape {detection.mask.shape}, the frame is {shape}.")
    return _paint([(d.shape, d.mask) for d in detections], shape)  # type: ignore[arg-type]


def depth(scene: Scene) -> np.ndarray:
    """Depth as a grey map, near = bright: uint8 ``[H, W]``, linear from DEPTH_FAR (0) to DEPTH_NEAR (255)."""
    nearness = (DEPTH_FAR - scene.depth) / (DEPTH_FAR - DEPTH_NEAR)
    return np.clip(np.rint(255.0 * nearness), 0, 255).astype(np.uint8)


def condition_maps(scene: Scene, types: Sequence[str] = CONDITION_TYPES) -> dict[str, np.ndarray]:
    """The named condition maps of ``scene``, in the order of ``types``."""
    makers = {"canny": canny, "sketch": sketch, "segmentation": segmentation, "depth": depth}
    unknown = [t for t in types if t not in makers]
    if unknown:
        raise InvalidInputError(f"Unknown condition types {unknown}; expected some of {CONDITION_TYPES}.")
    return {name: makers[name](scene) for name in types}
