"""Tier 1: pure functions. The English-Clone language (prealign_experiments/english_clone/clone.py): the
clone script, the doubled SentencePiece model (twin id = id + V), and that the library's tokenizer
wrapper, word-boundary classes and lexicon scan see the clone as an isomorphic copy of English."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prealign_experiments.english_clone.clone import (
    CLONE_MARK,
    SP_SPACE,
    build_clone_model,
    clone_piece,
    from_clone_text,
    is_clone_text,
    split_sentences,
    to_clone_text,
    train_english_tokenizer,
    verify_clone_model,
)
from megatron_prealign.lexicon import CONTINUATION, OTHER, WORD_START, build_tokenizer

ASSETS = Path(__file__).resolve().parents[1] / "assets"
VOCAB = 250


@pytest.fixture(scope="module")
def english_lines() -> list:
    lines = (ASSETS / "tiny_corpus.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and line.isascii()]


@pytest.fixture(scope="module")
def models(english_lines, tmp_path_factory):
    """(english model bytes, clone model bytes, path of the clone model)."""
    english = train_english_tokenizer(english_lines, VOCAB, num_threads=1)
    clone = build_clone_model(english)
    path = tmp_path_factory.mktemp("clone") / "english_clone.model"
    path.write_bytes(clone)
    return english, clone, path


@pytest.fixture(scope="module")
def tokenizer(models):
    return build_tokenizer("SentencePieceTokenizer", models[2])


# -- the clone script --------------------------------------------------------------------------

def test_clone_script_examples():
    assert to_clone_text("The house.") == f"{CLONE_MARK}Ｔｈｅ {CLONE_MARK}ｈｏｕｓｅ．"
    assert to_clone_text("  a   b\n c ") == f"{CLONE_MARK}ａ {CLONE_MARK}ｂ {CLONE_MARK}ｃ"
    assert to_clone_text("") == ""
    assert is_clone_text(to_clone_text("It's 1999, (yes)!"))
    assert not is_clone_text("house") and not is_clone_text(f"{CLONE_MARK}ｈｏｕｓｅ x") and not is_clone_text("  ")


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1), max_size=8))
@settings(max_examples=200, deadline=None)
def test_clone_script_round_trip(words):
    text = " ".join(words)
    clone = to_clone_text(text)
    assert from_clone_text(clone) == text
    assert not any(0x21 <= ord(ch) <= 0x7E for ch in clone)  # no character shared with English


def test_clone_script_rejects_non_ascii():
    with pytest.raises(ValueError, match="printable ASCII"):
        to_clone_text("Fluß")


def test_clone_piece():
    assert clone_piece(f"{SP_SPACE}house") == f"{SP_SPACE}{CLONE_MARK}ｈｏｕｓｅ"
    assert clone_piece(SP_SPACE) == f"{SP_SPACE}{CLONE_MARK}"
    assert clone_piece("ing") == "ｉｎｇ"
    assert clone_piece(",") == "，"
    with pytest.raises(ValueError, match="inner"):
        clone_piece(f"a{SP_SPACE}b")
    with pytest.raises(ValueError, match="printable ASCII"):
        clone_piece("é")


def test_split_sentences_bounds_length():
    text = "One. Two! " + "x" * 50 + " " + "y " * 40
    parts = split_sentences(text, max_chars=30)
    assert parts[:2] == ["One.", "Two!"]
    assert all(len(p) <= 30 for p in parts)
    assert "".join(parts).replace(" ", "") == text.replace(" ", "")


# -- the doubled model -------------------------------------------------------------------------

def test_doubled_model_layout(models):
    import sentencepiece as spm

    english, clone, _ = models
    base = spm.SentencePieceProcessor(model_proto=english)
    doubled = spm.SentencePieceProcessor(model_proto=clone)
    assert base.get_piece_size() == VOCAB
    assert doubled.get_piece_size() == 2 * VOCAB
    for i in range(VOCAB):
        assert doubled.id_to_piece(i) == base.id_to_piece(i)
        special = base.is_control(i) or base.is_unknown(i) or base.is_unused(i)
        if special:
            assert doubled.is_unused(i + VOCAB), i
        else:
            assert doubled.id_to_piece(i + VOCAB) == clone_piece(base.id_to_piece(i))
            assert doubled.get_score(i + VOCAB) == pytest.approx(base.get_score(i))
    assert (doubled.eos_id(), doubled.pad_id(), doubled.unk_id()) == (base.eos_id(), base.pad_id(), base.unk_id())


def test_clone_encoding_is_shifted_english(models, english_lines):
    _, clone, _ = models
    checked = verify_clone_model(clone, english_lines, VOCAB)
    assert checked > 500


def test_verification_fails_for_nfkc_base(english_lines):
    """NFKC folds the full-width clone script to ASCII: the check must catch it."""
    import sentencepiece as spm

    out = io.BytesIO()
    with open(os.devnull, "w") as devnull:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(english_lines), model_writer=out, logstream=devnull,
                                       vocab_size=VOCAB, model_type="unigram", character_coverage=1.0,
                                       normalization_rule_name="nmt_nfkc", num_threads=1, minloglevel=2)
    with pytest.raises(ValueError, match="normalization"):
        verify_clone_model(build_clone_model(out.getvalue()), english_lines, VOCAB)


def test_build_refuses_a_clone_model_as_base(models):
    with pytest.raises(ValueError, match="clone script"):
        build_clone_model(models[1])


# -- the library's view of the doubled vocabulary -----------------------------------------------

def test_word_boundary_classes_match_twins(tokenizer):
    classes = tokenizer.token_classes()
    english, twins = classes[:VOCAB], classes[VOCAB:]
    pieces = tokenizer.pieces()
    differ = np.flatnonzero(english != twins)
    # The only difference: "▁" + non-letter pieces (OTHER) get a WORD_START twin "▁ᶜ…".
    for i in differ:
        assert english[i] == OTHER and twins[i] == WORD_START, pieces[i]
        assert pieces[i].startswith(SP_SPACE) and len(pieces[i]) > 1 and not pieces[i][1].isalpha()
    assert (english == WORD_START).sum() > 20 and (english == CONTINUATION).sum() > 20
    assert tokenizer.word_marker == SP_SPACE


def test_encode_word_in_both_languages(tokenizer):
    for word in ("house", "river", "Years", "teacher"):
        english = tokenizer.encode_word(word)
        assert english and max(english) < VOCAB
        assert tokenizer.encode_word(to_clone_text(word)) == [t + VOCAB for t in english]


def test_lexicon_scan_is_isomorphic(tokenizer, english_lines, tmp_path):
    from megatron_prealign.lexicon import compile_lexicon, read_dictionary

    words = ["house", "river", "water", "the", "The", "bank", "teacher", "day", "night", "book"]
    tsv = tmp_path / "clone.tsv"
    tsv.write_text("".join(f"{w}\t{to_clone_text(w)}\n" for w in words), encoding="utf-8")
    lexicon = compile_lexicon(read_dictionary(tsv, format="tsv"), tokenizer)
    assert lexicon.num_entries == 2 * len(words)
    total = 0
    for line in english_lines:
        english = np.asarray(tokenizer.encode(line), dtype=np.int32)
        clone = np.asarray(tokenizer.encode(to_clone_text(line)), dtype=np.int32)
        assert np.array_equal(clone, english + VOCAB)
        en_starts, en_lengths, en_entries = lexicon.scan(english)
        cl_starts, cl_lengths, cl_entries = lexicon.scan(clone)
        assert np.array_equal(en_starts, cl_starts) and np.array_equal(en_lengths, cl_lengths)
        for a, b in zip(en_entries, cl_entries):
            assert b in lexicon.translations(int(a))
        total += len(en_starts)
    assert total > 50


def test_shipped_corpus_matches_its_provenance():
    import gzip
    import hashlib
    import json

    from prealign_experiments.english_clone.setting import DEFAULT_CORPUS

    corpus = Path(DEFAULT_CORPUS)
    provenance = (corpus.parent / "PROVENANCE.md").read_text(encoding="utf-8")
    blob = corpus.read_bytes()
    assert len(blob) <= 5 * 2**20
    assert hashlib.sha256(blob).hexdigest() in provenance
    rows = [json.loads(line) for line in gzip.decompress(blob).decode("ascii").splitlines()]
    assert len(rows) == 233 and rows[0]["year"] == 1790 and rows[-1]["year"] == 2021
    assert all(32 <= ord(ch) < 127 for row in rows for ch in row["text"])
    assert is_clone_text(to_clone_text(rows[0]["text"][:2000]))
