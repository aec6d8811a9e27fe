"""Query features: text -> a feature vector in the space of the scene's Gaussian features.

Thesis eq. 11.14 compares each Gaussian's feature f_j with a query feature q(tau). Without a remote
model, :class:`WordQueryEncoder` gives every ShapesWorld word (colours, shapes, "background") a fixed
random unit vector (seeded from the word, so it is the same on every machine) and embeds a phrase as
the normalised sum of its words' vectors: "red circle" and "red square" share the "red" direction
(cosine about 0.5), "circle" alone is about 0.7 from "red circle". ShapesWorld 4D scenes
(:mod:`.shapes4d`) give each object's Gaussians the embedding of its name, so a query lands in the
same space. Plurals ("circles") are read as the singular; articles and filler words are ignored; any
other word is refused with the list of words the encoder knows.

The later language issue swaps in text-embedding features (from a generator's cross-attention); it
only has to provide another :class:`QueryEncoder` and register it with :func:`register_encoder`.
"""

from __future__ import annotations

import re
import zlib
from typing import Protocol

import numpy as np

from ..errors import InvalidInputError
from ..shapesworld.vocab import COLOURS, SHAPES

BACKGROUND = "background"
# Words a query may contain that carry no meaning here.
FILLER_WORDS = frozenset(
    {"the", "a", "an", "this", "that", "these", "those", "all", "every", "each", "object", "objects",
     "shape", "shapes", "thing", "things", "one", "ones"}
)


class UnknownQueryError(InvalidInputError):
    """A query has a word the encoder does not know, or no meaningful word at all."""


class QueryEncoder(Protocol):
    """Maps text to a unit feature vector in one feature space."""

    # Identifier stored in Scene4D.feature_space, e.g. "shapesworld-words:d16:s0".
    space: str
    dim: int

    def words(self, text: str) -> tuple[str, ...]:
        """The meaningful words of ``text`` (normalised); raises :class:`UnknownQueryError`."""
        ...

    def encode(self, text: str) -> np.ndarray:
        """float32 ``[dim]`` unit vector; raises :class:`UnknownQueryError`."""
        ...


class WordQueryEncoder:
    """Phrase embedding = normalised sum of fixed random word vectors (see the module docstring)."""

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        if not 4 <= dim <= 128:
            raise InvalidInputError(f"The feature dimension must be in [4, 128], got {dim}.")
        self.dim, self.seed = int(dim), int(seed)
        self.space = f"shapesworld-words:d{self.dim}:s{self.seed}"
        self.vocabulary = tuple(sorted(COLOURS)) + SHAPES + (BACKGROUND,)
        self._vectors = {word: self._vector(word) for word in self.vocabulary}

    def _vector(self, word: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(word.encode("utf-8"))])
        vector = rng.standard_normal(self.dim)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def _normalise(self, word: str) -> str:
        if word not in self._vectors and word.endswith("s") and word[:-1] in self._vectors:
            return word[:-1]
        return word

    def words(self, text: str) -> tuple[str, ...]:
        if not isinstance(text, str) or not text.strip():
            raise UnknownQueryError("The query is empty; name an object, e.g. 'red circle'.")
        tokens = [self._normalise(token) for token in re.findall(r"[a-z]+", text.lower())]
        tokens = [token for token in tokens if token not in FILLER_WORDS]
        unknown = [token for token in tokens if token not in self._vectors]
        if unknown:
            raise UnknownQueryError(
                f"Unknown word{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in the query "
                f"{text!r}. Known words: {', '.join(self.vocabulary)}."
            )
        if not tokens:
            raise UnknownQueryError(f"The query {text!r} names no colour or shape, e.g. 'red circle'.")
        return tuple(dict.fromkeys(tokens))

    def encode(self, text: str) -> np.ndarray:
        total = np.sum([self._vectors[word] for word in self.words(text)], axis=0)
        return (total / np.linalg.norm(total)).astype(np.float32)


_ENCODERS: dict[str, QueryEncoder] = {}


def register_encoder(encoder: QueryEncoder) -> QueryEncoder:
    """Make ``encoder`` the one used for scenes whose ``feature_space`` is ``encoder.space``."""
    _ENCODERS[encoder.space] = encoder
    return encoder


def default_encoder() -> WordQueryEncoder:
    """The ShapesWorld word encoder (D = 16) used by the examples."""
    encoder = _ENCODERS.get("shapesworld-words:d16:s0")
    return encoder if isinstance(encoder, WordQueryEncoder) else register_encoder(WordQueryEncoder())


def encoder_for(space: str) -> QueryEncoder:
    """The encoder of a feature space: registered ones, or a WordQueryEncoder named by its space."""
    if space in _ENCODERS:
        return _ENCODERS[space]
    match = re.fullmatch(r"shapesworld-words:d(\d+):s(\d+)", space or "")
    if match:
        return register_encoder(WordQueryEncoder(int(match.group(1)), int(match.group(2))))
    from .clip_features import encoder_for_space  # a learned (CLIP) feature space

    clip = encoder_for_space(space)
    if clip is not None:
        return clip
    raise InvalidInputError(
        "This scene's Gaussians carry no features in a known query space "
        f"({space!r}), so it cannot be edited by a text query."
        if space else "This scene has no semantic features (e.g. a plain 3DGS PLY), so it cannot be edited by a text query."
    )
