"""One vocabulary policy for every text a person types (captions, prompts, commands), in every tab and runner.

* Words the loaded model does not know (not one whole token of its tokenizer) are named, so the studio can
  say them in the UI instead of leaving them to the server log.
* A text with no known noun is refused with the words the model knows listed. This is exact for the tiny
  pack, whose tokenizer is a closed vocabulary (ShapesWorld's words); a hub tokenizer knows tens of thousands
  of words, so on the hub preset nothing is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from .errors import InvalidInputError
from .models.tokenizers import unknown_words

# A tokenizer with fewer whole words than this is a closed vocabulary (the tiny pack's has 33; CLIP's ~49k).
CLOSED_VOCABULARY_MAX_WORDS = 2000


@dataclass
class VocabularyCheck:
    """What the model makes of one text."""

    text: str
    # Words of the text that the model does not know, in order of first appearance.
    unknown: list[str] = field(default_factory=list)
    # Nouns of the text that the model knows (empty on an open vocabulary: no noun list is kept there).
    nouns: list[str] = field(default_factory=list)
    # Whether the model's vocabulary is closed (then a text with no known noun is refused).
    closed: bool = False

    def note(self) -> str | None:
        """One sentence for people naming the unknown words, or None."""
        if not self.unknown:
            return None
        words = ", ".join(f"'{w}'" for w in self.unknown)
        return (f"The model does not know {words} in {self.text!r}; "
                f"{'it is' if len(self.unknown) == 1 else 'they are'} read letter by letter and likely ignored.")


def whole_words(tokenizer) -> set[str]:
    """The words that are one whole token of ``tokenizer`` (CLIP-style ``word</w>`` entries)."""
    words = (token[:-4] for token in tokenizer.get_vocab() if token.endswith("</w>"))
    return {word for word in words if re.fullmatch(r"[a-z][a-z]+", word)}  # single letters spell unknown words


def is_closed(tokenizer) -> bool:
    return len(whole_words(tokenizer)) < CLOSED_VOCABULARY_MAX_WORDS


def default_nouns() -> tuple[str, ...]:
    """The nouns of ShapesWorld (what the tiny pack can draw)."""
    from .shapesworld import SHAPES

    return tuple(SHAPES)


def check_text(text: str, tokenizer=None, *, what: str = "The prompt", known: Iterable[str] | None = None,
               nouns: Iterable[str] | None = None, closed: bool | None = None) -> VocabularyCheck:
    """Apply the policy to ``text`` for a model reading it with ``tokenizer`` (or a lexicon ``known``).

    Returns the check (its :meth:`~VocabularyCheck.note` names unknown words); raises
    :class:`~pipelines.errors.InvalidInputError` when the vocabulary is closed and ``text`` has no known noun,
    listing the nouns and other words the model knows.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"{what} is empty; write what the picture should show, e.g. 'a red circle'.")
    words = re.findall(r"[a-z0-9]+", text.lower())
    if known is not None:
        vocabulary = {w.lower() for w in known}
        unknown = list(dict.fromkeys(w for w in words if w not in vocabulary))
        closed = True if closed is None else closed
    elif tokenizer is not None:
        vocabulary = whole_words(tokenizer)
        unknown = unknown_words(tokenizer, text)
        closed = is_closed(tokenizer) if closed is None else closed
    else:
        return VocabularyCheck(text)
    noun_list = tuple(nouns) if nouns is not None else default_nouns()
    found = [w for w in dict.fromkeys(words) if w in noun_list and w not in unknown]
    if closed and not found:
        others = sorted(vocabulary - set(noun_list))
        raise InvalidInputError(
            f"{what} {text.strip()!r} names nothing this model can draw"
            + (f" (it does not know {', '.join(repr(w) for w in unknown)})" if unknown else "")
            + f". It knows the objects {', '.join(n for n in noun_list if n in vocabulary)}"
            + (f" and the words {', '.join(others)}." if others else ".")
        )
    return VocabularyCheck(text, unknown, found, bool(closed))


def notes_for(checks: Iterable[VocabularyCheck]) -> list[str]:
    """The notes of several checks (unknown words named), without repeats."""
    return list(dict.fromkeys(note for check in checks if (note := check.note())))
