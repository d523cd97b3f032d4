"""Hand-made code-switch data shared by the unit tests: lexicon arrays from token lists, a token
dataset with its sidecar from documents and span triples, and the compiled switch of one window
called the way the tests compare it with the oracle (tests/_codeswitch_reference.py)."""
from __future__ import annotations

import os

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_prealign.data.codeswitch import CodeSwitchStats, LexiconArrays, _native
from megatron_prealign.data.integrity import file_sha256
from megatron_prealign.data.sidecar import SidecarWriter, sidecar_prefix

SHA = "a" * 64
MASK64 = (1 << 64) - 1
FINGERPRINT = "f" * 64


def make_lexicon(entries, translations) -> LexiconArrays:
    """Flat arrays from a list of token lists and a list of translation-id lists."""
    entry_offsets = np.concatenate(([0], np.cumsum([len(e) for e in entries])))
    trans_offsets = np.concatenate(([0], np.cumsum([len(t) for t in translations])))
    return LexiconArrays.validated(
        entry_offsets,
        [t for e in entries for t in e],
        trans_offsets,
        [t for ts in translations for t in ts],
    )


def write_dataset(prefix, docs, spans, *, sha=SHA, meta_lengths=None) -> str:
    """Token docs (lists of ids) and per-doc span triples -> token dataset + sidecar; the prefix."""
    prefix = str(prefix)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for doc in docs:
        builder.add_document(np.asarray(doc, dtype=np.int32), [len(doc)])
    builder.finalize(prefix + ".idx")
    writer = SidecarWriter(sidecar_prefix(prefix) + ".bin")
    for triples in spans:
        t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        writer.add_document(t[:, 0], t[:, 1], t[:, 2])
    writer.finalize(sidecar_prefix(prefix) + ".idx")
    lengths = np.asarray([len(d) for d in docs] if meta_lengths is None else meta_lengths, dtype=np.int32)
    writer.make_meta(lengths, lexicon_sha256=sha, tokenizer_fingerprint=FINGERPRINT,
                     token_bin_size=os.path.getsize(prefix + ".bin"),
                     token_bin_sha256=file_sha256(prefix + ".bin")).write(sidecar_prefix(prefix) + ".json")
    return prefix


def compiled_switch(window, spans, lexicon, ratio, seed, sample_index, seq_length, pad_id, valid_length=None):
    """``_C.CodeSwitcher(...).switch``: the compiled switch of one window with the given spans
    (window coordinates), as ``(tokens, labels, switch mask, CodeSwitchStats)``; the same
    arguments as `reference_codeswitch`. Windows become int64 and spans int32, the dtypes the
    dataset hands over."""
    window = np.ascontiguousarray(window, dtype=np.int64)
    starts, lengths, entries = (np.ascontiguousarray(c, dtype=np.int32) for c in spans)
    switcher = _native().CodeSwitcher(lexicon.native(), ratio, int(seed) & MASK64, seq_length, pad_id)
    tokens, labels, mask, counts = switcher.switch(
        window, starts, lengths, entries, int(sample_index) & MASK64,
        len(window) if valid_length is None else valid_length,
    )
    return tokens, labels, mask, CodeSwitchStats._make(counts)
