"""Compiled per-sample code-switch path (csrc/codeswitch.cpp, `megatron_prealign._C`) against
the plain-Python oracle (tests/_codeswitch_reference.py).

* ``CodeSwitcher.switch``: the switch of one window agrees bit for bit with
  `reference_codeswitch` on every input; bad arrays raise ValueError.
* ``SidecarSpans.window_spans``: the compiled document walk over the sidecar equals
  `reference_window_spans`, memory-mapped and read from the file alike.
* ``CodeSwitcher.sample`` (walk + switch + GPTDataset's pad step in one call) equals the three
  oracle stages, and CodeSwitchGPTDataset returns the same samples with a memory-mapped sidecar
  as with file reads.
"""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign import _C
from megatron_prealign.data.codeswitch import CodeSwitchStats
from megatron_prealign.data.sidecar import CodeSwitchSidecar, SidecarError
from tests._codeswitch_data import compiled_switch, make_lexicon, write_dataset
from tests._codeswitch_reference import (
    reference_codeswitch,
    reference_pad_step,
    reference_window_spans,
)

PAD = -1


def assert_agrees(window, spans, lexicon, ratio, seed, sample_index, seq_length, valid_length):
    args = (lexicon, ratio, seed, sample_index, seq_length, PAD, valid_length)
    compiled = compiled_switch(window, spans, *args)
    reference = reference_codeswitch(window, spans, *args)
    for i, dtype in enumerate((np.int64, np.int64, np.float32)):
        assert compiled[i].dtype == dtype and compiled[i].shape == (seq_length,)
        np.testing.assert_array_equal(compiled[i], reference[i], err_msg=f"compiled vs reference, output {i}")
    assert compiled[3] == reference[3], f"stats: compiled {compiled[3]} vs reference {reference[3]}"
    assert isinstance(compiled[3], CodeSwitchStats)
    return compiled


# entry 0 [10] -> 1 (longer); 1 [20, 21] -> 0 (shorter); 2 [30, 31, 32] -> 3 (shorter);
# 3 [40] -> 2 (longer); 4 [50, 51] -> 2 (longer multi-token); 5 [60] -> nothing
LEX = make_lexicon(
    [[10], [20, 21], [30, 31, 32], [40], [50, 51], [60]],
    [[1], [0], [3], [2], [2], []],
)


def spans_of(*triples, dtype=np.int64):
    if not triples:
        return (np.zeros(0, dtype),) * 3
    return tuple(np.asarray(c, dtype=dtype) for c in zip(*triples))


@pytest.mark.parametrize(
    "window, spans, seq_length, valid_length",
    [
        ([10, 1, 2, 3, 4], [(0, 1, 0)], 4, None),  # switch at the first position, longer
        ([1, 2, 3, 10, 4], [(3, 1, 0)], 4, None),  # last switchable position, longer: cut
        ([1, 2, 3, 30, 31, 32, 4], [(3, 3, 2)], 6, None),  # last position, shorter: padded
        ([1, 2, 3, 4, 10], [(4, 1, 0)], 4, None),  # span on the label-only token: never
        ([20, 21, 10, 40, 50, 51, 7], [(0, 2, 1), (2, 1, 0), (3, 1, 3), (4, 2, 4)], 6, None),
        ([60, 1, 2, 3], [(0, 1, 5)], 3, None),  # no translation: not eligible
        ([10, 1, 10, 2, 0, 0], [(0, 1, 0), (2, 1, 0)], 5, 3),  # followed by padding
        ([1, 2, 3], [], 2, None),  # empty spans
        ([1, 2, 3], [], 5, 0),  # valid_length 0, padded
    ],
)
@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_hand_made_edge_cases(window, spans, seq_length, valid_length, ratio):
    out = assert_agrees(
        np.asarray(window, dtype=np.int64), spans_of(*spans), LEX, ratio, 5, 11, seq_length, valid_length
    )
    if ratio == 0.0:
        assert out[3].switched_words == 0


def test_switch_at_first_position_exact_values():
    tokens, labels, mask, stats = compiled_switch(
        np.array([10, 1, 2, 3], np.int64), spans_of((0, 1, 0)), LEX, 1.0, 0, 0, 3, PAD
    )
    assert tokens.tolist() == [20, 21, 1]
    assert labels.tolist() == [21, 1, 2]
    assert mask.tolist() == [0.0, 1.0, 1.0]
    assert stats == CodeSwitchStats(1, 1, 2)


def _switcher(arrays=None, ratio=1.0, seq_length=9):
    lexicon = _C.CodeSwitchLexicon(*(arrays if arrays is not None else LEX))
    return _C.CodeSwitcher(lexicon, ratio, 3, seq_length, PAD)


@pytest.mark.parametrize("window_dtype", [np.int64, np.int32, np.uint16, np.int16])
@pytest.mark.parametrize("span_dtype", [np.int32, np.int64, np.uint8])
def test_dtypes_and_strided_inputs(window_dtype, span_dtype):
    # The binding reads what the dataset hands over in place (GPTDataset's int64 window, the
    # walk's int32 spans) and refuses anything else instead of casting.
    window = np.asarray([1, 20, 21, 2, 30, 31, 32, 3, 10, 4], dtype=window_dtype)
    triples = np.asarray([(1, 2, 1), (4, 3, 2), (8, 1, 0)], dtype=span_dtype)
    spans = tuple(np.ascontiguousarray(triples[:, i]) for i in range(3))
    switcher = _switcher()
    if window_dtype is np.int64 and span_dtype is np.int32:
        out = switcher.switch(window, *spans, 9, len(window))
        assert tuple(out[3]) == tuple(assert_agrees(window, spans, LEX, 1.0, 3, 9, 9, None)[3])
        with pytest.raises(ValueError, match="contiguous"):
            switcher.switch(window, triples[:, 0], triples[:, 1], triples[:, 2], 9, len(window))  # strided
    else:
        with pytest.raises(ValueError, match="dtype"):
            switcher.switch(window, *spans, 9, len(window))


@pytest.mark.parametrize(
    "spans, match",
    [
        (spans_of((3, 2, 0), (2, 1, 0)), "sorted"),
        (spans_of((1, 2, 0), (2, 1, 0)), "sorted"),
        (spans_of((1, 0, 0)), "positive"),
        (spans_of((1, 1, -1)), "entry id"),
        (spans_of((1, 1, 6)), "entry id"),
        ((np.zeros(2, np.int64), np.ones(1, np.int64), np.zeros(2, np.int64)), "equal length"),
    ],
)
def test_bad_spans_raise_value_error(spans, match):
    with pytest.raises(ValueError, match=match):
        compiled_switch(np.arange(10), spans, LEX, 1.0, 0, 0, 9, PAD)


def test_bad_arguments_raise_value_error():
    window = np.arange(10, dtype=np.int64)
    with pytest.raises(ValueError, match="at least 2"):
        compiled_switch(window[:1], spans_of(), LEX, 1.0, 0, 0, 9, PAD)
    with pytest.raises(ValueError, match="valid_length"):
        compiled_switch(window, spans_of(), LEX, 1.0, 0, 0, 9, PAD, valid_length=11)
    with pytest.raises(ValueError, match="valid_length"):
        compiled_switch(window, spans_of(), LEX, 1.0, 0, 0, 9, PAD, valid_length=-1)
    with pytest.raises(ValueError, match="ratio"):
        compiled_switch(window, spans_of(), LEX, 1.5, 0, 0, 9, PAD)
    with pytest.raises(ValueError, match="ratio"):
        compiled_switch(window, spans_of(), LEX, float("nan"), 0, 0, 9, PAD)


def _raw(window, spans, arrays, seq_length=4):
    return _switcher(arrays, seq_length=seq_length).switch(window, *spans, 0, len(window))


def test_binding_rejects_bad_arrays_without_crashing():
    window = np.array([10, 1, 2, 3, 4], np.int64)
    spans = spans_of((0, 1, 0), dtype=np.int32)
    arrays = list(LEX)
    assert _raw(window, spans, arrays)[3] == (1, 1, 2)
    with pytest.raises(ValueError, match="dtype"):
        _raw(window.astype(np.float64), spans, arrays)
    with pytest.raises(ValueError, match="1-D"):
        _raw(window.reshape(1, -1), spans, arrays)
    with pytest.raises(ValueError, match="contiguous"):
        _raw(np.repeat(window, 2)[::2], spans, arrays)
    with pytest.raises(ValueError, match="span starts has dtype float32"):
        _raw(window, tuple(a.astype(np.float32) for a in spans), arrays)
    with pytest.raises(ValueError, match="span lengths"):
        _raw(window, (spans[0], spans[1].astype(np.int64), spans[2]), arrays)
    with pytest.raises(ValueError, match="entry_offsets"):
        _raw(window, spans, [arrays[0].astype(np.int32)] + arrays[1:])
    with pytest.raises(ValueError, match="num_entries"):
        _raw(window, spans, [arrays[0][:-1]] + arrays[1:])
    with pytest.raises(ValueError, match="seq_length"):
        _raw(window, spans, arrays, seq_length=-1)
    # Corrupt lexicon arrays (bypassing LexiconArrays.validated) are caught where they are read.
    bad_translation_offsets = arrays[2].copy()
    bad_translation_offsets[1] = 1000
    with pytest.raises(ValueError, match="translation_offsets"):
        _raw(window, spans, arrays[:2] + [bad_translation_offsets, arrays[3]])
    bad_translation_flat = arrays[3].copy()
    bad_translation_flat[0] = 99
    with pytest.raises(ValueError, match="translation ids"):
        _raw(window, spans, arrays[:3] + [bad_translation_flat])
    bad_entry_offsets = arrays[0].copy()
    bad_entry_offsets[2] = 10_000
    with pytest.raises(ValueError, match="entry_offsets"):
        _raw(window, spans, [bad_entry_offsets] + arrays[1:])


def test_pinned_decisions_match_the_python_hash():
    # ratio 0.5 over many spans: the compiled hash decides exactly like the numpy one.
    rng = np.random.default_rng(0)
    L = 4097
    window = rng.integers(0, 100, L).astype(np.int64)
    starts = np.arange(0, L - 1, 2, dtype=np.int32)
    spans = (starts, np.ones_like(starts), (starts % 5).astype(np.int32))
    out = assert_agrees(window, spans, LEX, 0.5, 2**64 - 1, 2**63 + 5, L - 1, None)
    assert 0.45 < out[3].switched_words / out[3].eligible_words < 0.55


@st.composite
def cases(draw):
    n_entries = draw(st.integers(1, 6))
    entries = [draw(st.lists(st.integers(0, 60), min_size=1, max_size=5)) for _ in range(n_entries)]
    translations = [draw(st.lists(st.integers(0, n_entries - 1), max_size=3)) for _ in range(n_entries)]
    L = draw(st.integers(2, 48))
    window = draw(st.lists(st.integers(0, 60), min_size=L, max_size=L))
    starts, lengths, ids = [], [], []
    pos = draw(st.integers(-4, 2))
    while pos < L + 2 and draw(st.booleans()):
        length = draw(st.integers(1, 5))
        starts.append(pos)
        lengths.append(length)
        ids.append(draw(st.integers(0, n_entries - 1)))
        pos += length + draw(st.integers(0, 3))
    seq_length = draw(st.one_of(st.just(L - 1), st.integers(0, 2 * L)))
    valid_length = draw(st.one_of(st.none(), st.integers(0, L)))
    ratio = draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1)))
    seed = draw(st.integers(0, 2**64 - 1))
    sample_index = draw(st.integers(0, 2**63 - 1))
    window_dtype = draw(st.sampled_from([np.int64, np.int32, np.uint16]))
    span_dtype = draw(st.sampled_from([np.int32, np.int64]))
    return (entries, translations, np.asarray(window, window_dtype),
            tuple(np.asarray(c, span_dtype) for c in (starts, lengths, ids)),
            seq_length, valid_length, ratio, seed, sample_index)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_equals_reference(case):
    entries, translations, window, spans, seq_length, valid_length, ratio, seed, sample_index = case
    lexicon = make_lexicon(entries, translations)
    assert_agrees(window, spans, lexicon, ratio, seed, sample_index, seq_length, valid_length)


# ----------------------------------------------------------------------------------------------
# Window span lookup


def oracle_walk(side, document_index, d0, o0, d1, o1, extra, doc_lengths):
    """`reference_window_spans` over the sidecar's documents, each decoded whole."""
    return reference_window_spans(side.spans, document_index, d0, o0, d1, o1, extra, doc_lengths)


@st.composite
def corpora(draw):
    n_docs = draw(st.integers(1, 6))
    # One fixed document with spans: megatron-core cannot memory-map an empty .bin.
    docs, spans = [list(range(12))], [[(2, 2, 1), (7, 1, 0)]]
    for _ in range(n_docs - 1):
        n = draw(st.integers(0, 30))
        docs.append(list(range(n)))
        triples, pos = [], draw(st.integers(0, 3))
        while pos < n and draw(st.booleans()):
            length = draw(st.integers(1, min(4, n - pos)))
            triples.append((pos, length, draw(st.integers(0, 5))))
            pos += length + draw(st.integers(0, 3))
        spans.append(triples)
    document_index = np.asarray(
        draw(st.lists(st.integers(0, n_docs - 1), min_size=1, max_size=8)),
        dtype=draw(st.sampled_from([np.int32, np.int64])),
    )
    d0 = draw(st.integers(0, len(document_index) - 1))
    d1 = draw(st.integers(d0, len(document_index) - 1))
    o0 = draw(st.integers(0, len(docs[int(document_index[d0])])))
    o1 = draw(st.integers(0, 30))
    extra = draw(st.integers(0, 1))
    return docs, spans, document_index, d0, o0, d1, o1, extra


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(corpora())
def test_compiled_window_lookup_equals_reference_walk(tmp_path_factory, case):
    docs, spans, document_index, d0, o0, d1, o1, extra = case
    prefix = write_dataset(tmp_path_factory.mktemp("w") / "x", docs, spans)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    doc_lengths = tokens.sequence_lengths
    for mmap in (True, False):  # the .bin memory-mapped, or read with pread()
        side = CodeSwitchSidecar(prefix, mmap=mmap)
        want, want_valid, walked = oracle_walk(side, document_index, d0, o0, d1, o1, extra, doc_lengths)
        native = side.native(doc_lengths)
        for window_size in (walked, walked + 3):
            starts, lengths, entries, valid = native.window_spans(
                document_index, d0, o0, d1, o1, extra, window_size
            )
            assert valid == want_valid
            for got, exp in zip((starts, lengths, entries), want):
                assert got.dtype == np.int32
                assert got.tolist() == np.asarray(exp).tolist()
        if walked > 0:
            with pytest.raises(ValueError, match="document walk yields"):
                native.window_spans(document_index, d0, o0, d1, o1, extra, walked - 1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(corpora(), st.sampled_from([0.0, 0.3, 1.0]), st.integers(0, 2**32), st.integers(0, 10**6),
       st.integers(-1, 3), st.integers(-2, 2), st.booleans())
def test_sample_equals_reference_walk_switch_and_pad_step(tmp_path_factory, case, ratio, seed, sample_index,
                                                          pad, seq_delta, mmap):
    """``CodeSwitcher.sample`` = `reference_window_spans` + `reference_codeswitch` + (with
    map_pad) `reference_pad_step`."""
    docs, spans, document_index, d0, o0, d1, o1, extra = case
    prefix = write_dataset(tmp_path_factory.mktemp("f") / "x", docs, spans)
    side = CodeSwitchSidecar(prefix, mmap=mmap)
    tokens_ds = IndexedDataset(prefix)
    doc_lengths = tokens_ds.sequence_lengths
    found, valid, walked = oracle_walk(side, document_index, d0, o0, d1, o1, extra, doc_lengths)
    assume(walked >= 1)
    window_size = walked + 1
    # Token ids 0..69 for the documents plus pad ids after them, like GPTDataset's window.
    rng = np.random.default_rng(seed)
    window = np.concatenate([rng.integers(0, 70, walked), [pad]]).astype(np.int64)
    seq_length = max(0, window_size - 1 + seq_delta)
    want = reference_codeswitch(window, found, LEX, ratio, seed, sample_index, seq_length, pad, valid)
    switcher = _C.CodeSwitcher(LEX.native(), ratio, seed, seq_length, pad, sidecar=side.native(doc_lengths),
                               document_index=document_index, extra_token=extra)
    for map_pad in (False, True):
        got = switcher.sample(window, window_size, d0, o0, d1, o1, sample_index, map_pad)
        expected = reference_pad_step(*want[:3], pad) if map_pad else want[:3]
        for g, e in zip(got[:3], expected):
            np.testing.assert_array_equal(g, e)
        assert tuple(got[3]) == tuple(want[3])


def test_sample_refuses_bad_input(tmp_path):
    prefix = write_dataset(tmp_path / "x", [list(range(10)), [1, 2]], [[(8, 3, 2)], []])
    side = CodeSwitchSidecar(prefix)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    window = np.arange(11, dtype=np.int64)

    def switcher(ratio=1.0, document_index=np.array([0], np.int32)):
        return _C.CodeSwitcher(LEX.native(), ratio, 0, 10, -1, sidecar=side.native(tokens.sequence_lengths),
                               document_index=document_index, extra_token=1)

    with pytest.raises(ValueError, match="ends after its 10 tokens"):
        switcher().sample(window, 10, 0, 0, 0, 9, 0)
    with pytest.raises(ValueError, match="window_size"):
        switcher().sample(window, 12, 0, 0, 0, 9, 0)
    with pytest.raises(ValueError, match="window_tokens has dtype"):
        switcher().sample(window.astype(np.float32), 10, 0, 0, 0, 9, 0)
    with pytest.raises(ValueError, match="ratio"):
        switcher(ratio=2.0)
    with pytest.raises(ValueError, match="document_index"):
        switcher(document_index=np.array([0], np.float64))
    with pytest.raises(ValueError, match="without a sidecar"):
        _C.CodeSwitcher(LEX.native(), 1.0, 0, 10, -1).sample(window, 10, 0, 0, 0, 9, 0)


def test_switcher_keeps_its_lexicon_and_sidecar_alive(tmp_path):
    prefix = write_dataset(tmp_path / "x", [[1, 10, 2, 20, 21, 3, 4]], [[(1, 1, 0), (3, 2, 1)]])
    side = CodeSwitchSidecar(prefix)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    # Neither the lexicon arrays nor the two native objects are referenced from here on.
    switcher = _C.CodeSwitcher(
        make_lexicon([[10], [20, 21]], [[1], [0]]).native(), 1.0, 0, 6, PAD,
        sidecar=side.native(tokens.sequence_lengths), document_index=np.array([0], np.int32),
    )
    gc.collect()
    window = np.array([1, 10, 2, 20, 21, 3, 4], np.int64)
    got = switcher.sample(window, 7, 0, 0, 0, 6, 0, False)
    want = reference_codeswitch(window, ([1, 3], [1, 2], [0, 1]), make_lexicon([[10], [20, 21]], [[1], [0]]),
                                1.0, 0, 0, 6, PAD)
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(g, w)
    assert tuple(got[3]) == tuple(want[3]) == (2, 2, 3)


def test_compiled_window_lookup_refuses_bad_input(tmp_path):
    prefix = write_dataset(tmp_path / "x", [list(range(10)), [1, 2]], [[(8, 3, 2)], []])
    side = CodeSwitchSidecar(prefix)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    doc_lengths = tokens.sequence_lengths
    # The dataset turns the compiled ValueError into a SidecarError naming the files and the fix.
    with pytest.raises(ValueError, match="ends after its 10 tokens") as err:
        side.native(doc_lengths).window_spans(np.array([0], np.int32), 0, 0, 0, 9, 1, 10)
    wrapped = side.error(err.value)
    assert isinstance(wrapped, SidecarError)
    assert "ends after its 10 tokens" in str(wrapped) and "preprocess_data" in str(wrapped)
    values, pointers = side.dataset.sequence_lengths, side.dataset.index.sequence_pointers
    short = _C.SidecarSpans(doc_lengths, values, pointers, np.zeros(2, np.int32))
    walk = (0, 0, 0, 1, 1, 10)
    with pytest.raises(ValueError, match="document id"):
        short.window_spans(np.array([7], np.int64), *walk)
    with pytest.raises(ValueError, match="sample_index"):
        short.window_spans(np.array([0], np.int64), 0, 0, 1, 1, 1, 10)
    with pytest.raises(ValueError, match="pointer"):  # the flat array is too short for doc 0
        short.window_spans(np.array([0], np.int64), *walk)
    with pytest.raises(ValueError, match="dtype"):
        short.window_spans(np.array([0], np.float64), *walk)
    with pytest.raises(ValueError, match="one item per document"):
        _C.SidecarSpans(doc_lengths, values[:1], pointers, np.zeros(2, np.int32))
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(b"\0" * 8)  # shorter than document 0's spans
    with pytest.raises(ValueError, match="pointer"):
        _C.SidecarSpans.from_file(doc_lengths, values, pointers, str(truncated)).window_spans(
            np.array([0], np.int64), *walk)
    with pytest.raises(ValueError, match="cannot open"):
        _C.SidecarSpans.from_file(doc_lengths, values, pointers, str(tmp_path / "missing.bin"))


@pytest.mark.parametrize("extra_token", [True, False])
def test_dataset_memory_map_and_file_reads_agree(data_prefixes, data_tokenizer, data_lexicon_path,
                                                       tmp_path, extra_token):
    from megatron.core.datasets.utils import Split

    from megatron_prealign.data.dataset import CodeSwitchGPTDataset, CodeSwitchGPTDatasetConfig

    prefix = data_prefixes[0]
    datasets = []
    for mmap in (True, False):
        config = CodeSwitchGPTDatasetConfig(
            blend=([prefix], None), path_to_cache=str(tmp_path / str(mmap)), tokenizer=data_tokenizer,
            random_seed=5, sequence_length=24, split="1,0,0", reset_position_ids=False,
            reset_attention_mask=False, eod_mask_loss=False, codeswitch_ratio=0.5,
            codeswitch_seed=3, lexicon_path=data_lexicon_path, mmap_bin_files=mmap,
            add_extra_token_to_sequence=extra_token,
        )
        indexed = IndexedDataset(prefix, mmap=mmap)
        datasets.append(CodeSwitchGPTDataset(
            indexed, prefix, np.arange(len(indexed), dtype=np.int32), None, Split.train, config
        ))
    compiled, python = datasets
    assert len(compiled) == len(python) > 10
    switched = 0
    for i in range(len(compiled)):
        a, b = compiled[i], python[i]
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], int):
                assert a[key] == b[key], key
            else:
                assert torch.equal(a[key], b[key]), key
        switched += a["cs_switched_words"]
    assert switched > 10
