"""Checking what a user gives the matchers: one image and a list of captions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError
from ..utils import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, to_rgb_array
from ..vocabulary import check_text

MAX_CAPTIONS = 32
MIN_SIDE, MAX_SIDE = MIN_IMAGE_SIDE, MAX_IMAGE_SIDE


def check_image(image) -> np.ndarray:
    """``image`` as a ``uint8 [H, W, 3]`` RGB array, or :class:`InvalidInputError`.

    RGBA is composited on white and grayscale repeated (:func:`pipelines.utils.to_rgb_array`);
    images with a side under :data:`MIN_SIDE` (e.g. 1x1) or over :data:`MAX_SIDE` pixels are refused.
    """
    if image is None:
        raise InvalidInputError("No image was given: upload one, pick an example or generate one.")
    array = to_rgb_array(image, max_side=MAX_SIDE)
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InvalidInputError(
            f"The image is {width}x{height} pixels; matching needs at least {MIN_SIDE} pixels on each side."
        )
    return array


def check_captions(captions: str | Sequence[str], tokenizer=None) -> list[str]:
    """Non-empty, stripped captions (a string is split into lines), at most :data:`MAX_CAPTIONS`.

    With ``tokenizer``, a caption made only of words the tokenizer does not
    know (the tiny pack's closed vocabulary) is refused, naming the words.
    """
    if captions is None:
        raise InvalidInputError("No captions were given: write one caption per line.")
    if isinstance(captions, str):
        captions = captions.splitlines()
    cleaned = [str(c).strip() for c in captions if str(c).strip()]
    if not cleaned:
        raise InvalidInputError("No captions were given: write one caption per line.")
    if len(cleaned) > MAX_CAPTIONS:
        raise InvalidInputError(f"{len(cleaned)} captions were given; at most {MAX_CAPTIONS} are scored at once.")
    if tokenizer is not None:
        for caption in cleaned:  # the studio-wide policy (pipelines.vocabulary): no known noun, refused
            check_text(caption, tokenizer, what="The caption")
    return cleaned
