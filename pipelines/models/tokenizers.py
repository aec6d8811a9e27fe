"""Tokenizers built in code over a closed vocabulary (no files, no downloads)."""

from __future__ import annotations

import heapq
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


def byte_pair_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Byte-pair merges learnt over ``words`` until every word is one symbol (CLIP-style ``</w>`` ends).

    Each word counts once; the most frequent pair is merged first, ties broken by the pair's spelling, so
    the same words always give the same merges. Pair counts are updated only in the words a merge touches
    (a heap with stale entries skipped), which keeps a few thousand words to a second or two.
    """
    corpus = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in sorted({w.lower() for w in words if w})]
    counts: Counter = Counter()
    holders: dict[tuple[str, str], set[int]] = {}
    for index, word in enumerate(corpus):
        for pair in zip(word, word[1:]):
            counts[pair] += 1
            holders.setdefault(pair, set()).add(index)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap:
        negative, best = heapq.heappop(heap)
        if counts.get(best, 0) != -negative or negative == 0:
            continue  # a stale entry: the pair's count changed after it was pushed
        merges.append(best)
        changed: set[tuple[str, str]] = set()
        for index in holders.pop(best, set()):
            word = corpus[index]
            for pair in zip(word, word[1:]):
                counts[pair] -= 1
                changed.add(pair)
            word = corpus[index] = _merge_pair(word, best)
            for pair in zip(word, word[1:]):
                counts[pair] += 1
                changed.add(pair)
                holders.setdefault(pair, set()).add(index)
        for pair in changed:
            if counts[pair] > 0:
                heapq.heappush(heap, (-counts[pair], pair))
            else:
                del counts[pair]
    return merges


def closed_vocabulary_merges(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-pair vocab and merges under which every word of ``words`` is one token.

    The merges come from :func:`byte_pair_merges` over the words themselves, so applying them in rank
    order rebuilds each word whole, and the same words always give the same token ids (``tokenizers``'
    trainer breaks ties by hash order, which changed the ids from run to run). Hand-written left-to-right
    chains do not rebuild words: ``r i`` from "right" outranks ``t r`` from "triangle" and strands it in
    pieces. Single letters (and letter + ``</w>``) stay in the vocabulary, so an unknown word is spelt out
    letter by letter instead of vanishing.
    """
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789,.'-")
    merges = byte_pair_merges(words)
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
