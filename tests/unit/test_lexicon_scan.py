"""Tier 1: pure functions. The compiled scan (`Lexicon.scan`, csrc/lexicon_scan.cpp): hand-made
cases for every rule, and hypothesis parity against the pure-Python reference on random lexicons
and streams (int32 and uint16, both modes, out-of-vocabulary and negative ids, empty input)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megatron_prealign.lexicon import (
    CONTINUATION,
    OTHER,
    WORD_START,
    Lexicon,
    build_tokenizer,
    compile_lexicon,
    read_dictionary,
    reference_scan,
    reference_scan_entries,
)
from megatron_prealign.lexicon import lexicon as lexicon_module

ASSETS = Path(__file__).resolve().parents[1] / "assets"
W, C, O = WORD_START, CONTINUATION, OTHER

# Toy vocabulary: ids 0-3 start words, 4-7 continue them, 8-9 are punctuation.
CLASSES = np.array([W, W, W, W, C, C, C, C, O, O], dtype=np.uint8)


def make(entries, mode="word", translations=None):
    """Lexicon over `entries` where each entry translates the next one (cyclically)."""
    n = len(entries)
    if translations is None:
        translations = [[(i + 1) % n] if n > 1 else [] for i in range(n)]
    return Lexicon.from_entries(entries, translations, CLASSES, mode=mode)


def scan(lex, tokens, dtype=np.int32):
    starts, lengths, ids = lex.scan(np.asarray(tokens, dtype=dtype))
    assert starts.dtype == np.int64 and lengths.dtype == np.int32 and ids.dtype == np.int32
    return list(zip(starts.tolist(), lengths.tolist(), ids.tolist()))


def test_longest_match_wins():
    lex = make([[0], [0, 4], [0, 4, 5]])
    assert scan(lex, [0, 4, 5, 8]) == [(0, 3, 2)]
    assert scan(lex, [0, 4, 8]) == [(0, 2, 1)]


def test_match_must_end_at_a_word_boundary():
    lex = make([[0], [0, 4], [1]])
    # [0, 4] is followed by a CONTINUATION (5): neither [0,4] nor [0] ends at a boundary.
    assert scan(lex, [0, 4, 5]) == []
    # ... but a longer walk that fails still leaves the shorter boundary match.
    assert scan(lex, [0, 4, 1]) == [(0, 2, 1), (2, 1, 2)]
    assert scan(lex, [0, 9]) == [(0, 1, 0)]  # punctuation ends a word
    assert scan(lex, [0]) == [(0, 1, 0)]  # so does the end of the array


def test_match_must_start_at_a_word_start():
    lex = make([[4], [4, 5], [1, 4]])
    assert scan(lex, [4, 5, 8, 4]) == []
    assert scan(lex, [1, 4, 8]) == [(0, 2, 2)]


def test_matches_do_not_overlap_and_scan_resumes_after_a_match():
    lex = make([[0, 1], [1, 2], [2]])
    # [0,1] consumes the 1, so [1,2] cannot match; 2 matches alone afterwards.
    assert scan(lex, [0, 1, 2]) == [(0, 2, 0), (2, 1, 2)]


def test_entries_without_translations_are_never_reported():
    lex = make([[0], [1], [2]], translations=[[1], [0], []])
    assert scan(lex, [0, 1, 2]) == [(0, 1, 0), (1, 1, 1)]


def test_out_of_vocabulary_and_negative_ids():
    lex = make([[0], [1, 4]])
    # 500 and -3 are OTHER: they end words and never start one.
    assert scan(lex, [0, 500, 0, -3, 1, 4, -1]) == [(0, 1, 0), (2, 1, 0), (4, 2, 1)]
    assert scan(lex, [0, 65535, 1, 4], dtype=np.uint16) == [(0, 1, 0), (2, 2, 1)]


def test_entries_may_contain_tokens_outside_the_vocabulary():
    lex = make([[0, 12], [1]])
    assert scan(lex, [0, 12, 1]) == [(0, 2, 0), (2, 1, 1)]


def test_empty_input_and_empty_lexicon():
    lex = make([[0], [1]])
    assert scan(lex, []) == []
    assert scan(lex, [], dtype=np.uint16) == []
    empty = Lexicon.from_entries([], [], CLASSES)
    assert scan(empty, [0, 1, 2]) == []


def test_longest_match_mode_ignores_word_boundaries():
    lex = make([[4, 5], [4, 5, 6], [8]], mode="longest-match")
    assert scan(lex, [7, 4, 5, 6, 4, 5, 8, 9]) == [(1, 3, 1), (4, 2, 0), (6, 1, 2)]
    word = make([[4, 5], [4, 5, 6], [8]], mode="word")
    assert scan(word, [7, 4, 5, 6, 4, 5, 8, 9]) == []


def test_uint16_and_int32_agree():
    lex = make([[0], [0, 4], [3, 5, 6]])
    tokens = [0, 4, 8, 3, 5, 6, 0, 0, 4, 5]
    assert scan(lex, tokens, np.uint16) == scan(lex, tokens, np.int32)


def test_non_contiguous_input_is_accepted():
    lex = make([[0], [1]])
    tokens = np.asarray([0, 9, 1, 9, 0], dtype=np.int32)[::2]
    assert scan(lex, tokens) == [(0, 1, 0), (1, 1, 1), (2, 1, 0)]


def test_input_validation():
    lex = make([[0], [1]])
    with pytest.raises(TypeError, match="int32 or uint16, got int64"):
        lex.scan(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="numpy array"):
        lex.scan([0, 1])
    with pytest.raises(ValueError, match="1-D"):
        lex.scan(np.zeros((2, 2), dtype=np.int32))


def test_compiled_trie_rejects_malformed_arrays():
    from megatron_prealign import _C

    ok = dict(
        child_offsets=np.array([0, 1, 1], np.int64),
        child_tokens=np.array([5], np.int32),
        child_nodes=np.array([1], np.int32),
        node_entry=np.array([-1, 0], np.int32),
        token_classes=CLASSES,
    )
    assert _C.LexiconTrie(**ok).num_nodes == 2
    bad = {
        "child node out of range": dict(child_nodes=np.array([2], np.int32)),
        "num_nodes \\+ 1": dict(child_offsets=np.array([0, 1], np.int64)),
        "start at 0 and end": dict(child_offsets=np.array([0, 1, 2], np.int64)),
        "sorted by token": dict(
            child_offsets=np.array([0, 2, 2, 2], np.int64),
            child_tokens=np.array([5, 5], np.int32),
            child_nodes=np.array([1, 2], np.int32),
            node_entry=np.array([-1, 0, 1], np.int32),
        ),
        "-1 or an entry id": dict(node_entry=np.array([-1, -7], np.int32)),
        # An offset past the edges that the next node's offset undoes: it must be refused
        # before that node's edges are read (and written) out of bounds.
        "must not exceed the number of edges": dict(child_offsets=np.array([0, 1 << 20, 1], np.int64)),
        "token classes must be 0 \\(other\\), 1 \\(word start\\) or 2 \\(continuation\\), got 200": dict(
            token_classes=np.array([0, 1, 2, 200], np.uint8)
        ),
    }
    for message, change in bad.items():
        with pytest.raises(ValueError, match=message):
            _C.LexiconTrie(**{**ok, **change})
    with pytest.raises(TypeError, match="child_tokens has dtype int64"):
        _C.LexiconTrie(**{**ok, "child_tokens": np.array([5], np.int64)})
    with pytest.raises(TypeError, match="dtype int32 or uint16"):
        _C.LexiconTrie(**ok).scan(np.zeros(2, np.float32), 0)
    with pytest.raises(ValueError, match="mode must be"):
        _C.LexiconTrie(**ok).scan(np.zeros(2, np.int32), 7)


def test_missing_extension_says_how_to_build_it(monkeypatch):
    lex = make([[0], [1]])
    monkeypatch.setitem(sys.modules, "megatron_prealign._C", None)
    with pytest.raises(ImportError, match=r"run `pip install -e \.`"):
        lex.scan(np.zeros(2, dtype=np.int32))
    with pytest.raises(ImportError, match=r"run `pip install -e \.`"):
        lexicon_module._native()


def test_real_tokenizer_stream():
    sp = build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model")
    lex = compile_lexicon(read_dictionary(ASSETS / "dict_en_de.muse"), sp)
    text = "The house by the river, the riverbank, houses and ice cream; Water, water!"
    tokens = np.asarray(sp.encode(text), dtype=np.int32)
    starts, lengths, ids = lex.scan(tokens)
    found = [lex.entry_text(i) for i in ids]
    # "riverbank"/"houses" continue past the entry, "Water" has another case: no match.
    assert found == ["house", "river", "ice cream", "water"]
    for s, n, i in zip(starts, lengths, ids):
        assert np.array_equal(tokens[s : s + n], lex.entry_tokens(i))
    for got, want in zip(lex.scan(tokens), reference_scan(tokens, lex)):
        assert np.array_equal(got, want)


# ------------------------------------------------------------------------ parity (hypothesis)

VOCAB = 12


@st.composite
def lexicon_and_stream(draw, dtype):
    classes = np.asarray(draw(st.lists(st.sampled_from([W, W, C, C, O]), min_size=VOCAB, max_size=VOCAB)), np.uint8)
    # Entry tokens include ids just past the vocabulary (class OTHER by definition); most entries
    # begin with a word-start id so that word mode finds something to match.
    starts = [i for i in range(VOCAB) if classes[i] == W] or [0]
    any_id = st.integers(0, VOCAB + 1)
    seqs = draw(
        st.lists(
            st.tuples(st.one_of(st.sampled_from(starts), st.sampled_from(starts), any_id), st.lists(any_id, max_size=3)).map(
                lambda t: (t[0], *t[1])
            ),
            min_size=2,
            max_size=12,
            unique=True,
        )
    )
    n = len(seqs)
    # Mostly non-empty: an entry without translations (or only itself) is not scannable.
    translations = [draw(st.lists(st.integers(0, n - 1), min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=2)) for _ in range(n)]
    mode = draw(st.sampled_from(["word", "longest-match"]))
    low = 0 if dtype == np.uint16 else -2
    noise = st.lists(st.integers(low, VOCAB + 3), max_size=3)
    pieces = st.one_of(st.sampled_from(seqs).map(list), st.sampled_from(seqs).map(list), noise)
    stream = [t for piece in draw(st.lists(pieces, min_size=1, max_size=25)) for t in piece]
    if dtype == np.uint16 and draw(st.booleans()):
        stream.append(65535)
    return seqs, translations, classes, mode, np.asarray(stream, dtype=dtype)


def check_parity(case):
    seqs, translations, classes, mode, tokens = case
    lex = Lexicon.from_entries(seqs, translations, classes, mode=mode)
    got = lex.scan(tokens)
    entries = {seq: i for i, seq in enumerate(seqs) if set(translations[i]) - {i}}
    want = reference_scan_entries(tokens, entries, classes, mode)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert np.array_equal(g, w), (got, want)
    # Matches are in order, non-overlapping, and spell their entries.
    ends = got[0] + got[1]
    assert np.all(got[0][1:] >= ends[:-1])
    for s, n, i in zip(*got):
        assert tuple(tokens[s : s + n].tolist()) == seqs[i]


PARITY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PARITY
@given(lexicon_and_stream(np.int32))
def test_parity_int32(case):
    check_parity(case)


@PARITY
@given(lexicon_and_stream(np.uint16))
def test_parity_uint16(case):
    check_parity(case)


def test_results_larger_than_the_initial_reservation():
    # The extension reserves at most 2^22 matches up front; a denser, longer stream must grow.
    lex = make([[0], [1]])
    n = (1 << 22) + 1000
    tokens = np.tile(np.asarray([0, 1], dtype=np.int32), n // 2)
    starts, lengths, ids = lex.scan(tokens)
    assert len(starts) == n
    assert np.array_equal(starts, np.arange(n))
    assert np.all(lengths == 1) and np.array_equal(ids, np.tile([0, 1], n // 2))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lexicon_and_stream(np.int32), st.lists(st.integers(0, 12), max_size=6), st.booleans())
def test_scan_documents_equals_scan_per_document(case, cut_sizes, as_uint16):
    """The batch scan of preprocessing = `scan` on each document, in the sidecar layout."""
    seqs, translations, classes, mode, tokens = case
    if as_uint16:
        tokens = np.clip(tokens, 0, None).astype(np.uint16)
    lex = Lexicon.from_entries(seqs, translations, classes, mode=mode)
    # Documents tile the stream: the drawn sizes, cut to fit, then the rest as the last one.
    lengths, used = [], 0
    for size in cut_sizes:
        size = min(size, len(tokens) - used)
        lengths.append(size)
        used += size
    lengths.append(len(tokens) - used)
    triples, values, covered = lex.scan_documents(tokens, np.asarray(lengths))
    want_triples, want_values, offset = [], [], 0
    for n in lengths:
        starts, lens, ids = lex.scan(tokens[offset : offset + n])
        want_triples += [v for row in zip(starts.tolist(), lens.tolist(), ids.tolist()) for v in row]
        want_values.append(3 * len(starts))
        offset += n
    assert triples.dtype == np.int32 and values.dtype == np.int64
    assert triples.tolist() == want_triples
    assert values.tolist() == want_values
    assert covered == sum(want_triples[1::3])


def test_scan_documents_rejects_lengths_that_do_not_fit():
    lex = make([[0], [1]])
    tokens = np.asarray([0, 1, 0], dtype=np.int32)
    with pytest.raises(ValueError, match="sum to at most the 3 tokens"):
        lex.scan_documents(tokens, np.asarray([2, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        lex.scan_documents(tokens, np.asarray([-1]))
    triples, values, covered = lex.scan_documents(tokens, np.zeros(0, np.int64))
    assert triples.size == values.size == covered == 0
