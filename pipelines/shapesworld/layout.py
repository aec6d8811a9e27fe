"""Where the objects of a ShapesWorld relation caption go: one box per object, for layout guidance
(:class:`pipelines.attention.layout.LayoutGuidance`, thesis eq. 10.5/10.7 on one frame)."""

from __future__ import annotations

from ..errors import InvalidInputError
from .captions import parse_caption

# Where the first and the second object of "A <relation> B" go: an object-sized square (side
# BOX_SIDE, fractions of the frame) in the middle of each half. Half-frame boxes made the guidance
# paint blobs that fill them (the shape is lost); a box about an object's size keeps the shape.
BOX_SIDE = 0.36


def _square(cx: float, cy: float) -> tuple[float, float, float, float]:
    h = BOX_SIDE / 2
    return (cx - h, cy - h, cx + h, cy + h)


_SIDE_BOXES = {
    "left": _square(0.27, 0.5),
    "right": _square(0.73, 0.5),
    "top": _square(0.5, 0.27),
    "bottom": _square(0.5, 0.73),
}
RELATION_SIDES: dict[str, tuple[str, str]] = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}


def relation_layout(caption: str) -> dict[str, tuple[float, float, float, float]]:
    """One box per object of a two-object relation caption, keyed by the object's words ("red circle").

    A caption without a relation gets no boxes (``{}``): nothing to place. Raises
    :class:`~pipelines.errors.InvalidInputError` for text outside the ShapesWorld grammar, or when both
    objects have the same words (their phrases would share tokens).
    """
    spec = parse_caption(caption)
    if spec.relation is None:
        return {}
    first, second = spec.objects[0].words, spec.objects[1].words
    if first == second:
        raise InvalidInputError(f"Both objects of {caption!r} are {first!r}: their boxes cannot be told apart.")
    side_a, side_b = RELATION_SIDES[spec.relation]
    return {first: _SIDE_BOXES[side_a], second: _SIDE_BOXES[side_b]}
