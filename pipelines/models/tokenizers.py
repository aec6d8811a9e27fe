"""Tokenizers built in code over a closed vocabulary (no files, no downloads)."""

from __future__ import annotations

import re
import warnings
from typing import Iterable

from transformers import CLIPTokenizer

from ..errors import UnknownWordsWarning

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def closed_vocabulary_merges(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-pair vocab and merges under which every word of ``words`` is one token.

    Each word gets a left-to-right merge chain (``r e`` -> ``re``, ``re d</w>``
    -> ``red</w>``); single letters stay in the vocabulary, so an unknown word is
    spelt out letter by letter instead of vanishing.
    """
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    merges: list[tuple[str, str]] = []
    seen_merges: set[tuple[str, str]] = set()
    for letter in "abcdefghijklmnopqrstuvwxyz0123456789,.'-":
        for piece in (letter, letter + "</w>"):
            vocab.setdefault(piece, len(vocab))
    for word in sorted({w.lower() for w in words if w}):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        for piece in pieces:
            vocab.setdefault(piece, len(vocab))
        current = pieces[0]
        for piece in pieces[1:]:
            pair = (current, piece)
            current = current + piece
            if pair not in seen_merges:
                seen_merges.add(pair)
                merges.append(pair)
            vocab.setdefault(current, len(vocab))
    return vocab, merges


def closed_vocabulary_tokenizer(words: Iterable[str], model_max_length: int = 77) -> CLIPTokenizer:
    """A :class:`CLIPTokenizer` in which each of ``words`` is a single token.

    It saves with ``save_pretrained`` and reloads offline like any CLIP tokenizer.
    """
    vocab, merges = closed_vocabulary_merges(words)
    return CLIPTokenizer(
        vocab=vocab, merges=merges, unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=EOS,
        model_max_length=model_max_length,
    )


def unknown_words(tokenizer, text: str) -> list[str]:
    """Words of ``text`` that are not one whole token of ``tokenizer`` (spelt out piece by piece).

    For the tiny pack's closed vocabulary this names the words the model never
    saw; a hub CLIP tokenizer knows nearly every English word.
    """
    vocab = tokenizer.get_vocab()
    words = re.findall(r"[a-z0-9]+", text.lower())
    return list(dict.fromkeys(word for word in words if word + "</w>" not in vocab))


def warn_unknown_words(tokenizer, texts: Iterable[str]) -> list[str]:
    """Warn (:class:`UnknownWordsWarning`) about words the tokenizer does not know; return them."""
    unknown = list(dict.fromkeys(word for text in texts for word in unknown_words(tokenizer, text)))
    if unknown:
        warnings.warn(
            f"The model does not know the word(s) {', '.join(repr(w) for w in unknown)}; they are spelt out "
            "letter by letter and will likely be ignored.",
            UnknownWordsWarning,
            stacklevel=2,
        )
    return unknown
