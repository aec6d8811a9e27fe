"""Condition layers for FlexEControl: what a person draws or uploads, turned into condition maps.

A map has the format of :mod:`pipelines.shapesworld.conditions` (what the
encoder was trained on): canny and sketch are white lines on black, depth is
grey with near = bright, segmentation is RGB in ``SEGMENTATION_PALETTE``.

- **Drawings** are made on a black canvas, so the canvas already is the map:
  strokes become lines, painted palette colours become segments (each pixel
  takes the nearest palette colour), grey levels are depth.
- **Uploads** go through an extractor: OpenCV Canny (the ShapesWorld
  thresholds), the detector's outlines (sketch); for segmentation the preset's
  transformers semantic segmenter when it has one (:class:`SemanticSegmenter`:
  the hub preset's SegFormer, ADE20K's 150 classes, each class one colour of
  :func:`class_palette`), else the ShapesWorld detector's colour segmentation;
  for depth the preset's transformers depth-estimation model when it has one
  (:func:`depth_from_model`), else the upload's grey levels.

:func:`prepare_conditions` checks a list of layers (at most four; known types;
weights in [0, 2]; 0 <= start < end <= 1; nothing empty) and resizes maps of
another size, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import InvalidInputError
from ..shapesworld.conditions import CANNY_HIGH, CANNY_LOW, CONDITION_TYPES, SEGMENTATION_PALETTE
from ..shapesworld.conditions import segmentation_from_detections
from ..shapesworld.conditions import sketch as outline_sketch
from ..shapesworld.detector import detect
from ..utils import to_rgb_array

MAX_CONDITIONS = 4
WEIGHT_RANGE = (0.0, 2.0)
# Other names people use for a type.
TYPE_ALIASES = {"edge": "canny", "edges": "canny", "scribble": "sketch", "seg": "segmentation"}
# A drawn or resized line pixel is kept when at least this bright (after area resizing).
LINE_THRESHOLD = 64
_PALETTE = np.array(list(SEGMENTATION_PALETTE.values()), dtype=np.float32)  # [classes, 3]


@dataclass
class Condition:
    """One condition layer: a map, its type, and how strongly and when it steers."""

    # One of CONDITION_TYPES (or an alias such as "edge").
    type: str
    # uint8 map, [H, W] (canny, sketch, depth) or [H, W, 3] (segmentation; grey maps may be RGB too).
    image: np.ndarray
    # Multiplies the encoder's residuals, in WEIGHT_RANGE.
    weight: float = 1.0
    # Fraction of the denoising steps where the condition starts and stops acting.
    start: float = 0.0
    end: float = 1.0


def canonical_type(condition_type: str) -> str:
    """``condition_type`` with aliases resolved; :class:`InvalidInputError` for an unknown one."""
    name = TYPE_ALIASES.get(str(condition_type).strip().lower(), str(condition_type).strip().lower())
    if name not in CONDITION_TYPES:
        raise InvalidInputError(
            f"Unknown condition type {condition_type!r}; use one of {', '.join(CONDITION_TYPES)} (or 'edge')."
        )
    return name


def _grey(image) -> np.ndarray:
    return cv2.cvtColor(to_rgb_array(image), cv2.COLOR_RGB2GRAY)


def _lines(grey: np.ndarray, size: int) -> np.ndarray:
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return np.where(small >= LINE_THRESHOLD, 255, 0).astype(np.uint8)


def nearest_palette(rgb: np.ndarray) -> np.ndarray:
    """Each pixel replaced by the nearest :data:`SEGMENTATION_PALETTE` colour (uint8 [H, W, 3])."""
    distances = np.linalg.norm(rgb[..., None, :].astype(np.float32) - _PALETTE, axis=-1)  # [H, W, classes]
    return _PALETTE[distances.argmin(axis=-1)].astype(np.uint8)


def from_drawing(image, condition_type: str, size: int) -> np.ndarray:
    """The condition map of a drawing on a black canvas, at ``size x size``."""
    kind = canonical_type(condition_type)
    if kind in ("canny", "sketch"):
        return _lines(_grey(image), size)
    if kind == "segmentation":
        small = cv2.resize(to_rgb_array(image), (size, size), interpolation=cv2.INTER_NEAREST)
        return nearest_palette(small)
    return cv2.resize(_grey(image), (size, size), interpolation=cv2.INTER_AREA)


def depth_from_model(model, image, size: int) -> np.ndarray:
    """Depth of an RGB ``image`` by a transformers depth-estimation model, as a grey map (near = bright).

    The image is resized to the model's ``image_size`` (DPT's config has one;
    otherwise ``size`` rounded up to a multiple of 32, e.g. the tiny pack's
    GLPN, trained on 64x64 frames), scaled to [0, 1] and for DPT normalised to
    [-1, 1] as its processor does. DPT predicts relative inverse depth (larger
    is nearer); other models (GLPN) predict depth (larger is farther) and are flipped.
    The prediction is resized to ``size`` and stretched to 0..255.
    """
    side = int(getattr(model.config, "image_size", None) or -(-size // 32) * 32)
    rgb = cv2.resize(to_rgb_array(image), (side, side), interpolation=cv2.INTER_AREA)
    parameter = next(model.parameters())
    is_dpt = getattr(model.config, "model_type", "") == "dpt"
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    pixels = (pixels * 2.0 - 1.0 if is_dpt else pixels).to(parameter.device, parameter.dtype)
    with torch.no_grad():
        predicted = model(pixel_values=pixels).predicted_depth  # [1, h, w]
    resized = torch.nn.functional.interpolate(predicted[:, None].float(), size=(size, size), mode="bilinear")[0, 0]
    if not is_dpt:
        resized = -resized
    low, high = resized.min(), resized.max()
    scaled = (resized - low) / (high - low) if high > low else torch.zeros_like(resized)
    return (scaled * 255.0).round().byte().cpu().numpy()


def class_palette(n_classes: int) -> np.ndarray:
    """uint8 ``[n_classes, 3]``: class k's colour in a segmenter's maps, PASCAL VOC's bit-interleaved palette
    entry k + 1 (entry 0, black, stays "no segment", as in the maps the encoder reads). Fixed, so a map made
    today and one made from a recipe name a class by the same colour; distinct for up to 255 classes."""
    if not 1 <= n_classes <= 255:
        raise InvalidInputError(f"A segmentation palette has 1-255 classes, got {n_classes}.")
    entries = np.arange(1, n_classes + 1)
    colours = np.zeros((n_classes, 3), np.int64)
    for bit in range(8):  # bit 3b + c of the entry goes to bit 7 - b of channel c
        for channel in range(3):
            colours[:, channel] |= ((entries >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


@dataclass(frozen=True)
class SemanticSegmenter:
    """A transformers semantic-segmentation model (a preset's ``segmentation`` role, e.g. SegFormer) and the image
    processor stored beside it."""

    # An ``AutoModelForSemanticSegmentation`` whose output has ``logits`` [batch, classes, h, w].
    model: Any
    # Its image processor (resizing and normalisation as the checkpoint was trained).
    processor: Any

    def classes(self, image, size: int) -> np.ndarray:
        """int64 ``[size, size]``: the most likely class of each pixel of an RGB ``image`` (the logits upsampled
        bilinearly to ``size x size`` before the argmax)."""
        parameter = next(self.model.parameters())
        pixels = self.processor(images=to_rgb_array(image), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            logits = self.model(pixel_values=pixels.to(parameter.device, parameter.dtype)).logits
        upsampled = torch.nn.functional.interpolate(logits.float(), size=(size, size), mode="bilinear",
                                                    align_corners=False)
        return upsampled[0].argmax(dim=0).cpu().numpy()

    def __call__(self, image, size: int) -> np.ndarray:
        """The segmentation map of ``image``: uint8 ``[size, size, 3]``, class k in :func:`class_palette`'s colour k."""
        return class_palette(int(self.model.config.num_labels))[self.classes(image, size)]


def from_upload(image, condition_type: str, size: int, depth_model=None,
                segmenter: SemanticSegmenter | None = None) -> np.ndarray:
    """The condition map extracted from an uploaded photo or render, at ``size x size`` (module docstring)."""
    kind = canonical_type(condition_type)
    rgb = cv2.resize(to_rgb_array(image), (size, size), interpolation=cv2.INTER_AREA)
    if kind == "canny":
        return cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), CANNY_LOW, CANNY_HIGH)
    if kind == "sketch":
        return outline_sketch(rgb)
    if kind == "segmentation":
        return segmenter(image, size) if segmenter is not None else segmentation_from_detections(detect(rgb), size)
    if depth_model is not None:
        return depth_from_model(depth_model, image, size)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _resize_map(image: np.ndarray, kind: str, size: int) -> np.ndarray:
    if kind == "segmentation":
        return nearest_palette(cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST))
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if kind in ("canny", "sketch"):
        return _lines(grey, size)
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)


def _as_map(image, kind: str) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        array = to_rgb_array(array)
    if kind == "segmentation":
        return to_rgb_array(array) if array.ndim == 2 else array[..., :3]
    return array if array.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_RGB2GRAY)


def map_at_size(image, condition_type: str, size: int) -> np.ndarray:
    """A condition map as given (a file's pixels) brought to ``size x size`` the way the pipeline reads it."""
    kind = canonical_type(condition_type)
    array = _as_map(image, kind)
    return array if array.shape[:2] == (size, size) else _resize_map(array, kind, size)


def prepare_conditions(conditions: Sequence[Condition], size: int) -> tuple[list[Condition], list[str]]:
    """Check condition layers and bring their maps to ``size x size``; return them and notes for people.

    No condition gives an empty list and a note (the pipeline then generates
    from the text alone). Raises :class:`InvalidInputError` for more than
    :data:`MAX_CONDITIONS`, unknown types, weights outside :data:`WEIGHT_RANGE`,
    a start/end outside ``0 <= start < end <= 1`` and empty maps.
    """
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidInputError(f"{len(conditions)} conditions were given; at most {MAX_CONDITIONS} are supported.")
    if not conditions:
        return [], ["No condition was given: the image is generated from the text alone."]
    prepared, notes = [], []
    for number, condition in enumerate(conditions, start=1):
        kind = canonical_type(condition.type)
        label = f"Condition {number} ({kind})"
        low, high = WEIGHT_RANGE
        if not low <= float(condition.weight) <= high:
            raise InvalidInputError(f"{label}: weight {condition.weight} is outside [{low}, {high}].")
        if not 0.0 <= float(condition.start) < float(condition.end) <= 1.0:
            raise InvalidInputError(
                f"{label}: start {condition.start} and end {condition.end} must satisfy 0 <= start < end <= 1."
            )
        if condition.image is None:
            raise InvalidInputError(f"{label} has no map: draw on its canvas or upload an image.")
        image = _as_map(condition.image, kind)
        if image.size == 0 or not image.any():
            raise InvalidInputError(f"{label} is empty (an all-black map): draw on its canvas or upload an image.")
        if image.shape[:2] != (size, size):
            notes.append(f"{label} was {image.shape[1]}x{image.shape[0]}; it was resized to {size}x{size}.")
            image = _resize_map(image, kind, size)
            if not image.any():
                raise InvalidInputError(f"{label} is empty after resizing to {size}x{size}: use thicker strokes.")
        prepared.append(replace(condition, type=kind, image=image, weight=float(condition.weight),
                                start=float(condition.start), end=float(condition.end)))
    return prepared, notes


def map_tensor(image: np.ndarray) -> torch.Tensor:
    """A condition map as the encoder's input: float ``[3, H, W]`` in [0, 1] (grey maps repeated)."""
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
