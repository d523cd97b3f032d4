"""Tier 1-2 (files on disk, no model, well under a second each): the code-switch sidecar.

Layout (a stock megatron-core IndexedDataset of int32 triples, one sequence per document),
window lookups by the compiled walk (memory-mapped and read from the file), and the validation
that refuses a sidecar belonging to other tokens or another lexicon, naming both files and the
fix.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data.codeswitch import LexiconArrays
from megatron_prealign.data.sidecar import (
    CodeSwitchSidecar,
    SidecarError,
    decode_spans,
    encode_spans,
    sidecar_prefix,
    validate_sidecar,
)

from tests._codeswitch_data import FINGERPRINT, SHA
from tests._codeswitch_data import write_dataset as write


# Entries: 0 -> 1 token, 1 -> 2 tokens, 2 -> 3 tokens (translations irrelevant here).
LEX = LexiconArrays.validated([0, 1, 3, 6], [5, 6, 7, 8, 9, 10], [0, 1, 2, 3], [1, 2, 0])
DOCS = [list(range(10)), [1, 2, 3], [], list(range(20))]
SPANS = [[(0, 1, 0), (2, 2, 1), (6, 3, 2)], [], [], [(1, 1, 0), (4, 2, 1), (10, 1, 0), (17, 3, 2)]]


def test_layout_is_a_stock_indexed_dataset(tmp_path):
    prefix = write(tmp_path / "x", DOCS, SPANS)
    stock = IndexedDataset(sidecar_prefix(prefix))
    assert stock.index.dtype == np.int32
    assert len(stock) == len(DOCS)
    for doc, triples in enumerate(SPANS):
        np.testing.assert_array_equal(stock[doc], np.asarray(triples, dtype=np.int32).reshape(-1))
    flat = encode_spans(np.array([3, 9]), np.array([1, 2]), np.array([7, 8]))
    assert flat.dtype == np.int32 and flat.tolist() == [3, 1, 7, 9, 2, 8]
    assert [c.tolist() for c in decode_spans(flat)] == [[3, 9], [1, 2], [7, 8]]
    meta = validate_sidecar(prefix, lexicon=LEX, lexicon_sha256=SHA)
    assert (meta.num_documents, meta.num_tokens, meta.num_spans, meta.num_span_tokens) == (4, 33, 7, 13)


def window_spans(side, tokens, docs, offset_begin, offset_end, extra_token=1):
    """Spans of the window over documents ``docs`` (the first from ``offset_begin``, the last up
    to ``offset_end + extra_token``), by the compiled walk; its errors as the dataset raises them."""
    document_index = np.asarray(docs, dtype=np.int32)
    native = side.native(tokens.sequence_lengths)
    try:
        s, n, e, _ = native.window_spans(document_index, 0, offset_begin, len(docs) - 1, offset_end,
                                         extra_token, 1 << 20)
    except ValueError as exc:
        raise side.error(exc) from exc
    return s, n, e


@pytest.mark.parametrize("mmap", [True, False])
def test_window_lookups(tmp_path, mmap):
    prefix = write(tmp_path / "x", DOCS, SPANS)
    side = CodeSwitchSidecar(prefix, mmap=mmap)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    for doc, triples in enumerate(SPANS):
        for lo in range(0, 21, 3):
            for hi in range(lo, 22, 4):
                # A window of document `doc`'s tokens [lo, hi): the spans fully inside it.
                got = [c.tolist() for c in window_spans(side, tokens, [doc], lo, hi - 1)]
                end = min(hi, len(DOCS[doc]))
                want = [(s - lo, n, e) for s, n, e in triples if lo <= s and s + n <= end]
                assert list(zip(*got)) == want
    # Window = doc 0 tokens [2, 10) at position 0, then doc 3 tokens [0, 12) at position 8.
    s, n, e = window_spans(side, tokens, [0, 3], 2, 11)
    assert list(zip(s.tolist(), n.tolist(), e.tolist())) == [(0, 2, 1), (4, 3, 2), (9, 1, 0), (12, 2, 1), (18, 1, 0)]
    # A part that ends inside a span drops it (doc 3 [0, 11) keeps (10, 1), [0, 10) does not).
    assert window_spans(side, tokens, [3], 0, 10)[0].tolist() == [1, 4, 10]
    assert window_spans(side, tokens, [3], 0, 9)[0].tolist() == [1, 4]
    assert window_spans(side, tokens, [1, 2], 0, -1)[0].size == 0
    clone = pickle.loads(pickle.dumps(side))
    assert clone.spans(3)[0].tolist() == [1, 4, 10, 17]


def test_missing_sidecar_names_files_and_fix(tmp_path):
    prefix = str(tmp_path / "plain")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    builder.add_document(np.arange(4, dtype=np.int32), [4])
    builder.finalize(prefix + ".idx")
    with pytest.raises(SidecarError) as err:
        CodeSwitchSidecar(prefix)
    message = str(err.value)
    assert prefix + "_codeswitch" in message and prefix + ".{bin,idx}" in message
    assert "preprocess_data.py" in message and "--lexicon" in message


def test_sidecar_of_other_tokens_is_refused(tmp_path):
    prefix = write(tmp_path / "x", DOCS, SPANS)
    other = write(tmp_path / "y", DOCS[:3], SPANS[:3])
    side = CodeSwitchSidecar(prefix)
    with pytest.raises(SidecarError, match="documents") as err:
        side.check_matches(IndexedDataset(other))
    assert prefix in str(err.value) and other in str(err.value)
    # Same document count, different lengths.
    shifted = write(tmp_path / "z", [d + [0] for d in DOCS], SPANS)
    with pytest.raises(SidecarError, match="document lengths differ"):
        side.check_matches(IndexedDataset(shifted))
    with pytest.raises(SidecarError, match="lexicon sha256"):
        side.check_matches(IndexedDataset(prefix), lexicon_sha256="b" * 64)
    with pytest.raises(SidecarError, match="tokenizer"):
        side.check_matches(IndexedDataset(prefix), tokenizer_fingerprint="0" * 64)
    side.check_matches(IndexedDataset(prefix), lexicon_sha256=SHA, tokenizer_fingerprint=FINGERPRINT)


@pytest.mark.parametrize(
    "bad_spans, problem",
    [
        ([[(0, 1, 0), (8, 3, 2)], [], [], []], "ends after its document"),
        ([[(2, 2, 1), (0, 1, 0)], [], [], []], "unsorted or overlapping"),
        ([[(0, 2, 1), (1, 1, 0)], [], [], []], "unsorted or overlapping"),
        ([[(0, 2, 0)], [], [], []], "differs from its entry"),
        ([[(0, 1, 7)], [], [], []], "outside the lexicon"),
        ([[(-1, 1, 0)], [], [], []], "start < 0"),
    ],
)
def test_full_validation_finds_broken_spans(tmp_path, bad_spans, problem):
    prefix = write(tmp_path / "x", DOCS, bad_spans)
    with pytest.raises(SidecarError, match=problem) as err:
        validate_sidecar(prefix, lexicon=LEX)
    assert "preprocess_data.py" in str(err.value)


def test_dataset_lookup_refuses_span_past_document(tmp_path):
    prefix = write(tmp_path / "x", DOCS, [[(8, 3, 2)], [], [], []])
    side = CodeSwitchSidecar(prefix)
    tokens = IndexedDataset(prefix)
    with pytest.raises(SidecarError, match="ends after its 10 tokens"):
        window_spans(side, tokens, [0], 0, 9)


def test_bulk_append_equals_add_document(tmp_path):
    from megatron_prealign.data.sidecar import append_documents

    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 1000, n).astype(np.int32) for n in (5, 0, 17, 1, 9)]
    one = IndexedDatasetBuilder(str(tmp_path / "one.bin"), dtype=np.uint16)
    for d in docs:
        one.add_document(d, [len(d)])
    one.finalize(str(tmp_path / "one.idx"))
    bulk = IndexedDatasetBuilder(str(tmp_path / "bulk.bin"), dtype=np.uint16)
    append_documents(bulk, np.concatenate(docs[:2]), [len(d) for d in docs[:2]])
    append_documents(bulk, np.concatenate(docs[2:]), [len(d) for d in docs[2:]])
    bulk.finalize(str(tmp_path / "bulk.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"one{suffix}").read_bytes() == (tmp_path / f"bulk{suffix}").read_bytes()
    with pytest.raises(ValueError, match="split"):
        append_documents(bulk, np.arange(3), [2])
