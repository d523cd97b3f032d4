"""Input-only code-switching of one pretraining sample (PreAlign stage 2, docs/DESIGN.md §1).

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

The one implementation is compiled (csrc/codeswitch.cpp, ``megatron_prealign._C.CodeSwitcher``,
used by `CodeSwitchGPTDataset`); this module holds what Python needs around it: the lexicon's
flat arrays, the per-sample statistics and the loader of the extension. The plain-Python oracle
the compiled code is tested against lives in ``tests/_codeswitch_reference.py``.
"""
from __future__ import annotations

import importlib
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = ["CodeSwitchStats", "LexiconArrays", "STATS_KEYS"]

STATS_KEYS = ("cs_switched_words", "cs_eligible_words", "cs_switched_tokens")
"""Sample-dict keys of the integer statistics; a training loop sums them over batches and ranks
(effective switch rate = switched words / eligible words)."""


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
        """Build from array-likes, checking the invariants the compiled path relies on."""
        arrays = cls(
            np.ascontiguousarray(entry_offsets, dtype=np.int64),
            np.ascontiguousarray(entry_flat, dtype=np.int32),
            np.ascontiguousarray(translation_offsets, dtype=np.int64),
            np.ascontiguousarray(translation_flat, dtype=np.int32),
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

    def without_sources(self, entry_ids) -> "LexiconArrays":
        """The same lexicon in which `entry_ids` have no translations: their occurrences are
        never switched (the pre-pass's held-out words, kept unseen by both stages)."""
        drop = np.zeros(self.num_entries, dtype=bool)
        drop[np.asarray(entry_ids, dtype=np.int64)] = True
        counts = np.diff(self.translation_offsets)
        keep = np.repeat(~drop, counts)
        offsets = np.concatenate([[0], np.cumsum(np.where(drop, 0, counts))]).astype(np.int64)
        return type(self)(self.entry_offsets, self.entry_flat, offsets,
                          np.ascontiguousarray(self.translation_flat[keep]))

    def entry_lengths(self) -> np.ndarray:
        """int64 (num_entries,): number of tokens of each entry."""
        return np.diff(self.entry_offsets)

    def native(self) -> Any:
        """The arrays as a ``megatron_prealign._C.CodeSwitchLexicon`` (held by reference, not
        copied), what ``_C.CodeSwitcher`` takes."""
        return _native().CodeSwitchLexicon(*self)


# ----------------------------------------------------------------------------------------------
# The compiled extension

_native_module = None


class ExtensionNotBuilt(ImportError):
    """`megatron_prealign._C` is missing or does not load (the message says how to build it)."""


def _native():
    """``megatron_prealign._C``, imported on first use (no build happens at import)."""
    global _native_module
    if _native_module is None:
        try:
            _native_module = importlib.import_module("megatron_prealign._C")
        except ImportError as exc:
            raise ExtensionNotBuilt(
                "megatron_prealign._C (the compiled code-switch kernel) is not built or does not "
                f"load ({exc}); run `pip install -e .` in the repository root to build it"
            ) from exc
    return _native_module
