"""Input-only code-switching of one pretraining sample (PreAlign stage 2, DESIGN.md §1).

Vocabulary used here and in the rest of ``megatron_prealign.data``:

* *window*: the ``seq_length + 1`` token ids GPTDataset draws for one sample (the extra token is
  the last label).
* *switch span*: one dictionary-word occurrence found by the lexicon scan, as
  ``(start, length, entry_id)`` with ``start`` relative to the window.
* *lexicon entry*: one word of the lexicon (its token ids); its *translations* are other entries.

A switched span whose original word occupies tokens ``w1..wm`` is replaced in the input stream by
the tokens ``t1..tk`` of one of its translations. Targets: the position before the word still
predicts ``w1``; the positions holding ``t1..t(k-1)`` have no target (loss mask 0); the position
holding ``tk`` predicts the token that followed the original word. The stream is then cut (or,
when switching shortened it, padded: pad id in ``tokens`` and ``labels``, loss mask 0) to exactly
``seq_length``.

Every decision is a pure function of ``(seed, sample_index, span start within the window)``
through a counter-based hash (splitmix64), so DataLoader workers, restarts and parallel layouts
all see the same sample. No global RNG state is read or advanced.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "CodeSwitchConfig",
    "CodeSwitchStats",
    "LexiconArrays",
    "STATS_KEYS",
    "apply_codeswitch",
    "switch_decisions",
]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

STATS_KEYS = ("cs_switched_words", "cs_eligible_words", "cs_switched_tokens")
"""Sample-dict keys of the integer statistics; a training loop sums them over batches and ranks
(effective switch rate = switched words / eligible words)."""


@dataclass(frozen=True, kw_only=True)
class CodeSwitchConfig:
    """Knobs of input-only code-switching (the ``--codeswitch-*`` / ``--lexicon`` flags)."""

    ratio: float = 0.05
    """Probability that one eligible dictionary-word occurrence is replaced by a translation
    (``--codeswitch-ratio``). 0.05 is the PreAlign authors' value; 0 disables switching and makes
    the dataset return exactly what megatron-core's GPTDataset returns."""

    seed: int = 1234
    """Seed of the counter-based switching hash (``--codeswitch-seed``), independent of the
    dataset shuffling seed so the two can be varied separately. Must lie in [0, 2**64)."""

    lexicon_path: Optional[str] = None
    """Compiled lexicon (``--lexicon FILE.lex``) that the sidecar spans refer to; required when
    ``ratio > 0``."""

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise ValueError(f"--codeswitch-ratio must be a number, got {self.ratio!r}")
        if not math.isfinite(self.ratio) or not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"--codeswitch-ratio must be in [0, 1], got {self.ratio!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"--codeswitch-seed must be an integer, got {self.seed!r}")
        if not 0 <= int(self.seed) <= _MASK64:
            raise ValueError(f"--codeswitch-seed must be in [0, 2**64), got {self.seed!r}")
        if self.ratio > 0 and not self.lexicon_path:
            raise ValueError(
                f"--lexicon is required when --codeswitch-ratio > 0 (got ratio {self.ratio})"
            )


class CodeSwitchStats(NamedTuple):
    """Per-sample counts, taken at decision level (before the cut to ``seq_length``)."""

    switched_words: int
    """Spans replaced by a translation."""
    eligible_words: int
    """Spans that could switch: fully inside the window, followed by a token of the window, and
    with at least one translation."""
    switched_tokens: int
    """Translation tokens written into the input stream (sum of ``k`` over switched spans)."""

    def as_dict(self) -> dict:
        return dict(zip(STATS_KEYS, (self.switched_words, self.eligible_words, self.switched_tokens)))


class LexiconArrays(NamedTuple):
    """The flat arrays of a compiled lexicon that switching needs (picklable, no C++ objects)."""

    entry_offsets: np.ndarray
    """int64 (num_entries + 1,): entry ``i``'s tokens are ``entry_flat[entry_offsets[i]:entry_offsets[i+1]]``."""
    entry_flat: np.ndarray
    """int32 (total entry tokens,)."""
    translation_offsets: np.ndarray
    """int64 (num_entries + 1,): entry ``i``'s translations are
    ``translation_flat[translation_offsets[i]:translation_offsets[i+1]]``."""
    translation_flat: np.ndarray
    """int32 (total translations,): lexicon entry ids."""
    num_translations: np.ndarray
    """int64 (num_entries,): ``diff(translation_offsets)``, precomputed for the per-sample path."""

    @classmethod
    def from_lexicon(cls, lexicon: Any) -> "LexiconArrays":
        """Copy the flat arrays out of a ``megatron_prealign.lexicon.Lexicon`` and validate them."""
        return cls.validated(
            lexicon.entry_offsets,
            lexicon.entry_flat,
            lexicon.translation_offsets,
            lexicon.translation_flat,
        )

    @classmethod
    def validated(
        cls,
        entry_offsets: Sequence[int],
        entry_flat: Sequence[int],
        translation_offsets: Sequence[int],
        translation_flat: Sequence[int],
    ) -> "LexiconArrays":
        """Build from array-likes, checking the invariants the fast path relies on."""
        translation_offsets = np.ascontiguousarray(translation_offsets, dtype=np.int64)
        arrays = cls(
            np.ascontiguousarray(entry_offsets, dtype=np.int64),
            np.ascontiguousarray(entry_flat, dtype=np.int32),
            translation_offsets,
            np.ascontiguousarray(translation_flat, dtype=np.int32),
            np.diff(translation_offsets) if len(translation_offsets) else np.zeros(0, np.int64),
        )
        n = arrays.num_entries
        if arrays.entry_offsets.ndim != 1 or len(arrays.entry_offsets) < 1:
            raise ValueError("lexicon entry_offsets must be a non-empty 1-D array")
        if len(arrays.translation_offsets) != n + 1:
            raise ValueError(
                f"lexicon translation_offsets has {len(arrays.translation_offsets)} items, "
                f"expected num_entries + 1 = {n + 1}"
            )
        for name, offsets, flat in (
            ("entry", arrays.entry_offsets, arrays.entry_flat),
            ("translation", arrays.translation_offsets, arrays.translation_flat),
        ):
            if offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
                raise ValueError(f"lexicon {name}_offsets are not a valid offsets array")
        if n and np.any(np.diff(arrays.entry_offsets) <= 0):
            raise ValueError("lexicon has an entry with no tokens")
        if len(arrays.translation_flat) and (
            arrays.translation_flat.min() < 0 or arrays.translation_flat.max() >= n
        ):
            raise ValueError("lexicon translation ids fall outside [0, num_entries)")
        return arrays

    @property
    def num_entries(self) -> int:
        return len(self.entry_offsets) - 1

    def entry_lengths(self) -> np.ndarray:
        """int64 (num_entries,): number of tokens of each entry."""
        return np.diff(self.entry_offsets)


# ----------------------------------------------------------------------------------------------
# Counter-based hash
#
# key(seed, sample) = splitmix64(splitmix64(seed) ^ sample)        (one Python integer per sample)
# h(span)           = splitmix64(key ^ start)                      (vectorized over the spans)
# switch            = (h >> 11) * 2**-53 < ratio                   (53-bit uniform in [0, 1))
# choice            = (h & 0xFFFFFFFF) % number of translations
#
# The choice reuses the low 32 bits of the same hash: bits 0..10 never enter the switch test, and
# conditioning on "switched" (a bound on the top bits) leaves bits 11..31 uniform up to ~2**-27.

_U_GOLDEN = np.uint64(_GOLDEN)
_U_MIX1 = np.uint64(_MIX1)
_U_MIX2 = np.uint64(_MIX2)
_U30, _U27, _U31, _U11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_LOW32 = np.uint64(0xFFFFFFFF)


def _splitmix64_np(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer applied elementwise to a uint64 array (arrays wrap silently)."""
    z = x + _U_GOLDEN
    z = (z ^ (z >> _U30)) * _U_MIX1
    z = (z ^ (z >> _U27)) * _U_MIX2
    return z ^ (z >> _U31)


def _splitmix64_int(x: int) -> int:
    """Pure-Python twin of ``_splitmix64_np`` on one integer (used by the reference)."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _sample_key(seed: int, sample_index: int) -> int:
    return _splitmix64_int(_splitmix64_int(int(seed) & _MASK64) ^ (int(sample_index) & _MASK64))


def _threshold(ratio: float) -> np.uint64:
    """Integer form of ``u < ratio`` for ``u = m * 2**-53``: ``m < ceil(ratio * 2**53)``
    (exact: scaling by a power of two is exact in floating point)."""
    return np.uint64(math.ceil(float(ratio) * float(1 << 53)))


def switch_decisions(
    seed: int,
    sample_index: int,
    starts: np.ndarray,
    num_translations: np.ndarray,
    ratio: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """Decide, for spans of one sample, whether each switches and which translation it takes.

    Args:
        seed: the code-switch seed.
        sample_index: index of the sample in its dataset.
        starts: int (S,) span starts relative to the sample window.
        num_translations: int (S,) number of translations of each span's entry (> 0).
        ratio: switch probability.

    Returns:
        ``(switch, choice)``: bool (S,) and int64 (S,), ``choice`` in ``[0, num_translations)``
        (meaningful only where ``switch``).
    """
    h = _splitmix64_np(
        np.uint64(_sample_key(seed, sample_index)) ^ np.asarray(starts, dtype=np.int64).astype(np.uint64)
    )  # (S,)
    switch = (h >> _U11) < _threshold(ratio)  # (S,)
    n = np.maximum(np.asarray(num_translations, dtype=np.int64), 1).astype(np.uint64)  # (S,)
    choice = ((h & _LOW32) % n).astype(np.int64)  # (S,)
    return switch, choice


# ----------------------------------------------------------------------------------------------
# Vectorized numpy path (reference for the compiled kernel)


def _check_spans(starts: np.ndarray, lengths: np.ndarray, entry_ids: np.ndarray) -> None:
    if not (starts.shape == lengths.shape == entry_ids.shape) or starts.ndim != 1:
        raise ValueError("span starts, lengths and entry_ids must be 1-D arrays of equal length")
    if len(starts) == 0:
        return
    if lengths.min() <= 0:
        raise ValueError("switch spans must have positive lengths")
    if len(starts) > 1 and (starts[1:] - starts[:-1] - lengths[:-1]).min() < 0:
        raise ValueError("switch spans must be sorted by start and must not overlap")
    if entry_ids.min() < 0:  # ids past the end fail at the first lookup
        raise ValueError("switch span entry ids must be non-negative")


def _numpy_codeswitch(
    window_tokens: np.ndarray,
    spans: Tuple[np.ndarray, np.ndarray, np.ndarray],
    lexicon: LexiconArrays,
    ratio: float,
    seed: int,
    sample_index: int,
    seq_length: int,
    pad_id: int,
    valid_length: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, CodeSwitchStats]:
    """Vectorized numpy twin of `apply_codeswitch`: same arguments and returns,
    bit-identical results (kept as the tested reference of the compiled kernel)."""
    x = np.asarray(window_tokens).astype(np.int64)  # (L,) own copy
    L = int(x.shape[0])
    if x.ndim != 1 or L < 2:
        raise ValueError(f"window_tokens must be 1-D with at least 2 tokens, got shape {x.shape}")
    V = L if valid_length is None else int(valid_length)
    if not 0 <= V <= L:
        raise ValueError(f"valid_length must be in [0, {L}], got {valid_length}")
    starts = np.asarray(spans[0], dtype=np.int64)  # (S,)
    lengths = np.asarray(spans[1], dtype=np.int64)  # (S,)
    entries = np.asarray(spans[2], dtype=np.int64)  # (S,)
    _check_spans(starts, lengths, entries)

    # Eligible: inside the window, followed by a real token (start + length <= V - 1), with
    # something to switch to. Spans are sorted and disjoint, so the first two conditions select
    # an index range [i0, i1) (only the last span starting before V - 1 can reach past it).
    i0 = int(np.searchsorted(starts, 0))
    i1 = int(np.searchsorted(starts, V - 1))
    if i1 > i0 and starts[i1 - 1] + lengths[i1 - 1] > V - 1:
        i1 -= 1
    i1 = max(i0, i1)
    n_trans = lexicon.num_translations[entries[i0:i1]]  # (E,)
    has_translation = n_trans > 0  # (E,)
    all_have = bool(has_translation.all())
    num_eligible = (i1 - i0) if all_have else int(np.count_nonzero(has_translation))

    W = 0
    if ratio > 0 and num_eligible:
        h = _splitmix64_np(
            np.uint64(_sample_key(seed, sample_index)) ^ starts[i0:i1].astype(np.uint64)
        )  # (E,)
        hit = (h >> _U11) < _threshold(ratio)  # (E,)
        if not all_have:
            hit &= has_translation
        sw_local = np.flatnonzero(hit)  # (W,) switched spans, in stream order
        sw = sw_local + i0
        W = int(sw.shape[0])

    if W == 0:
        # Nothing switches: the plain shifted window (what GPTDataset does).
        n_out = L - 1
        tokens_full, labels_full = x[:-1], x[1:]  # (L-1,) each
        mask_full = np.ones(n_out, dtype=np.float32)
        stats = CodeSwitchStats(0, num_eligible, 0)
    else:
        a, m = starts[sw], lengths[sw]  # (W,) each
        choice = ((h[sw_local] & _LOW32) % n_trans[sw_local].astype(np.uint64)).astype(np.int64)  # (W,)
        trans = lexicon.translation_flat[
            lexicon.translation_offsets[entries[sw]] + choice
        ].astype(np.int64)  # (W,) translation entry ids
        t_beg = lexicon.entry_offsets[trans]  # (W,)
        k = lexicon.entry_offsets[trans + 1] - t_beg  # (W,) translation lengths
        k_beg = np.cumsum(k) - k  # (W,) exclusive cumsum
        K = int(k_beg[-1] + k[-1])
        owner = np.repeat(np.arange(W), k)  # (K,) switched span of each translation token
        j = np.arange(K) - k_beg[owner]  # (K,) index inside its translation

        # The switched stream is 2W+1 segments: kept x[prev_end:a_w], then translation w, ...
        ends = a + m  # (W,)
        seg_len = np.empty(2 * W + 1, dtype=np.int64)  # (2W+1,)
        seg_len[0] = a[0]
        seg_len[2:-1:2] = a[1:] - ends[:-1]
        seg_len[-1] = L - ends[-1]
        seg_len[1::2] = k
        seg_src = np.empty(2 * W + 1, dtype=np.int64)  # (2W+1,) segment start in `pool`
        seg_src[0] = 0
        seg_src[2::2] = ends
        seg_src[1::2] = L + k_beg
        seg_out = np.cumsum(seg_len) - seg_len  # (2W+1,) segment start in the output
        Lz = int(seg_out[-1] + seg_len[-1])  # full switched stream incl. the label-only token
        pool = np.concatenate((x, lexicon.entry_flat[t_beg[owner] + j]))  # (L+K,)
        z = pool[np.repeat(seg_src - seg_out, seg_len) + np.arange(Lz)]  # (Lz,)

        n_out = Lz - 1
        tokens_full = z[:-1]  # (Lz-1,)
        labels_full = z[1:].copy()  # (Lz-1,) next input token; rewired below
        p = seg_out[1::2]  # (W,) output position of each t1
        # The position before a switched word still predicts the original first token w1
        # (and, for adjacent switched words, the token after the previous word).
        if p[0] == 0:
            labels_full[p[1:] - 1] = x[a[1:]]
        else:
            labels_full[p - 1] = x[a]
        # t1..t(k-1) have no target.
        mask_full = np.ones(n_out, dtype=np.float32)  # (Lz-1,)
        not_last = j < (k - 1)[owner]  # (K,)
        mask_full[(p[owner] + j)[not_last]] = 0.0
        stats = CodeSwitchStats(W, num_eligible, K)

    if n_out >= seq_length:
        tokens = np.ascontiguousarray(tokens_full[:seq_length])
        labels = np.ascontiguousarray(labels_full[:seq_length])
        loss_mask = np.ascontiguousarray(mask_full[:seq_length])
    else:
        # Switching shortened the stream: pad the tail, without a target.
        tokens = np.full(seq_length, pad_id, dtype=np.int64)
        labels = np.full(seq_length, pad_id, dtype=np.int64)
        loss_mask = np.zeros(seq_length, dtype=np.float32)
        tokens[:n_out] = tokens_full
        labels[:n_out] = labels_full
        loss_mask[:n_out] = mask_full
    return tokens, labels, loss_mask, stats


# ----------------------------------------------------------------------------------------------
# Compiled path (the per-sample hot path of CodeSwitchGPTDataset)

_native_module = None
_WINDOW_DTYPES = (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.uint16))
_SPAN_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def _native():
    """``megatron_prealign._C``, imported on first use (no build happens at import)."""
    global _native_module
    if _native_module is None:
        try:
            _native_module = importlib.import_module("megatron_prealign._C")
        except ImportError as exc:
            raise ImportError(
                "megatron_prealign._C (the compiled code-switch kernel) is not built or does not "
                f"load ({exc}); run `pip install -e .` in the repository root to build it"
            ) from exc
    return _native_module


def apply_codeswitch(
    window_tokens: np.ndarray,
    spans: Tuple[np.ndarray, np.ndarray, np.ndarray],
    lexicon: LexiconArrays,
    ratio: float,
    seed: int,
    sample_index: int,
    seq_length: int,
    pad_id: int,
    valid_length: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, CodeSwitchStats]:
    """Code-switch one sample window and build its ``tokens``, ``labels`` and switch loss mask.

    Runs the compiled kernel ``megatron_prealign._C.apply_codeswitch`` (csrc/codeswitch.cpp),
    whose results are bit-identical to `_numpy_codeswitch` and `_reference_codeswitch` (the
    parity tests compare all three). int64/int32/uint16 windows and int32 or int64 span arrays
    are read in place; other dtypes are converted first.

    Args:
        window_tokens: int (L,) token ids; ``L - 1`` input positions, the last token is a label
            only. GPTDataset's window has ``L = seq_length + 1``.
        spans: ``(starts, lengths, entry_ids)``, int (S,) each, sorted and non-overlapping, starts
            relative to the window. Spans outside the eligible region are ignored.
        lexicon: the lexicon's flat arrays.
        ratio: switch probability per eligible span, in [0, 1].
        seed: code-switch seed.
        sample_index: the sample's index (part of the hash key).
        seq_length: length of every returned array.
        pad_id: id written into ``tokens`` and ``labels`` of the tail when switching shortened
            the stream below ``seq_length``.
        valid_length: number of real tokens at the head of the window (the rest is padding that
            GPTDataset appended); a span may switch only if ``start + length < valid_length``,
            i.e. the token following it is real. Defaults to ``L``.

    Returns:
        ``(tokens, labels, loss_mask, stats)``: int64 (seq_length,), int64 (seq_length,),
        float32 (seq_length,) with 0 at positions without a target (``t1..t(k-1)`` and the pad
        tail), and the decision-level ``CodeSwitchStats``.

    Raises:
        ValueError: malformed window, spans (unsorted, overlapping, non-positive lengths, entry
            ids outside the lexicon) or lexicon arrays, ``valid_length`` outside ``[0, L]``, or
            ``ratio`` outside ``[0, 1]``.
    """
    x = np.asarray(window_tokens)
    if x.dtype not in _WINDOW_DTYPES:
        x = x.astype(np.int64)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"window_tokens must be 1-D with at least 2 tokens, got shape {x.shape}")
    starts, lengths, entries = (np.asarray(a) for a in spans)
    if not (starts.dtype == lengths.dtype == entries.dtype and starts.dtype in _SPAN_DTYPES):
        starts, lengths, entries = (a.astype(np.int64) for a in (starts, lengths, entries))
    tokens, labels, loss_mask, stats = _native().apply_codeswitch(
        np.ascontiguousarray(x),
        np.ascontiguousarray(starts),
        np.ascontiguousarray(lengths),
        np.ascontiguousarray(entries),
        lexicon.entry_offsets,
        lexicon.entry_flat,
        lexicon.translation_offsets,
        lexicon.translation_flat,
        float(ratio),
        int(seed) & _MASK64,
        int(sample_index) & _MASK64,
        int(seq_length),
        int(pad_id),
        x.shape[0] if valid_length is None else int(valid_length),
    )
    return tokens, labels, loss_mask, CodeSwitchStats._make(stats)


# ----------------------------------------------------------------------------------------------
# Reference


def _reference_codeswitch(
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
    """Slow, obviously-correct twin of ``apply_codeswitch`` (plain Python loops and integers).

    Walks the window left to right. An original token ``x[i]`` that is not switched emits input
    ``x[i]`` with target ``x[i+1]``; so the position before a switched word targets its ``w1``.
    A switched word emits ``t1..tk``: ``t1..t(k-1)`` without target (their label value is the
    next input token), ``tk`` with target = the token after the original word.
    """
    x = [int(t) for t in window_tokens]
    L = len(x)
    V = L if valid_length is None else int(valid_length)
    span_at = {
        int(s): (int(n), int(e)) for s, n, e in zip(spans[0], spans[1], spans[2])
    }
    key = _sample_key(seed, sample_index)

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
                h = _splitmix64_int(key ^ i)
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
