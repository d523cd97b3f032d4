"""Pure-Python twin of the compiled scan (`Lexicon.scan`), for parity tests and benchmarks.

It shares no code with the C++ path: instead of walking the trie it looks token windows up in a
dict keyed by token tuples, trying the longest candidate length first. Agreement between the two
on random lexicons and streams therefore checks the trie construction as well as the scan loop.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from megatron_prealign.lexicon.tokenizer import CONTINUATION, OTHER, WORD_START

__all__ = ["reference_scan", "reference_scan_entries"]


def reference_scan_entries(
    tokens: Sequence[int],
    entries: Mapping[tuple[int, ...], int],
    token_classes: Sequence[int],
    mode: str = "word",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan `tokens` for the token sequences in `entries` (tuple -> entry id).

    Same contract as `Lexicon.scan`: returns (starts int64, lengths int32, entry_ids int32).
    """
    if mode not in ("word", "longest-match"):
        raise ValueError(f"unknown mode {mode!r}")
    word_mode = mode == "word"
    toks = [int(t) for t in tokens]
    n = len(toks)
    vocab = len(token_classes)
    classes = [int(c) for c in token_classes]

    def cls(t: int) -> int:
        return classes[t] if 0 <= t < vocab else OTHER

    # Longest entry per first token bounds the window sizes worth trying.
    max_len: dict[int, int] = {}
    for seq in entries:
        max_len[seq[0]] = max(max_len.get(seq[0], 0), len(seq))

    starts, lengths, ids = [], [], []
    i = 0
    while i < n:
        limit = max_len.get(toks[i], 0)
        if limit == 0 or (word_mode and cls(toks[i]) != WORD_START):
            i += 1
            continue
        found = 0
        for length in range(min(limit, n - i), 0, -1):
            entry = entries.get(tuple(toks[i : i + length]))
            if entry is None:
                continue
            end = i + length
            if word_mode and end < n and cls(toks[end]) == CONTINUATION:
                continue
            starts.append(i)
            lengths.append(length)
            ids.append(entry)
            found = length
            break
        i += found if found else 1
    return (
        np.asarray(starts, dtype=np.int64),
        np.asarray(lengths, dtype=np.int32),
        np.asarray(ids, dtype=np.int32),
    )


def reference_scan(tokens: Sequence[int], lexicon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`reference_scan_entries` over a `Lexicon`'s entries that have at least one translation
    (the ones its compiled scan can report)."""
    entries = {
        tuple(int(t) for t in lexicon.entry_tokens(i)): i
        for i in range(lexicon.num_entries)
        if len(lexicon.translations(i))
    }
    return reference_scan_entries(tokens, entries, lexicon.token_classes, lexicon.mode)
