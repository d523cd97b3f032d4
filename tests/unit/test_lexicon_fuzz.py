"""Tier 1: pure functions, fuzzed. Random bytes and Unicode lines through every dictionary reader
and the compile step (each must succeed or raise `LexiconError`), and hostile arrays through the
compiled scan (each must give in-bounds results or raise `ValueError`/`TypeError`/`LexiconError`,
never crash the process or read out of bounds).

Example counts are small so that the module runs in seconds; ``PREALIGN_FUZZ_EXAMPLES=N`` (what
``bench/fuzz_lexicon.py`` sets) runs every property with N examples instead.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from megatron_prealign.lexicon import (
    CONTINUATION,
    FORMATS,
    OTHER,
    WORD_START,
    Lexicon,
    LexiconError,
    build_tokenizer,
    compile_lexicon,
    read_dictionary,
    reference_scan,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES = int(os.environ.get("PREALIGN_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

_names = itertools.count()


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """The tiny tokenizer (byte fallback: every text is representable) and one trained here
    without byte fallback, whose unknown token stands for every character it lacks."""
    import sentencepiece as spm

    prefix = tmp_path_factory.mktemp("nofb") / "nofb"
    spm.SentencePieceTrainer.train(
        input=str(ASSETS / "tiny_corpus.txt"), model_prefix=str(prefix), vocab_size=300, model_type="unigram",
        character_coverage=1.0, byte_fallback=False, pad_id=3, unk_id=0, bos_id=1, eos_id=2, num_threads=1,
        normalization_rule_name="identity", minloglevel=2,
    )
    return [build_tokenizer("SentencePieceTokenizer", path) for path in (ASSETS / "tiny_sp.model", f"{prefix}.model")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------- dictionary readers

# Real words make valid pairs likely, so the compile step sees input too.
WORDS = ["house", "Haus", "river", "Fluss", "bank", "Bank", "银行", "Brücke", "ice cream", "#", "a"]
word = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=6))
separator = st.sampled_from([" ", "\t", "  ", " :: ", " | ", ";", " $ ", "\t\t"])
# Words through JSON escapes: lone surrogates and control characters can only arrive this way.
odd_characters = st.sampled_from(["\ud800", "\udfff", "\x00", "\x1f", "\u200b", "\ufeff", "\u2028", "\x85"])
json_text = st.text(alphabet=st.one_of(st.characters(blacklist_categories=()), odd_characters), max_size=6)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_text, inner, max_size=3),
    max_leaves=6,
)
json_line = st.one_of(
    st.builds(lambda a, b: json.dumps({"src_text": a, "tgt_text": b}), json_text | word, json_text | word),
    st.builds(lambda ws: json.dumps({"words": ws}), st.lists(st.one_of(json_text, word), max_size=4)),
    st.builds(lambda ws: json.dumps({"words": " $ ".join(ws)}), st.lists(word, max_size=4)),
    st.builds(lambda v: json.dumps(v), json_value),
)
line = st.one_of(
    st.lists(word, min_size=1, max_size=4).flatmap(lambda ws: separator.map(lambda sep: sep.join(ws))),
    st.builds(lambda w, sep, rest: f"#{sep}{w}{rest}", word, separator, st.text(max_size=8)),
    json_line,
    st.text(max_size=30),
    st.integers(1, 3000).map(lambda depth: "[" * depth),  # nesting beyond the recursion limit
    st.integers(4000, 5000).map(lambda digits: "1" * digits),  # beyond int's digit limit
)


# Lines well formed in one format, so that many files get past the reader to the compile step.
solid = st.sampled_from(WORDS[:-3]) | st.text(st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=6)
well_formed = {
    "muse": st.builds(lambda a, b, sep: f"{a}{sep}{b}", solid, solid, st.sampled_from([" ", "\t"])),
    "tsv": st.lists(solid, min_size=2, max_size=2).map("\t".join),
    "jsonl": st.builds(lambda a, b: json.dumps({"src_text": a, "tgt_text": b}), solid | json_text, solid),
    "trans": st.builds(lambda a, b: f"{a} :: {b}", st.lists(solid, min_size=1, max_size=3).map(" | ".join),
                       st.lists(solid, min_size=1, max_size=3).map("; ".join)),
    "cedict": st.builds(lambda t, z, glosses: f"{t} {z} [yin2 hang2] /{'/'.join(glosses)}/",
                        st.sampled_from(["銀行", "橋", "河", "3C"]), st.sampled_from(["银行", "桥", "河", "3C"]),
                        st.lists(solid | st.sampled_from(["to eat", "CL:個|个[ge4]", "see 河[he2]", "(old) bank",
                                                           "a; b", "hei1"]), min_size=1, max_size=3)),
}


@st.composite
def dictionary_file(draw):
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    style = draw(st.integers(0, 9))
    fmt = draw(st.sampled_from(FORMATS))
    if style == 0:
        content = draw(st.binary(max_size=200))
    elif style < 4:
        content = ending.join(draw(st.lists(line, max_size=12))).encode("utf-8")
    else:
        mostly = draw(st.sampled_from(sorted(well_formed)))
        noise = st.integers(0, 9).flatmap(lambda i: well_formed[mostly] if i else line)
        content = ending.join(draw(st.lists(noise, min_size=1, max_size=12))).encode("utf-8")
        fmt = draw(st.sampled_from([mostly, mostly, "auto", fmt]))
    if draw(st.booleans()):
        content += ending.encode()
    if draw(st.integers(0, 9)) == 0:
        content = "\ufeff".encode() + content
    suffix = draw(st.sampled_from([".txt", ".tsv", ".jsonl", ".json", ".dict"]))
    return content, suffix, fmt


@FUZZ
@given(dictionary_file(), st.booleans(), st.floats(0.0, 1.0), st.booleans(), st.integers(0, 1))
def test_readers_and_compile_raise_only_lexicon_errors(workdir, tokenizers, file, skip_invalid, max_invalid,
                                                       case_variants, which):
    content, suffix, fmt = file
    sp = tokenizers[which]
    path = workdir / f"d{next(_names)}{suffix}"
    path.write_bytes(content)
    try:
        result = read_dictionary(path, format=fmt, skip_invalid=skip_invalid, max_invalid_fraction=max_invalid)
    except LexiconError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        event("reader: LexiconError")
        return
    assert result.format in FORMATS and result.format != "auto"
    assert result.groups, "an empty dictionary must be an error"
    total = result.num_lines + result.dropped_invalid
    assert result.dropped_invalid <= max_invalid * total
    if not skip_invalid:
        assert result.dropped_invalid == 0
    assert len(set(result.groups)) == len(result.groups)
    for group in result.groups:
        assert len(group) >= 2 and len(set(group)) == len(group)
        for w in group:
            assert w and w == w.strip()
            w.encode("utf-8")  # no lone surrogates get through
    try:
        lex = compile_lexicon(result, sp, case_variants=case_variants)
    except LexiconError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        event("compile: LexiconError")
        return
    event("compiled and scanned")
    assert np.diff(lex.translation_offsets).any()
    unk = sp.unk
    for i in range(lex.num_entries):
        assert unk not in lex.entry_tokens(i).tolist()
    # Every entry is found where it stands on its own in running text.
    text = " ".join(lex.entry_text(i) for i in range(lex.num_entries) if len(lex.translations(i)))
    tokens = np.asarray(sp.encode(text), dtype=np.int32)
    check_scan(lex, tokens)


# ----------------------------------------------------------------------------- compiled scan


def check_scan(lex: Lexicon, tokens: np.ndarray) -> None:
    """`lex.scan` is in bounds, ordered, spells its entries and equals the Python reference."""
    starts, lengths, ids = lex.scan(tokens)
    n = len(tokens)
    assert starts.dtype == np.int64 and lengths.dtype == np.int32 and ids.dtype == np.int32
    assert len(starts) == len(lengths) == len(ids) <= n
    if len(starts):
        assert starts.min() >= 0 and lengths.min() >= 1 and (starts + lengths).max() <= n
        assert np.all(starts[1:] >= (starts + lengths)[:-1])
        assert ids.min() >= 0 and ids.max() < lex.num_entries
    for s, length, i in zip(starts.tolist(), lengths.tolist(), ids.tolist()):
        assert np.array_equal(tokens[s : s + length], lex.entry_tokens(i))
        assert len(lex.translations(i))
    for got, want in zip((starts, lengths, ids), reference_scan(tokens, lex)):
        assert np.array_equal(got, want)


BIG = 2**31 - 1
token_id = st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(-(2**31), BIG),
                     st.sampled_from([0, BIG, 65535, 65536]))


@st.composite
def lexicon_case(draw):
    vocab = draw(st.integers(0, 40))
    classes = draw(st.lists(st.sampled_from([OTHER, WORD_START, CONTINUATION]), min_size=vocab, max_size=vocab))
    entry = st.lists(st.integers(0, 45) | st.sampled_from([BIG, 65535]), min_size=1, max_size=5).map(tuple)
    seqs = draw(st.lists(entry, min_size=1, max_size=15, unique=True))
    num = len(seqs)
    translations = [draw(st.lists(st.integers(0, num - 1), max_size=3)) for _ in range(num)]
    mode = draw(st.sampled_from(["word", "longest-match"]))
    return Lexicon.from_entries(seqs, translations, np.asarray(classes, np.uint8), mode=mode), seqs


@st.composite
def token_stream(draw, seqs):
    pieces = st.one_of(st.sampled_from(seqs).map(list), st.lists(token_id, max_size=4))
    return [t for piece in draw(st.lists(pieces, max_size=30)) for t in piece]


@FUZZ
@given(st.data())
def test_scan_of_random_lexicons_and_streams_is_in_bounds(data):
    lex, seqs = data.draw(lexicon_case())
    stream = data.draw(token_stream(seqs))
    tokens = np.asarray(stream, dtype=np.int64).astype(np.int32)
    check_scan(lex, tokens)
    check_scan(lex, tokens[:: data.draw(st.integers(1, 3))])  # strided input is copied, not misread
    check_scan(lex, (tokens & 0xFFFF).astype(np.uint16))
    # Document lengths: valid tilings, and hostile ones that must be refused with a ValueError.
    n = len(tokens)
    lengths = data.draw(st.lists(st.integers(-3, n + 3) | st.sampled_from([2**62, -(2**62), 2**31]), max_size=6))
    doc_lengths = np.asarray(lengths, dtype=np.int64)
    valid = all(x >= 0 for x in lengths) and sum(lengths) <= n
    try:
        triples, values, covered = lex.scan_documents(tokens, doc_lengths)
    except ValueError:
        assert not valid
        event("document lengths refused")
        return
    event("documents scanned")
    assert valid
    assert triples.dtype == np.int32 and values.dtype == np.int64 and len(values) == len(lengths)
    assert values.sum() == len(triples) and covered == int(triples[1::3].sum())
    offset, at = 0, 0
    for doc, count in zip(lengths, values.tolist()):
        want = lex.scan(tokens[offset : offset + doc])
        rows = triples[at : at + count].reshape(-1, 3)
        assert np.array_equal(rows[:, 0], want[0]) and np.array_equal(rows[:, 1], want[1])
        assert np.array_equal(rows[:, 2], want[2])
        offset, at = offset + doc, at + count


@st.composite
def hostile_trie(draw):
    """CSR trie arrays as a corrupt or crafted `.lex` file could carry them (the sha256 only
    proves that the file is what was written, not that it was written by compile_lexicon):
    random arrays, or a valid trie with a few values changed."""
    if draw(st.booleans()):
        return draw(mutated_trie())
    num_nodes = draw(st.integers(0, 8))
    num_edges = draw(st.integers(0, max(num_nodes - 1, 0)))
    inner = max(num_nodes - 1, 0)
    middle = draw(st.lists(st.integers(-2, num_edges + 4), min_size=inner, max_size=inner))
    if draw(st.booleans()):
        middle.sort()
    offsets = [0, *middle, num_edges] if num_nodes else draw(st.lists(st.integers(-1, 2), max_size=2))
    child_tokens = draw(st.lists(token_id, min_size=num_edges, max_size=num_edges))
    if draw(st.booleans()):
        child_tokens.sort()
    child_nodes = draw(st.lists(st.integers(-1, num_nodes), min_size=num_edges, max_size=num_edges))
    node_entry = draw(st.lists(st.integers(-2, 20), min_size=num_nodes, max_size=num_nodes))
    classes = draw(st.lists(st.sampled_from([0, 1, 2]) | st.integers(0, 255), max_size=48))
    return (np.asarray(offsets, np.int64), np.asarray(child_tokens, np.int32), np.asarray(child_nodes, np.int32),
            np.asarray(node_entry, np.int32), np.asarray(classes, np.uint8))


@st.composite
def mutated_trie(draw):
    from megatron_prealign.lexicon.lexicon import _build_trie, _ragged

    seqs = draw(st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=4).map(tuple), min_size=1, max_size=8,
                         unique=True))
    arrays = [a.copy() for a in _build_trie(*_ragged(seqs, np.int32), np.ones(len(seqs), np.uint8))]
    arrays.append(np.asarray(draw(st.lists(st.sampled_from([0, 1, 2]), min_size=14, max_size=14)), np.uint8))
    for _ in range(draw(st.integers(0, 2))):
        which = draw(st.integers(0, 4))
        if len(arrays[which]):
            at = draw(st.integers(0, len(arrays[which]) - 1))
            info = np.iinfo(arrays[which].dtype)
            arrays[which][at] = draw(st.integers(max(-3, int(info.min)), 20) | st.integers(int(info.min), int(info.max)))
    return tuple(arrays)


@FUZZ
@given(hostile_trie(), st.lists(token_id, max_size=40), st.sampled_from([0, 1]))
def test_compiled_trie_refuses_or_scans_hostile_arrays_in_bounds(arrays, stream, mode):
    from megatron_prealign import _C

    try:
        trie = _C.LexiconTrie(*arrays)
    except ValueError as exc:
        assert "invalid lexicon trie" in str(exc)
        event("trie refused")
        return
    event("trie accepted and scanned")
    assert int(arrays[4].max(initial=0)) <= CONTINUATION, "a class outside the three must be refused"
    tokens = np.asarray(stream, dtype=np.int64).astype(np.int32)
    starts, lengths, ids = trie.scan(tokens, mode)
    n = len(tokens)
    assert len(starts) == len(lengths) == len(ids) <= n
    if len(starts):
        assert starts.min() >= 0 and lengths.min() >= 1 and (starts + lengths).max() <= n
        assert np.all(starts[1:] >= (starts + lengths)[:-1])
        assert set(ids.tolist()) <= {e for e in arrays[3].tolist() if e >= 0}
    triples, values, covered = trie.scan_documents(tokens, np.asarray([n], np.int64), mode)
    assert triples[0::3].tolist() == starts.tolist() and covered == int(lengths.sum())


# --------------------------------------------------------------------------- dictd databases

entry_body = st.lists(st.one_of(line, st.sampled_from(["house /haʊs/ <n>", "1. casa <fem>, hogar", "   Synonym: {home}",
                                                       ' "an example" - un ejemplo', "the /ðəneðələndz/", "río",
                                                       "00-database-info"])), min_size=0, max_size=5)


@FUZZ
@given(st.lists(st.tuples(st.text(st.characters(blacklist_characters="\t\n\r"), max_size=8), entry_body),
                max_size=8),
       st.one_of(st.just([]), st.lists(line, max_size=2)),
       st.booleans(), st.booleans(), st.sampled_from(["stem", ".index", ".dict.dz"]))
def test_dictd_reader_raises_only_lexicon_errors(workdir, entries, junk, compressed, skip_invalid, name):
    import gzip

    stem = workdir / f"dd{next(_names)}"
    data, index = b"", []
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def enc(n: int) -> str:
        digits = ""
        while True:
            digits, n = b64[n % 64] + digits, n // 64
            if not n:
                return digits

    for headword, lines in entries:
        body = "\n".join(lines).encode("utf-8", errors="surrogatepass") + b"\n"
        index.append(f"{headword}\t{enc(len(data))}\t{enc(len(body))}")
        data += body
    index += junk  # malformed index lines, or lines pointing anywhere
    Path(f"{stem}.index").write_bytes("\n".join(index).encode("utf-8", errors="surrogatepass"))
    Path(f"{stem}.dict.dz").write_bytes(gzip.compress(data) if compressed else data)
    path = str(stem) if name == "stem" else f"{stem}{name}"
    try:
        result = read_dictionary(path, format="auto", skip_invalid=skip_invalid, max_invalid_fraction=0.5)
    except LexiconError as exc:
        assert str(stem) in str(exc) and "\n" not in str(exc)
        event("dictd: LexiconError")
        return
    event("dictd: read")
    assert result.format == "dictd" and result.groups
    for group in result.groups:
        assert len(group) == 2 and group[0] != group[1]
        for w in group:
            assert w and w == w.strip() and " " not in w
