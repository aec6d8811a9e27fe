"""Turning captions and heatmaps into what a person looks at (numpy only, no gradio)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..shapesworld.captions import CaptionSpec, ObjectSpec, format_caption, parse_caption
from ..shapesworld.vocab import COLOURS, OPPOSITE_RELATION, SHAPES

# anchor colours of a perceptually ordered ramp (dark blue -> purple -> orange -> yellow)
_RAMP = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], dtype=np.float32)


def colormap(heat: np.ndarray) -> np.ndarray:
    """``[h, w]`` values in [0, 1] -> ``uint8 [h, w, 3]`` colours on a plasma-like ramp."""
    position = np.clip(heat, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55, normalise: bool = True) -> np.ndarray:
    """The heatmap blended over the image, at the heatmap's size (which keeps the image's aspect).

    ``normalise`` stretches the map to its own maximum so a faint word is still visible.
    """
    height, width = heat.shape
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR), dtype=np.float32)
    scaled = heat / heat.max() if normalise and heat.max() > 0 else heat
    blended = (1 - alpha) * resized + alpha * colormap(scaled).astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)


def swapped_captions(caption: str) -> list[str]:
    """Minimal swaps of a ShapesWorld caption: colours, shapes, relation (the benchmark's kinds)."""
    spec = parse_caption(caption)
    objects = list(spec.objects)
    swaps: list[CaptionSpec] = []
    if len(objects) >= 2:
        a, b = objects[0], objects[1]
        if a.colour != b.colour:
            swaps.append(CaptionSpec((ObjectSpec(b.colour, a.shape), ObjectSpec(a.colour, b.shape), *objects[2:]),
                                     spec.relation))
        if a.shape != b.shape:
            swaps.append(CaptionSpec((ObjectSpec(a.colour, b.shape), ObjectSpec(b.colour, a.shape), *objects[2:]),
                                     spec.relation))
        if spec.relation is not None:
            swaps.append(CaptionSpec(spec.objects, OPPOSITE_RELATION[spec.relation]))
    else:
        first = objects[0]
        other_colour = next(c for c in COLOURS if c != first.colour)
        other_shape = next(s for s in SHAPES if s != first.shape)
        swaps.append(CaptionSpec((ObjectSpec(other_colour, first.shape),)))
        swaps.append(CaptionSpec((ObjectSpec(first.colour, other_shape),)))
    return list(dict.fromkeys(format_caption(s) for s in swaps if format_caption(s) != caption))
