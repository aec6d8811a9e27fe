"""The closed caption grammar of ShapesWorld: :func:`format_caption` and its inverse :func:`parse_caption`.

Grammar (NP is a noun phrase "a red circle"; REL, VERB, DIR, SPEED come from :mod:`.vocab`)::

    image caption := NP                          "a red circle"
                   | NP REL NP                   "a red circle left of a blue square"
                   | NP and NP                   "a red circle and a blue square"
                   | NP, NP and NP               "a red circle, a blue square and a green triangle"
                   | NP REL NP with NP           "a red circle left of a blue square with a green triangle"
    video caption := NP VERB DIR SPEED           "a red circle moves from left to right quickly"
                   | NP VERB DIR SPEED while NP stays still

A relation always links the first two objects (subject first); a motion belongs
to the first object and any second object stays still. The generator writes
"NP and NP" only for :func:`format_caption` callers that pass no relation; the
samplers always give two-object scenes a relation.

:func:`parse_caption` ignores case and punctuation, accepts either article and
the speed word before or after the direction, and raises
:class:`~pipelines.errors.InvalidInputError` on anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInputError
from .vocab import (
    ARTICLES,
    COLOURS,
    DIRECTIONS,
    EXTRA_JOINER,
    LIST_JOINER,
    MAX_OBJECTS,
    MOTION_VERBS,
    RELATIONS,
    SHAPES,
    SPEEDS,
    STILL_CLAUSE,
    article,
)


@dataclass(frozen=True)
class ObjectSpec:
    """One object a caption names: its colour word and shape word."""

    colour: str
    shape: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise InvalidInputError(f"Unknown colour {self.colour!r}; expected one of {tuple(COLOURS)}.")
        if self.shape not in SHAPES:
            raise InvalidInputError(f"Unknown shape {self.shape!r}; expected one of {SHAPES}.")

    @property
    def words(self) -> str:
        """The object's content words, e.g. ``"red circle"``."""
        return f"{self.colour} {self.shape}"

    @property
    def phrase(self) -> str:
        """The noun phrase, e.g. ``"an orange square"``."""
        return f"{article(self.colour)} {self.words}"


@dataclass(frozen=True)
class MotionSpec:
    """How the first object of a video caption moves."""

    verb: str
    direction: str
    speed: str

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.verb, MOTION_VERBS, "verb"),
            (self.direction, tuple(DIRECTIONS), "direction"),
            (self.speed, tuple(SPEEDS), "speed"),
        ):
            if value not in allowed:
                raise InvalidInputError(f"Unknown motion {name} {value!r}; expected one of {allowed}.")


@dataclass(frozen=True)
class CaptionSpec:
    """The meaning of a caption: its objects, the relation of the first two, the first one's motion."""

    objects: tuple[ObjectSpec, ...]
    # "objects[0] <relation> objects[1]", or None.
    relation: str | None = None
    # Motion of objects[0] (video captions); the other object stays still.
    motion: MotionSpec | None = None

    def __post_init__(self) -> None:
        n = len(self.objects)
        if not 1 <= n <= MAX_OBJECTS:
            raise InvalidInputError(f"A caption names 1 to {MAX_OBJECTS} objects, got {n}.")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise InvalidInputError(f"Unknown relation {self.relation!r}; expected one of {RELATIONS}.")
            if n < 2:
                raise InvalidInputError("A relation needs two objects.")
        if self.motion is not None and (self.relation is not None or n > 2):
            raise InvalidInputError("A video caption names one moving object and at most one still object.")


def format_caption(spec: CaptionSpec) -> str:
    """Write the caption of ``spec`` in the grammar of this module."""
    phrases = [obj.phrase for obj in spec.objects]
    if spec.motion is not None:
        motion = spec.motion
        text = f"{phrases[0]} {motion.verb} {motion.direction} {motion.speed}"
        if len(phrases) == 2:
            text += f" {STILL_CLAUSE[0]} {phrases[1]} {STILL_CLAUSE[1]}"
        return text
    if spec.relation is not None:
        text = f"{phrases[0]} {spec.relation} {phrases[1]}"
        return text + (f" {EXTRA_JOINER} {phrases[2]}" if len(phrases) == 3 else "")
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + f" {LIST_JOINER} {phrases[-1]}"


# Lexicon of phrases (as word tuples) -> (category, value); matched longest first.
_LEXICON: dict[tuple[str, ...], tuple[str, str]] = {
    **{(word,): ("article", word) for word in ARTICLES},
    **{(word,): ("colour", word) for word in COLOURS},
    **{(word,): ("shape", word) for word in SHAPES},
    **{tuple(rel.split()): ("relation", rel) for rel in RELATIONS},
    **{(verb,): ("verb", verb) for verb in MOTION_VERBS},
    **{tuple(d.split()): ("direction", d) for d in DIRECTIONS},
    **{(speed,): ("speed", speed) for speed in SPEEDS},
    (LIST_JOINER,): ("and", LIST_JOINER),
    (EXTRA_JOINER,): ("with", EXTRA_JOINER),
    (STILL_CLAUSE[0],): ("while", STILL_CLAUSE[0]),
    tuple(STILL_CLAUSE[1].split()): ("still", STILL_CLAUSE[1]),
}
_LONGEST_PHRASE = max(len(key) for key in _LEXICON)


def caption_words(text: str) -> list[str]:
    """The words of a caption as :func:`parse_caption` reads them: lower case, punctuation dropped."""
    return re.sub(r"[^a-z]+", " ", text.lower()).split()


def _tokenize(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into (category, value) tokens, longest phrase first."""
    words = caption_words(text)
    if not words:
        raise InvalidInputError("The caption is empty.")
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        for length in range(min(_LONGEST_PHRASE, len(words) - i), 0, -1):
            token = _LEXICON.get(tuple(words[i : i + length]))
            if token is not None:
                tokens.append(token)
                i += length
                break
        else:
            raise InvalidInputError(
                f"Unknown word {words[i]!r} in caption {text!r}; ShapesWorld captions use a closed vocabulary."
            )
    return tokens


class _Parser:
    """Recursive-descent reader of a token list (one caption)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def take(self, category: str) -> str:
        if self.peek() != category:
            found = self.tokens[self.position][1] if self.position < len(self.tokens) else "the end"
            raise InvalidInputError(f"Expected a {category} but found {found!r} in caption {self.text!r}.")
        value = self.tokens[self.position][1]
        self.position += 1
        return value

    def noun_phrase(self) -> ObjectSpec:
        self.take("article")
        colour = self.take("colour")
        return ObjectSpec(colour=colour, shape=self.take("shape"))

    def motion(self) -> MotionSpec:
        verb = self.take("verb")
        if self.peek() == "speed":
            speed = self.take("speed")
            direction = self.take("direction")
        else:
            direction = self.take("direction")
            speed = self.take("speed")
        return MotionSpec(verb=verb, direction=direction, speed=speed)

    def caption(self) -> CaptionSpec:
        objects = [self.noun_phrase()]
        relation = motion = None
        if self.peek() == "relation":
            relation = self.take("relation")
            objects.append(self.noun_phrase())
            if self.peek() == "with":
                self.take("with")
                objects.append(self.noun_phrase())
        elif self.peek() == "verb":
            motion = self.motion()
            if self.peek() == "while":
                self.take("while")
                objects.append(self.noun_phrase())
                self.take("still")
        else:
            while self.peek() in ("article", "and") and len(objects) < MAX_OBJECTS:
                if self.peek() == "and":
                    self.take("and")
                objects.append(self.noun_phrase())
        if self.peek() is not None:
            raise InvalidInputError(
                f"Unexpected {self.tokens[self.position][1]!r} in caption {self.text!r}; "
                "it does not follow the ShapesWorld grammar."
            )
        return CaptionSpec(objects=tuple(objects), relation=relation, motion=motion)


def parse_caption(text: str) -> CaptionSpec:
    """Read a ShapesWorld caption into a :class:`CaptionSpec`; the inverse of :func:`format_caption`."""
    if not isinstance(text, str):
        raise InvalidInputError(f"A caption is a string, got {type(text).__name__}.")
    return _Parser(text).caption()


def object_word_positions(text: str) -> list[tuple[int, int]]:
    """For each object of a caption, in order, the indices of its colour and shape words in :func:`caption_words`."""
    words = caption_words(text)
    return [(i, i + 1) for i in range(len(words) - 1) if words[i] in COLOURS and words[i + 1] in SHAPES]
