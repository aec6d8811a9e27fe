"""Mapping words and phrases of a prompt to their positions in the encoded token sequence."""

from __future__ import annotations

import re
from typing import Any

from ..errors import InvalidInputError


def _phrase_span(text: str, phrase: str, occurrence: int) -> tuple[int, int]:
    """Character span of the ``occurrence``-th whole-word, case-insensitive match of ``phrase``."""
    words = phrase.split()
    pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
    matches = list(re.finditer(pattern, text, flags=re.IGNORECASE))
    if len(matches) <= occurrence:
        found = f"{len(matches)} time(s)" if matches else "not at all"
        raise InvalidInputError(
            f"{phrase!r} occurs {found} in the prompt {text!r}; occurrence {occurrence} was asked for."
        )
    return matches[occurrence].span()


def _char_spans_by_decoding(tokenizer: Any, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decoded text of ``ids`` and each token's character span in it, by incremental decoding."""
    text = tokenizer.decode(ids)
    spans, start = [], 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1]))
        spans.append((start, end))
        start = end
    return text, spans


def token_indices(tokenizer: Any, prompt: str, phrase: str, *, occurrence: int = 0) -> list[int]:
    """Positions of ``phrase`` (a word or several) in ``tokenizer(prompt).input_ids``.

    Positions count the BOS token, so they index the text encoder's output and
    the last axis of the recorded maps directly. Words split into several
    sub-word pieces give several positions. Matching is case-insensitive and
    on whole words (``"red"`` does not match ``"bored"``); ``occurrence``
    picks among repeated matches. A fast tokenizer's offset mapping gives each
    token's characters; other tokenizers are decoded one token more at a time.

    Raises :class:`InvalidInputError` when the phrase is not in the prompt or
    lies beyond the tokenizer's maximum length.
    """
    if not prompt or not prompt.strip():
        raise InvalidInputError("The prompt is empty.")
    if not phrase or not phrase.strip():
        raise InvalidInputError("The word or phrase to find is empty.")
    if occurrence < 0:
        raise InvalidInputError(f"occurrence must be >= 0, got {occurrence}.")

    if getattr(tokenizer, "is_fast", False):
        encoding = tokenizer(prompt, truncation=True, return_offsets_mapping=True, return_special_tokens_mask=True)
        positions = [i for i, special in enumerate(encoding["special_tokens_mask"]) if not special]
        spans = [tuple(encoding["offset_mapping"][i]) for i in positions]
        text = prompt
    else:
        encoding = tokenizer(prompt, truncation=True, return_special_tokens_mask=True)
        positions = [i for i, special in enumerate(encoding["special_tokens_mask"]) if not special]
        text, spans = _char_spans_by_decoding(tokenizer, [encoding["input_ids"][i] for i in positions])

    start, end = _phrase_span(text, phrase, occurrence)
    found = [pos for pos, (s, e) in zip(positions, spans) if s < end and e > start]
    if not found:
        raise InvalidInputError(
            f"{phrase!r} is in the prompt but beyond the tokenizer's {tokenizer.model_max_length} tokens."
        )
    return found
