"""Tokenizers built in code over a closed vocabulary (no files, no downloads)."""

from __future__ import annotations

from typing import Iterable

from transformers import CLIPTokenizer

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
