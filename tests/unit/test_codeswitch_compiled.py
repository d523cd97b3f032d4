"""Compiled per-sample code-switch path (csrc/codeswitch.cpp, `megatron_prealign._C`).

* ``apply_codeswitch``: three implementations agree bit for bit on every input: the compiled
  `apply_codeswitch`, the vectorized numpy `_numpy_codeswitch` and the plain-Python
  `_reference_codeswitch`; bad arrays raise ValueError.
* ``window_spans``: the compiled document walk + sidecar lookup
  (`CodeSwitchSidecar.sample_window_spans`) equals the Python walk over
  `CodeSwitchSidecar.window_spans`, and CodeSwitchGPTDataset returns the same samples with a
  memory-mapped sidecar (compiled lookup) as with file reads (Python lookup).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_prealign import _C
from megatron_prealign.data.codeswitch import (
    CodeSwitchStats,
    _numpy_codeswitch,
    _reference_codeswitch,
    apply_codeswitch,
)
from megatron_prealign.data.sidecar import CodeSwitchSidecar, SidecarError
from tests._codeswitch_data import make_lexicon, write_dataset

PAD = -1


def assert_three_agree(window, spans, lexicon, ratio, seed, sample_index, seq_length, valid_length):
    args = (lexicon, ratio, seed, sample_index, seq_length, PAD, valid_length)
    compiled = apply_codeswitch(window, spans, *args)
    vectorized = _numpy_codeswitch(window, spans, *args)
    reference = _reference_codeswitch(window, spans, *args)
    for name, other in (("numpy", vectorized), ("reference", reference)):
        for i, dtype in enumerate((np.int64, np.int64, np.float32)):
            assert compiled[i].dtype == dtype and compiled[i].shape == (seq_length,)
            np.testing.assert_array_equal(compiled[i], other[i], err_msg=f"compiled vs {name}, output {i}")
        assert compiled[3] == other[3], f"stats: compiled {compiled[3]} vs {name} {other[3]}"
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
    out = assert_three_agree(
        np.asarray(window, dtype=np.int64), spans_of(*spans), LEX, ratio, 5, 11, seq_length, valid_length
    )
    if ratio == 0.0:
        assert out[3].switched_words == 0


def test_switch_at_first_position_exact_values():
    tokens, labels, mask, stats = apply_codeswitch(
        np.array([10, 1, 2, 3], np.int64), spans_of((0, 1, 0)), LEX, 1.0, 0, 0, 3, PAD
    )
    assert tokens.tolist() == [20, 21, 1]
    assert labels.tolist() == [21, 1, 2]
    assert mask.tolist() == [0.0, 1.0, 1.0]
    assert stats == CodeSwitchStats(1, 1, 2)


@pytest.mark.parametrize("window_dtype", [np.int64, np.int32, np.uint16, np.int16])
@pytest.mark.parametrize("span_dtype", [np.int32, np.int64, np.uint8])
def test_dtypes_and_strided_inputs(window_dtype, span_dtype):
    window = np.asarray([1, 20, 21, 2, 30, 31, 32, 3, 10, 4], dtype=window_dtype)
    triples = np.asarray([(1, 2, 1), (4, 3, 2), (8, 1, 0)], dtype=span_dtype)
    spans = (triples[:, 0], triples[:, 1], triples[:, 2])  # strided column views
    assert_three_agree(window, spans, LEX, 1.0, 3, 9, 9, None)
    assert_three_agree(window[::-1][::-1], spans, LEX, 1.0, 3, 9, 12, 9)


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
        apply_codeswitch(np.arange(10), spans, LEX, 1.0, 0, 0, 9, PAD)


def test_bad_arguments_raise_value_error():
    window = np.arange(10, dtype=np.int64)
    with pytest.raises(ValueError, match="at least 2"):
        apply_codeswitch(window[:1], spans_of(), LEX, 1.0, 0, 0, 9, PAD)
    with pytest.raises(ValueError, match="valid_length"):
        apply_codeswitch(window, spans_of(), LEX, 1.0, 0, 0, 9, PAD, valid_length=11)
    with pytest.raises(ValueError, match="valid_length"):
        apply_codeswitch(window, spans_of(), LEX, 1.0, 0, 0, 9, PAD, valid_length=-1)
    with pytest.raises(ValueError, match="ratio"):
        apply_codeswitch(window, spans_of(), LEX, 1.5, 0, 0, 9, PAD)
    with pytest.raises(ValueError, match="ratio"):
        apply_codeswitch(window, spans_of(), LEX, float("nan"), 0, 0, 9, PAD)


def _raw(window, spans, arrays, **kw):
    args = dict(ratio=1.0, seed=0, sample_index=0, seq_length=4, pad_id=PAD, valid_length=len(window))
    args.update(kw)
    return _C.apply_codeswitch(window, *spans, *arrays, **args)


def test_binding_rejects_bad_arrays_without_crashing():
    window = np.array([10, 1, 2, 3, 4], np.int64)
    spans = spans_of((0, 1, 0))
    arrays = list(LEX[:4])
    assert _raw(window, spans, arrays)[3] == (1, 1, 2)
    with pytest.raises(ValueError, match="dtype"):
        _raw(window.astype(np.float64), spans, arrays)
    with pytest.raises(ValueError, match="1-D"):
        _raw(window.reshape(1, -1), spans, arrays)
    with pytest.raises(ValueError, match="contiguous"):
        _raw(np.repeat(window, 2)[::2], spans, arrays)
    with pytest.raises(ValueError, match="int32 or all int64"):
        _raw(window, tuple(a.astype(np.float32) for a in spans), arrays)
    with pytest.raises(ValueError, match="span lengths"):
        _raw(window, (spans[0], spans[1].astype(np.int32), spans[2]), arrays)
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
    out = assert_three_agree(window, spans, LEX, 0.5, 2**64 - 1, 2**63 + 5, L - 1, None)
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
def test_compiled_equals_numpy_equals_reference(case):
    entries, translations, window, spans, seq_length, valid_length, ratio, seed, sample_index = case
    lexicon = make_lexicon(entries, translations)
    assert_three_agree(window, spans, lexicon, ratio, seed, sample_index, seq_length, valid_length)


# ----------------------------------------------------------------------------------------------
# Window span lookup


def python_walk(side, document_index, d0, o0, d1, o1, extra, doc_lengths):
    """GPTDataset's document walk stated in Python, then `CodeSwitchSidecar.window_spans`."""
    docs = [int(d) for d in document_index[d0 : d1 + 1]]
    offsets = [o0] + [0] * (len(docs) - 1)
    lengths, positions, pos = [], [], 0
    for i, doc in enumerate(docs):
        available = int(doc_lengths[doc]) - offsets[i]
        requested = (o1 + extra - offsets[i]) if i == len(docs) - 1 else available
        lengths.append(max(0, min(requested, available)))
        positions.append(pos)
        pos += requested
    spans = side.window_spans(docs, offsets, lengths, positions, doc_lengths)
    return spans, positions[-1] + lengths[-1], pos


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
def test_compiled_window_lookup_equals_python_walk(tmp_path_factory, case):
    docs, spans, document_index, d0, o0, d1, o1, extra = case
    prefix = write_dataset(tmp_path_factory.mktemp("w") / "x", docs, spans)
    side = CodeSwitchSidecar(prefix)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    doc_lengths = tokens.sequence_lengths
    want, want_valid, walked = python_walk(side, document_index, d0, o0, d1, o1, extra, doc_lengths)
    for window_size in (walked, walked + 3):
        (starts, lengths, entries), valid = side.sample_window_spans(
            document_index, d0, o0, d1, o1, extra, window_size, doc_lengths
        )
        assert valid == want_valid
        for got, exp in zip((starts, lengths, entries), want):
            assert got.dtype == np.int32
            assert got.tolist() == np.asarray(exp).tolist()
    if walked > 0:
        with pytest.raises(SidecarError, match="document walk yields"):
            side.sample_window_spans(document_index, d0, o0, d1, o1, extra, walked - 1, doc_lengths)
    assert CodeSwitchSidecar(prefix, mmap=False).sample_window_spans(
        document_index, d0, o0, d1, o1, extra, walked, doc_lengths
    ) is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(corpora(), st.sampled_from([0.0, 0.3, 1.0]), st.integers(0, 2**32), st.integers(0, 10**6),
       st.integers(-1, 3), st.integers(-2, 2))
def test_fused_sample_equals_lookup_then_switch(tmp_path_factory, case, ratio, seed, sample_index, pad,
                                                  seq_delta):
    """``_C.codeswitch_sample`` = `sample_window_spans` + `apply_codeswitch` + GPTDataset's pad
    handling (no loss where the label is pad, pad ids -> 0)."""
    docs, spans, document_index, d0, o0, d1, o1, extra = case
    prefix = write_dataset(tmp_path_factory.mktemp("f") / "x", docs, spans)
    side = CodeSwitchSidecar(prefix)
    tokens_ds = IndexedDataset(prefix)
    doc_lengths = tokens_ds.sequence_lengths
    _, _, walked = python_walk(side, document_index, d0, o0, d1, o1, extra, doc_lengths)
    assume(walked >= 1)
    window_size = walked + 1
    # Token ids 0..29 from the documents plus pad ids after them, like GPTDataset's window.
    rng = np.random.default_rng(seed)
    window = np.concatenate([rng.integers(0, 70, walked), [pad]]).astype(np.int64)
    seq_length = max(0, window_size - 1 + seq_delta)
    (starts, lengths, entries), valid = side.sample_window_spans(
        document_index, d0, o0, d1, o1, extra, window_size, doc_lengths
    )
    want_t, want_l, want_m, want_stats = apply_codeswitch(
        window, (starts, lengths, entries), LEX, ratio, seed, sample_index, seq_length, pad, valid_length=valid
    )
    want_m[want_l == pad] = 0
    want_t[want_t == pad] = 0
    want_l[want_l == pad] = 0
    got_t, got_l, got_m, got_stats = _C.codeswitch_sample(
        window, window_size, document_index, d0, o0, d1, o1, extra, doc_lengths, *side.mapped_arrays(),
        LEX.entry_offsets, LEX.entry_flat, LEX.translation_offsets, LEX.translation_flat, ratio, seed,
        sample_index, seq_length, pad,
    )
    np.testing.assert_array_equal(got_t, want_t)
    np.testing.assert_array_equal(got_l, want_l)
    np.testing.assert_array_equal(got_m, want_m)
    assert tuple(got_stats) == tuple(want_stats)


def test_fused_sample_refuses_bad_input(tmp_path):
    prefix = write_dataset(tmp_path / "x", [list(range(10)), [1, 2]], [[(8, 3, 2)], []])
    side = CodeSwitchSidecar(prefix)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    lex = (LEX.entry_offsets, LEX.entry_flat, LEX.translation_offsets, LEX.translation_flat)
    window = np.arange(11, dtype=np.int64)
    args = (np.array([0], np.int32), 0, 0, 0, 9, 1, tokens.sequence_lengths, *side.mapped_arrays(), *lex)
    with pytest.raises(ValueError, match="ends after its 10 tokens"):
        _C.codeswitch_sample(window, 10, *args, 1.0, 0, 0, 10, -1)
    with pytest.raises(ValueError, match="window_size"):
        _C.codeswitch_sample(window, 12, *args, 1.0, 0, 0, 10, -1)
    with pytest.raises(ValueError, match="window_tokens must have dtype"):
        _C.codeswitch_sample(window.astype(np.float32), 10, *args, 1.0, 0, 0, 10, -1)
    with pytest.raises(ValueError, match="ratio"):
        _C.codeswitch_sample(window, 10, np.array([1], np.int32), 0, 0, 0, 1, 1, tokens.sequence_lengths,
                             *side.mapped_arrays(), *lex, 2.0, 0, 0, 2, -1)


def test_compiled_window_lookup_refuses_bad_input(tmp_path):
    prefix = write_dataset(tmp_path / "x", [list(range(10)), [1, 2]], [[(8, 3, 2)], []])
    side = CodeSwitchSidecar(prefix)
    tokens = IndexedDataset(prefix)  # keep alive: its arrays are views of its memory map
    doc_lengths = tokens.sequence_lengths
    with pytest.raises(SidecarError, match="ends after its 10 tokens.*preprocess_data"):
        side.sample_window_spans(np.array([0], np.int32), 0, 0, 0, 9, 1, 10, doc_lengths)
    ok = dict(doc_lengths=doc_lengths, sidecar_values=side._values,
              sidecar_pointers=side._pointers, sidecar_flat=np.zeros(2, np.int32))
    walk = (0, 0, 0, 1, 1, 10)
    with pytest.raises(ValueError, match="document id"):
        _C.window_spans(np.array([7], np.int64), *walk, **ok)
    with pytest.raises(ValueError, match="sample_index"):
        _C.window_spans(np.array([0], np.int64), 0, 0, 1, 1, 1, 10, **ok)
    with pytest.raises(ValueError, match="pointer"):  # the flat array is too short for doc 0
        _C.window_spans(np.array([0], np.int64), *walk, **ok)
    with pytest.raises(ValueError, match="dtype"):
        _C.window_spans(np.array([0], np.float64), *walk, **ok)
    with pytest.raises(ValueError, match="one item per document"):
        _C.window_spans(np.array([0], np.int64), *walk, **{**ok, "sidecar_values": side._values[:1]})


@pytest.mark.parametrize("extra_token", [True, False])
def test_dataset_compiled_lookup_equals_python_lookup(data_prefixes, data_tokenizer, data_lexicon_path,
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
