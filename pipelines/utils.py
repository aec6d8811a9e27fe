"""Small helpers shared by all pipelines: seeding, threads, image conversion."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from PIL import Image

from .errors import InvalidInputError


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU ``torch.Generator`` with that seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads from ``n`` or ``WORLDSTUDIO_THREADS``; return the count.

    On a 2-core machine a second busy process makes torch's default threading
    50-150x slower (FACTS.md), so tests and CI pin this to 1.
    """
    if n is None:
        env = os.environ.get("WORLDSTUDIO_THREADS")
        if not env:
            return torch.get_num_threads()
        n = int(env)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


# The sides an input image may have, in pixels: smaller is no picture (a 1x1 upload), larger is refused before
# it costs memory. Matching's inputs and uploaded benchmarks share them.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 4096


def to_rgb_array(image, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Convert a PIL image, array or tensor-like to a ``uint8`` ``[H, W, 3]`` RGB array.

    Grayscale is repeated, alpha is composited on white, floats in [0, 1] are
    scaled. Raises :class:`InvalidInputError` for empty, 1-pixel-degenerate
    shapes it cannot read, or images larger than ``max_side``.
    """
    if image is None:
        raise InvalidInputError("No image was given.")
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
        if array.dtype.kind == "f":
            array = np.clip(array * 255.0 if array.max(initial=0.0) <= 1.0 else array, 0, 255)
        array = array.astype(np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        elif array.ndim == 3 and array.shape[2] == 4:
            alpha = array[..., 3:4].astype(np.float32) / 255.0
            array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        elif array.ndim == 3 and array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidInputError(f"Cannot read an RGB image from an array of shape {array.shape}.")
    if max(array.shape[:2]) > max_side:
        raise InvalidInputError(
            f"The image is {array.shape[1]}x{array.shape[0]} pixels; the largest side allowed is {max_side}."
        )
    return np.ascontiguousarray(array)
