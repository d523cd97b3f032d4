"""The plain-Python oracle of the compiled code-switch path (``_C.CodeSwitcher``).

Slow and obviously correct: plain loops and Python integers, written from the rules in
megatron_prealign/data/README.md, never from the C++ code. The tests check the compiled path
against it bit for bit:

* `reference_window_spans`: GPTDataset's document walk over the sidecar spans of a sample window;
* `reference_codeswitch`: the switch of one window (tokens, labels, switch mask, counts);
* `reference_pad_step`: GPTDataset's last step (no loss where the label is pad, pad ids -> 0).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.codeswitch import CodeSwitchStats, LexiconArrays

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def splitmix64(x: int) -> int:
    """The splitmix64 finalizer on one integer, modulo 2**64."""
    z = (x + _GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & MASK64
    return z ^ (z >> 31)


def sample_key(seed: int, sample_index: int) -> int:
    return splitmix64(splitmix64(int(seed) & MASK64) ^ (int(sample_index) & MASK64))


def reference_codeswitch(
    window_tokens: Sequence[int],
    spans: Tuple[Sequence[int], Sequence[int], Sequence[int]],
    lexicon: LexiconArrays,
    ratio: float,
    seed: int,
    sample_index: int,
    seq_length: int,
    pad_id: int,
    valid_length: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, CodeSwitchStats]:
    """Switch one window: ``(tokens int64, labels int64, switch mask float32, counts)``.

    Walks the window left to right. An original token ``x[i]`` that is not switched emits input
    ``x[i]`` with target ``x[i+1]``; so the position before a switched word targets its ``w1``.
    A switched word emits ``t1..tk``: ``t1..t(k-1)`` without target (their label value is the
    next input token), ``tk`` with target = the token after the original word. A span may switch
    only if it starts inside the window and the token after it is one of the first
    ``valid_length`` (real) tokens. The stream is cut, or padded with ``pad_id`` and mask 0, to
    ``seq_length``.
    """
    x = [int(t) for t in window_tokens]
    L = len(x)
    V = L if valid_length is None else int(valid_length)
    span_at = {int(s): (int(n), int(e)) for s, n, e in zip(spans[0], spans[1], spans[2])}
    key = sample_key(seed, sample_index)

    inputs, labels, mask = [], [], []
    switched = eligible = switched_tokens = 0
    i = 0
    while i < L - 1:
        if i in span_at:
            length, entry = span_at[i]
            t_lo = int(lexicon.translation_offsets[entry])
            t_hi = int(lexicon.translation_offsets[entry + 1])
            if i + length <= V - 1 and t_hi > t_lo:
                eligible += 1
                h = splitmix64(key ^ i)
                u = (h >> 11) / float(1 << 53)
                if u < ratio:
                    pick = (h & 0xFFFFFFFF) % (t_hi - t_lo)
                    target_entry = int(lexicon.translation_flat[t_lo + pick])
                    e_lo = int(lexicon.entry_offsets[target_entry])
                    e_hi = int(lexicon.entry_offsets[target_entry + 1])
                    translation = [int(t) for t in lexicon.entry_flat[e_lo:e_hi]]
                    for jj, tok in enumerate(translation):
                        inputs.append(tok)
                        if jj < len(translation) - 1:
                            labels.append(translation[jj + 1])
                            mask.append(0.0)
                        else:
                            labels.append(x[i + length])
                            mask.append(1.0)
                    switched += 1
                    switched_tokens += len(translation)
                    i += length
                    continue
        inputs.append(x[i])
        labels.append(x[i + 1])
        mask.append(1.0)
        i += 1

    while len(inputs) < seq_length:
        inputs.append(pad_id)
        labels.append(pad_id)
        mask.append(0.0)
    return (
        np.array(inputs[:seq_length], dtype=np.int64),
        np.array(labels[:seq_length], dtype=np.int64),
        np.array(mask[:seq_length], dtype=np.float32),
        CodeSwitchStats(switched, eligible, switched_tokens),
    )


def reference_window_spans(
    document_spans: Callable[[int], Tuple[Sequence[int], Sequence[int], Sequence[int]]],
    document_index: Sequence[int],
    doc_begin: int,
    offset_begin: int,
    doc_end: int,
    offset_end: int,
    extra_token: int,
    doc_lengths: Sequence[int],
) -> Tuple[Tuple[List[int], List[int], List[int]], int, int]:
    """GPTDataset's document walk of one sample window, and the spans inside it.

    The window is documents ``document_index[doc_begin..doc_end]``, the first from token
    ``offset_begin``, the last up to token ``offset_end + extra_token`` (exclusive), then pad ids
    where a document ran out. A span of ``document_spans(doc)`` (document coordinates) is kept
    when it lies fully inside the real tokens of its part.

    Returns:
        ``((starts, lengths, entry_ids) in window coordinates, valid_length, walked)``: the
        number of real tokens before the pad ids, and the number of window positions the walk
        covers (real and pad).
    """
    starts: List[int] = []
    lengths: List[int] = []
    entries: List[int] = []
    pos = valid = 0
    for i in range(doc_begin, doc_end + 1):
        doc = int(document_index[i])
        lo = offset_begin if i == doc_begin else 0
        available = int(doc_lengths[doc]) - lo
        requested = offset_end + extra_token - lo if i == doc_end else available
        real = max(0, min(requested, available))
        for s, n, e in zip(*document_spans(doc)):
            if lo <= int(s) and int(s) + int(n) <= lo + real:
                starts.append(int(s) - lo + pos)
                lengths.append(int(n))
                entries.append(int(e))
        valid = pos + real
        pos += requested
    return (starts, lengths, entries), valid, pos


def reference_pad_step(
    tokens: np.ndarray, labels: np.ndarray, loss_mask: np.ndarray, pad_id: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPTDataset's pad step on copies: loss 0 where the label is pad, then pad ids -> 0."""
    tokens, labels, loss_mask = tokens.copy(), labels.copy(), loss_mask.copy()
    loss_mask[labels == pad_id] = 0
    tokens[tokens == pad_id] = 0
    labels[labels == pad_id] = 0
    return tokens, labels, loss_mask
