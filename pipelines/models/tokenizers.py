"""Tokenizers built in code over a closed vocabulary (no files, no downloads)."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from typing import Iterable

from transformers import CLIPTokenizer

from ..errors import UnknownWordsWarning

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """``word`` with every left-to-right occurrence of ``pair`` joined into one symbol."""
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def closed_vocabulary_merges(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-pair vocab and merges under which every word of ``words`` is one token.

    The merges are learnt by byte-pair encoding over the words themselves (each
    word counted once, the most frequent pair merged first, ties broken by the
    pair's spelling, until every word is one symbol), so applying them in rank
    order rebuilds each word whole, and the same words always give the same
    token ids (``tokenizers``' trainer breaks ties by hash order, which changed
    the ids from run to run). Hand-written left-to-right chains do not rebuild
    words: ``r i`` from "right" outranks ``t r`` from "triangle" and strands it
    in pieces. Single letters (and letter + ``</w>``) stay in the vocabulary, so
    an unknown word is spelt out letter by letter instead of vanishing.
    """
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789,.'-")
    corpus = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in sorted({w.lower() for w in words if w})]
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(pair for word in corpus for pair in zip(word, word[1:]))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        corpus = [_merge_pair(word, best) for word in corpus]
    symbols = [BOS, EOS, *alphabet, *(letter + "</w>" for letter in alphabet)]
    symbols += [left + right for left, right in merges]
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
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
