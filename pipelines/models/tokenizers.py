"""Tokenizers built in code over a closed vocabulary (no files, no downloads)."""

from __future__ import annotations

import json
import re
import warnings
from typing import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from ..errors import UnknownWordsWarning

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def closed_vocabulary_merges(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-pair vocab and merges under which every word of ``words`` is one token.

    The merges are learnt by byte-pair encoding over the words themselves (the
    ``tokenizers`` trainer, run until no pair is left), so applying them in rank
    order rebuilds each word whole. Hand-written left-to-right chains do not:
    ``r i`` from "right" outranks ``t r`` from "triangle" and strands it in
    pieces. Single letters (and letter + ``</w>``) stay in the vocabulary, so an
    unknown word is spelt out letter by letter instead of vanishing.
    """
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789,.'-")
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=1_000_000, min_frequency=1, special_tokens=[BOS, EOS], initial_alphabet=alphabet,
        end_of_word_suffix="</w>", show_progress=False,
    )
    bpe.train_from_iterator(sorted({w.lower() for w in words if w}), trainer)
    learnt = json.loads(bpe.to_str())["model"]
    vocab = dict(sorted(learnt["vocab"].items(), key=lambda item: item[1]))
    for letter in alphabet:
        vocab.setdefault(letter + "</w>", len(vocab))
    merges = [tuple(pair.split(" ")) if isinstance(pair, str) else tuple(pair) for pair in learnt["merges"]]
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
