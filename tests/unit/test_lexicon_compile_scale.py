"""Tier 1: the batched, compiled lexicon compiler against the word-by-word Python one it replaced
(tests/_lexicon_reference.py): the same entries, texts, translations, groups and trie (hence the
same content hash) on every test dictionary and on a random multi-way one; `encode_words`
against `encode_word`; the compiled table builders against Python twins and on bad input."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from megatron_prealign.lexicon import build_tokenizer, compile_lexicon, read_dictionary
from megatron_prealign.lexicon.lexicon import _native
from tests._lexicon_reference import _build_trie, _components, _ragged, reference_compile_lexicon
from tests.unit.test_lexicon_tokenizer import hf_dir  # noqa: F401 (fixture)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DICTIONARIES = ["dict_en_de.muse", "dict_en_de.tsv", "dict_multiway.jsonl", "dict_pairs.jsonl", "dict_de_en.trans"]
ARRAYS = ["entry_offsets", "entry_flat", "translation_offsets", "translation_flat", "group_ids"]


@pytest.fixture(scope="module")
def sp():
    return build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model")


def assert_same_lexicon(new, old):
    for name in ARRAYS:
        assert np.array_equal(getattr(new, name), getattr(old, name)), name
    assert [new.entry_text(i) for i in range(new.num_entries)] == [old.entry_text(i) for i in range(old.num_entries)]
    assert new.summary() == old.summary()
    assert new.sha256 == old.sha256  # every array, the trie's included


@pytest.mark.parametrize("name", DICTIONARIES)
@pytest.mark.parametrize("case_variants", [False, True])
@pytest.mark.parametrize("mode", ["word", "longest-match"])
def test_same_lexicon_as_the_word_by_word_compiler(sp, name, case_variants, mode):
    result = read_dictionary(ASSETS / name)
    assert_same_lexicon(compile_lexicon(result, sp, case_variants=case_variants, mode=mode),
                        reference_compile_lexicon(result, sp, case_variants=case_variants, mode=mode))


def random_dictionary(path: Path, seed: int, groups: int = 1500) -> Path:
    """Multi-way groups over corpus words, made-up words, capitalized and caseless ones, with
    repeats across groups (shared members make large translation groups)."""
    rng = random.Random(seed)
    corpus = (ASSETS / "tiny_corpus.txt").read_text(encoding="utf-8").split()
    words = sorted({w.strip(".,;:!?\"'()") for w in corpus} - {""})
    words += ["Straße", "银行", "ёж", "naïve", "x", "Zz"] + ["".join(rng.choice("aeiouxyzäß") for _ in range(rng.randint(1, 9)))
                                                          for _ in range(300)]
    lines = []
    for _ in range(groups):
        members = list(dict.fromkeys(rng.choice(words) for _ in range(rng.choice([2, 2, 2, 3, 4]))))
        if len(members) >= 2:
            lines.append(" $ ".join(members))
    path.write_text("".join(f'{{"words": "{line}"}}\n' for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("seed", [0, 1])
def test_same_lexicon_on_a_random_multiway_dictionary(sp, tmp_path, seed):
    result = read_dictionary(random_dictionary(tmp_path / "d.jsonl", seed))
    for case_variants in (False, True):
        assert_same_lexicon(compile_lexicon(result, sp, case_variants=case_variants),
                            reference_compile_lexicon(result, sp, case_variants=case_variants))


def test_encode_words_equals_encode_word(sp, hf_dir):  # noqa: F811 (fixture)
    words = ["house", "Brücke", "银行", "ice cream", "", " ", "e", "ёж", "a" * 40, "x-ray", "’s", "don't"]
    tokenizers = [sp] + [build_tokenizer("HuggingFaceTokenizer", hf_dir / n)
                         for n in ("bytelevel.json", "metaspace", "wordpiece.json")]
    for tok in tokenizers:
        for chunk in (3, 1 << 16):  # several chunks, and one
            offsets, flat = tok.encode_words(words, chunk=chunk)
            assert offsets.dtype == np.int64 and flat.dtype == np.int32 and len(offsets) == len(words) + 1
            got = [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(len(words))]
            assert got == [tok.encode_word(w) for w in words], tok
    offsets, flat = sp.encode_words([])
    assert offsets.tolist() == [0] and len(flat) == 0


def test_word_whose_encoding_merges_across_the_space_falls_back_to_the_word_alone(sp):
    class Merging(type(sp)):
        # Encodes "e x..." as one piece, as a tokenizer that merges across the space would.
        def encode_batch(self, texts, num_threads=1):
            return [[7] if t.startswith("e x") else super(Merging, self).encode_batch([t])[0] for t in texts]

    tok = Merging(sp.model_path)
    offsets, flat = tok.encode_words(["house", "xylophone", "water"], chunk=2)
    rows = [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(3)]
    assert rows == [sp.encode_word("house"), sp.encode("xylophone"), sp.encode_word("water")]


def ragged(rows):
    return _ragged([tuple(r) for r in rows], np.int32)


def test_dedupe_rows_first_occurrence_order():
    rng = np.random.default_rng(0)
    rows = [tuple(rng.integers(0, 4, rng.integers(0, 4)).tolist()) for _ in range(500)]
    inverse, first = _native().dedupe_rows(*ragged(rows))
    distinct = list(dict.fromkeys(rows))
    assert [rows[i] for i in first.tolist()] == distinct
    assert inverse.tolist() == [distinct.index(r) for r in rows]


def test_components_and_trie_equal_the_python_twins():
    rng = np.random.default_rng(1)
    for _ in range(20):
        num = int(rng.integers(1, 60))
        trans = [sorted(set(rng.integers(0, num, rng.integers(0, 3)).tolist()) - {i}) for i in range(num)]
        assert _native().connected_components(*ragged(trans)).tolist() == _components(num, trans).tolist()
        seqs = list(dict.fromkeys(tuple(rng.integers(0, 6, rng.integers(1, 5)).tolist()) for _ in range(num)))
        include = rng.random(len(seqs)) < 0.7
        got = _native().build_trie(*ragged(seqs), include.astype(np.uint8))
        want = _build_trie(seqs, include.tolist())
        for g, w in zip(got, want):
            assert g.tolist() == w.tolist()


def test_table_builders_refuse_bad_input():
    c = _native()
    with pytest.raises(ValueError, match="offsets"):
        c.dedupe_rows(np.array([0, 3], np.int64), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="decrease"):
        c.connected_components(np.array([0, 2, 1, 2], np.int64), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="outside"):
        c.connected_components(np.array([0, 1], np.int64), np.array([5], np.int32))
    with pytest.raises(ValueError, match="same tokens"):
        c.build_trie(np.array([0, 1, 2], np.int64), np.array([4, 4], np.int32), np.ones(2, np.uint8))
    with pytest.raises(ValueError, match="no tokens"):
        c.build_trie(np.array([0, 0], np.int64), np.zeros(0, np.int32), np.ones(1, np.uint8))
    with pytest.raises(ValueError, match="negative"):
        c.build_trie(np.array([0, 1], np.int64), np.array([-1], np.int32), np.ones(1, np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        c.build_trie(np.array([0, 1], np.int32), np.array([1], np.int32), np.ones(1, np.uint8))
