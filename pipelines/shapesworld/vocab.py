"""The closed vocabulary of ShapesWorld: colours, shapes, relations and motion words.

Every word a caption can contain is defined here, so a tokenizer built from
:func:`vocabulary` covers the whole caption grammar (:mod:`.captions`).
"""

from __future__ import annotations

import colorsys

# Object colours, chosen so that their hues are at least 23 degrees apart
# (red 357, orange 30, yellow 54, green 133, blue 224, purple 279) and their
# chroma (max - min channel) is at least 140 of 255, far above any background
# (chroma <= 24, see ``scene.BACKGROUND_MAX_CHROMA``).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 45),
    "orange": (245, 130, 15),
    "yellow": (220, 200, 0),
    "green": (40, 180, 70),
    "blue": (40, 90, 225),
    "purple": (150, 60, 200),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# A relation "A <relation> B" compares the centroids of A and B (``metrics.relation_holds``).
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE_RELATION: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}

# Direction phrases and their unit vectors (dx, dy) in image coordinates (y points down).
_DIAGONAL = 2**-0.5
DIRECTIONS: dict[str, tuple[float, float]] = {
    "from left to right": (1.0, 0.0),
    "from right to left": (-1.0, 0.0),
    "upward": (0.0, -1.0),
    "downward": (0.0, 1.0),
    "toward the top right": (_DIAGONAL, -_DIAGONAL),
    "toward the top left": (-_DIAGONAL, -_DIAGONAL),
    "toward the bottom right": (_DIAGONAL, _DIAGONAL),
    "toward the bottom left": (-_DIAGONAL, _DIAGONAL),
}

# Speed words and the motion-intensity levels (1-10, ``video.motion_intensity``) each one covers.
SPEEDS: dict[str, tuple[int, ...]] = {
    "slowly": (1, 2, 3),
    "steadily": (4, 5, 6, 7),
    "quickly": (8, 9, 10),
}

# "moves" and "slides" follow a straight line; "bounces" follows an arc (``video.sample_video``).
MOTION_VERBS: tuple[str, ...] = ("moves", "slides", "bounces")
ARC_VERBS: frozenset[str] = frozenset({"bounces"})

# Function words of the grammar: articles, list and clause joiners, the still distractor.
ARTICLES: tuple[str, ...] = ("a", "an")
LIST_JOINER = "and"
EXTRA_JOINER = "with"
STILL_CLAUSE = ("while", "stays still")

MAX_OBJECTS = 3


def article(colour: str) -> str:
    """The indefinite article for a noun phrase that starts with ``colour``."""
    return "an" if colour[0] in "aeiou" else "a"


def hue_degrees(rgb: tuple[int, int, int]) -> float:
    """Hue of an RGB colour in degrees, [0, 360)."""
    hue, _, _ = colorsys.rgb_to_hsv(*(channel / 255.0 for channel in rgb))
    return hue * 360.0


def vocabulary() -> tuple[str, ...]:
    """Every word the caption grammar can emit, sorted and without duplicates."""
    phrases = [
        *ARTICLES,
        *COLOURS,
        *SHAPES,
        *RELATIONS,
        *DIRECTIONS,
        *SPEEDS,
        *MOTION_VERBS,
        LIST_JOINER,
        EXTRA_JOINER,
        *STILL_CLAUSE,
    ]
    return tuple(sorted({word for phrase in phrases for word in phrase.split()}))
