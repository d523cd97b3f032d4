"""Tier 1: pure functions. Tokenizer wrappers: SentencePiece and Hugging Face tokenizers built
offline here (byte-level BPE, Metaspace unigram, WordPiece), their word-boundary classes derived
from the vocabulary, `encode_word`, EOS/PAD resolution and fingerprints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from megatron_prealign.lexicon import (
    CONTINUATION,
    OTHER,
    WORD_START,
    LexiconError,
    build_tokenizer,
    classify_pieces,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CORPUS = str(ASSETS / "tiny_corpus.txt")


@pytest.fixture(scope="module")
def sp():
    return build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """Three tiny HF tokenizers trained here: byte-level BPE (GPT-2 style), Metaspace unigram
    (SentencePiece style) and WordPiece (BERT style)."""
    root = tmp_path_factory.mktemp("hf")
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bl.decoder = decoders.ByteLevel()
    bl.train([CORPUS], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    ))
    bl.save(str(root / "bytelevel.json"))
    ms = Tokenizer(models.Unigram())
    ms.pre_tokenizer = pre_tokenizers.Metaspace()
    ms.decoder = decoders.Metaspace()
    ms.train([CORPUS], trainers.UnigramTrainer(
        vocab_size=300, special_tokens=["<unk>", "</s>", "<pad>"], unk_token="<unk>", show_progress=False
    ))
    (root / "metaspace").mkdir()
    ms.save(str(root / "metaspace" / "tokenizer.json"))
    (root / "metaspace" / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": {"content": "</s>"}, "pad_token": "<pad>"})
    )
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    wp.decoder = decoders.WordPiece()
    wp.train([CORPUS], trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", "[SEP]"], show_progress=False))
    wp.save(str(root / "wordpiece.json"))
    return root


def classes_of(tok, ids):
    cls = tok.token_classes()
    return [int(cls[i]) for i in ids]


def test_sentencepiece_basics(sp):
    assert sp.vocab_size == 400
    assert (sp.eod, sp.pad) == (2, 3)
    assert sp.word_marker == "\u2581"
    assert len(sp.fingerprint) == 64 and int(sp.fingerprint, 16) >= 0
    ids = sp.encode("The house by the river.")
    assert sp.decode(ids) == "The house by the river."
    assert sp.encode_word("house") == [sp.pieces().index("\u2581house")]


def test_sentencepiece_classes(sp):
    cls = sp.token_classes()
    assert cls.dtype == np.uint8 and cls.shape == (sp.vocab_size,)
    pieces = sp.pieces()
    by_piece = dict(zip(pieces, cls.tolist()))
    assert by_piece["\u2581house"] == WORD_START
    assert by_piece["\u2581"] == WORD_START  # bare marker before a rare letter
    assert by_piece["s"] == CONTINUATION
    for piece in ("<unk>", "<s>", "</s>", "<pad>", "<0xE9>", ",", "1", "!"):
        assert by_piece[piece] == OTHER, piece
    # A word spelled with byte-fallback pieces still starts with a WORD_START.
    ids = sp.encode_word("银行")
    assert classes_of(sp, ids)[0] == WORD_START
    assert classes_of(sp, sp.encode_word("Brücke")) == [WORD_START] + [CONTINUATION] * 5


def test_byte_level_bpe(hf_dir):
    tok = build_tokenizer("HuggingFaceTokenizer", hf_dir / "bytelevel.json")
    assert tok.vocab_size == 400
    assert tok.eod == tok.pad == 0  # "<|endoftext|>"; no pad token -> eod
    assert tok.word_marker == " "  # "Ġ" decoded to its byte
    ids = tok.encode_word("house")
    assert tok.pieces()[ids[0]].startswith("\u0120")
    assert tok.decode(ids) == " house"
    assert tok.encode("a house") == tok.encode("a") + ids
    assert classes_of(tok, ids) == [WORD_START] + [CONTINUATION] * (len(ids) - 1)
    # Multi-byte letters split into byte pieces stay inside the word.
    assert classes_of(tok, tok.encode_word("Brücke"))[1:] == [CONTINUATION] * (len(tok.encode_word("Brücke")) - 1)
    pieces = dict(zip(tok.pieces(), tok.token_classes().tolist()))
    assert pieces["<|endoftext|>"] == OTHER and pieces[","] == OTHER and pieces["1"] == OTHER
    assert pieces["\u0120"] == WORD_START


def test_metaspace_unigram_with_config(hf_dir):
    tok = build_tokenizer("HuggingFaceTokenizer", hf_dir / "metaspace")
    assert tok.word_marker == "\u2581"
    assert tok.eod == tok.pieces().index("</s>") and tok.pad == tok.pieces().index("<pad>")
    ids = tok.encode_word("river")
    assert classes_of(tok, ids)[0] == WORD_START
    assert tok.decode(ids).strip() == "river"


def test_wordpiece_continuation_prefix(hf_dir):
    tok = build_tokenizer("HuggingFaceTokenizer", hf_dir / "wordpiece.json")
    assert tok.word_marker == ""
    assert tok.eod == tok.pieces().index("[SEP]")
    ids = tok.encode_word("Brücke")
    assert classes_of(tok, ids) == [WORD_START] + [CONTINUATION] * (len(ids) - 1)
    pieces = dict(zip(tok.pieces(), tok.token_classes().tolist()))
    assert pieces["##2"] == OTHER and pieces["[UNK]"] == OTHER


def test_unknown_token_id_of_each_kind(sp, hf_dir):
    assert sp.unk == sp.pieces().index("<unk>")
    assert build_tokenizer("HuggingFaceTokenizer", hf_dir / "wordpiece.json").unk == 0  # "[UNK]"
    metaspace = build_tokenizer("HuggingFaceTokenizer", hf_dir / "metaspace")
    assert metaspace.unk == metaspace.pieces().index("<unk>")
    assert build_tokenizer("HuggingFaceTokenizer", hf_dir / "bytelevel.json").unk is None


def test_hf_directory_without_tokenizer_json_goes_through_transformers(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes((ASSETS / "tiny_sp.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "eos_token": "</s>", "bos_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>",
    }))
    tok = build_tokenizer("HuggingFaceTokenizer", tmp_path)
    sp = build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model")
    assert (tok.vocab_size, tok.eod, tok.pad) == (400, 2, 3)
    assert tok.word_marker == "\u2581"
    assert np.array_equal(tok.token_classes(), sp.token_classes())
    assert tok.fingerprint != sp.fingerprint  # the type is part of the fingerprint


def test_hf_without_any_eos_is_an_error(tmp_path):
    t = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(LexiconError, match="cannot determine the EOS token"):
        build_tokenizer("HuggingFaceTokenizer", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    with pytest.raises(LexiconError, match="eos_token '</s>' is not in the vocabulary"):
        build_tokenizer("HuggingFaceTokenizer", tmp_path)


def test_fingerprint_tracks_the_vocabulary(tmp_path, sp):
    import sentencepiece as spm

    assert build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model").fingerprint == sp.fingerprint
    spm.SentencePieceTrainer.train(
        input=CORPUS, model_prefix=str(tmp_path / "other"), vocab_size=390, model_type="unigram",
        character_coverage=1.0, byte_fallback=True, num_threads=1, minloglevel=2,
        normalization_rule_name="identity",
    )
    assert build_tokenizer("SentencePieceTokenizer", tmp_path / "other.model").fingerprint != sp.fingerprint


def test_classify_pieces_rules():
    texts = ["\u2581cat", "\u2581", "s", "\u2581,", ",", "7", "\u2581\u2581", "", "\u00e9t\u00e9", "\u2581\u00c9"]
    got = classify_pieces(texts, "\u2581", special=[False] * 9 + [True]).tolist()
    assert got == [WORD_START, WORD_START, CONTINUATION, OTHER, OTHER, OTHER, OTHER, OTHER, CONTINUATION, OTHER]
    assert classify_pieces(["##s", "cat", "##,", "("], "", "##").tolist() == [CONTINUATION, WORD_START, OTHER, OTHER]
    # No convention at all: every letter piece may start a word.
    assert classify_pieces(["cat", "s", "."], "").tolist() == [WORD_START, WORD_START, OTHER]


def test_unspaced_script_pieces_may_start_words():
    # Inside running Chinese or Thai text a word begins on an unmarked piece; Latin continues.
    texts = ["\u2581\u76ee\u5f55", "\u76ee\u5f55", "\u0e44\u0e17\u0e22", "\u30ab\u30ca", "ion", "\u00e9t\u00e9"]
    assert classify_pieces(texts, "\u2581").tolist() == [WORD_START] * 4 + [CONTINUATION] * 2
    assert classify_pieces(["##\u5b57", "##s"], "", "##").tolist() == [WORD_START, CONTINUATION]


def test_unknown_type_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="--tokenizer-type 'GPT2BPETokenizer' is not supported"):
        build_tokenizer("GPT2BPETokenizer", tmp_path)
    with pytest.raises(FileNotFoundError):
        build_tokenizer("SentencePieceTokenizer", tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError):
        build_tokenizer("HuggingFaceTokenizer", tmp_path / "missing")


def test_a_corrupt_model_or_the_wrong_tokenizer_type_is_named(tmp_path):
    from megatron_prealign.lexicon import LexiconError, build_tokenizer
    from tests.conftest import ASSETS

    garbage = tmp_path / "bad.model"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(LexiconError, match="bad.model is not a SentencePiece model"):
        build_tokenizer("SentencePieceTokenizer", garbage)
    with pytest.raises(LexiconError, match="tiny_sp.model is not a Hugging Face tokenizer.json .*--tokenizer-type "
                                           "SentencePieceTokenizer"):
        build_tokenizer("HuggingFaceTokenizer", ASSETS / "tiny_sp.model")
