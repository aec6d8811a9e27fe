"""Which two-object compositions the training split never shows.

A *composition* is what two objects in one image have together: the unordered
pair of their colours and the unordered pair of their shapes, e.g.
``({"red", "blue"}, {"circle", "square"})``. It deliberately ignores which
colour goes with which shape and where the objects stand, so the colour, shape
and relation swaps of a Winoground group (:mod:`.benchmark`) keep the
composition: a group is held out as a whole, and a model trained on the
"train" split has seen red circles and blue squares, but never a red and a blue
object together as a circle and a square.

About :data:`HELDOUT_FRACTION` of all compositions are held out, chosen by a
SHA-256 hash of the key so the choice is the same on every machine and run.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Protocol

from .vocab import COLOURS, SHAPES

HELDOUT_FRACTION = 0.2
SPLITS: tuple[str, ...] = ("train", "test")

CompositionKey = tuple[tuple[str, str], tuple[str, str]]


class HasColourAndShape(Protocol):
    """Anything with ``colour`` and ``shape`` words (ObjectTruth, ObjectSpec, ...)."""

    colour: str
    shape: str


def composition_key(a: HasColourAndShape, b: HasColourAndShape) -> CompositionKey:
    """The composition of two objects: (sorted colour pair, sorted shape pair)."""
    colours = tuple(sorted((a.colour, b.colour)))
    shapes = tuple(sorted((a.shape, b.shape)))
    return (colours, shapes)  # type: ignore[return-value]


def is_heldout_key(key: CompositionKey) -> bool:
    """True if the composition ``key`` belongs to the test split."""
    digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_FRACTION


def is_heldout(objects: Sequence[HasColourAndShape]) -> bool:
    """True if any two of ``objects`` form a held-out composition (never in the train split)."""
    return any(is_heldout_key(composition_key(a, b)) for a, b in itertools.combinations(objects, 2))


def _all_keys() -> Iterable[CompositionKey]:
    colour_pairs = itertools.combinations_with_replacement(sorted(COLOURS), 2)
    shape_pairs = list(itertools.combinations_with_replacement(sorted(SHAPES), 2))
    for colours in colour_pairs:
        for shapes in shape_pairs:
            yield (colours, shapes)  # type: ignore[misc]


@lru_cache(maxsize=1)
def heldout_compositions() -> tuple[CompositionKey, ...]:
    """Every held-out composition, in a fixed order."""
    return tuple(key for key in _all_keys() if is_heldout_key(key))
