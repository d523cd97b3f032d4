"""Tier 1: pure functions. Compiling a dictionary against the tiny SentencePiece tokenizer; the
translation table, groups and case variants; the `.lex` round trip and its failure modes
(fingerprint mismatch, truncation, corruption, wrong magic/version)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from megatron_prealign.lexicon import (
    Lexicon,
    LexiconError,
    build_tokenizer,
    compile_lexicon,
    format_summary,
    load_lexicon,
    read_dictionary,
)
from megatron_prealign.lexicon.lexicon import LEX_MAGIC

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def sp():
    return build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model")


@pytest.fixture(scope="module")
def muse_lexicon(sp):
    return compile_lexicon(read_dictionary(ASSETS / "dict_en_de.muse"), sp)


def word_by_word(tokenizer, words, num_threads=1):
    """`Tokenizer.encode_words` for the stand-in tokenizers below, from their `encode_word`."""
    rows = [tokenizer.encode_word(w) for w in words]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)])
    return offsets, np.asarray([t for r in rows for t in r], dtype=np.int32)


def entry_by_text(lex: Lexicon) -> dict[str, int]:
    return {lex.entry_text(i): i for i in range(lex.num_entries)}


def texts(lex: Lexicon, ids) -> set[str]:
    return {lex.entry_text(int(i)) for i in ids}


def test_entries_translations_and_groups(muse_lexicon, sp):
    lex = muse_lexicon
    e = entry_by_text(lex)
    assert texts(lex, lex.translations(e["house"])) == {"Haus", "Heim"}
    assert texts(lex, lex.translations(e["Haus"])) == {"house"}
    assert texts(lex, lex.translations(e["bank"])) == {"Ufer", "Bank"}
    # Heim and Haus are not translations of each other, but share house's group.
    assert lex.group_id(e["Heim"]) == lex.group_id(e["Haus"]) == lex.group_id(e["house"])
    assert lex.group_id(e["house"]) != lex.group_id(e["water"])
    # Entries are tokenized as after a space in running text.
    for word, i in e.items():
        assert lex.entry_tokens(i).tolist() == sp.encode_word(word)
        assert lex.entry_tokens(i).dtype == np.int32
    assert "ice cream" in e and len(lex.entry_tokens(e["ice cream"])) >= 2
    assert lex.tokenizer_fingerprint == sp.fingerprint
    assert lex.mode == "word"
    assert np.array_equal(lex.token_classes, sp.token_classes())


def test_flat_arrays_agree_with_accessors(muse_lexicon):
    lex = muse_lexicon
    assert lex.entry_offsets.dtype == np.int64 and lex.entry_flat.dtype == np.int32
    assert lex.translation_offsets.dtype == np.int64 and lex.translation_flat.dtype == np.int32
    assert len(lex.entry_offsets) == len(lex.translation_offsets) == lex.num_entries + 1
    for i in range(lex.num_entries):
        a, b = lex.entry_offsets[i], lex.entry_offsets[i + 1]
        assert np.array_equal(lex.entry_flat[a:b], lex.entry_tokens(i))
        a, b = lex.translation_offsets[i], lex.translation_offsets[i + 1]
        assert np.array_equal(lex.translation_flat[a:b], lex.translations(i))
    with pytest.raises(IndexError):
        lex.entry_tokens(lex.num_entries)


def test_summary(muse_lexicon):
    s = muse_lexicon.summary()
    assert s["entries"] == 18  # 8 sources + 10 distinct targets
    assert s["unique_sources"] == 8
    assert 0.0 < s["multi_token_share"] < 1.0
    assert s["dropped"] == {
        "duplicate": 1, "identity": 1, "invalid": 0, "phrase": 0, "untokenizable": 0, "identical_tokens": 0,
    }
    assert s["scannable_entries"] == 18
    assert s["sha256"] == muse_lexicon.sha256


def test_multiway_every_member_translates_every_other(sp):
    lex = compile_lexicon(read_dictionary(ASSETS / "dict_multiway.jsonl"), sp)
    e = entry_by_text(lex)
    assert texts(lex, lex.translations(e["银行"])) == {"bank", "banque"}
    assert texts(lex, lex.translations(e["banque"])) == {"bank", "银行"}
    assert len({lex.group_id(e[w]) for w in ("bank", "银行", "banque")}) == 1
    assert lex.summary()["groups"] == 4


def test_case_variants(sp):
    r = read_dictionary(ASSETS / "dict_multiway.jsonl")
    lex = compile_lexicon(r, sp, case_variants=True)
    e = entry_by_text(lex)
    assert texts(lex, lex.translations(e["Bank"])) == {"银行", "Banque"}
    assert texts(lex, lex.translations(e["House"])) == {"Haus", "Maison"}
    # Words whose capital form is unchanged get no capitalized translations.
    assert texts(lex, lex.translations(e["银行"])) == {"bank", "banque"}
    assert texts(lex, lex.translations(e["Haus"])) == {"house", "maison"}
    assert lex.summary()["unique_sources"] == 8


def test_words_with_identical_tokens_merge(tmp_path):
    # A tokenizer that lower-cases makes "Haus" and "haus" one entry; their pair disappears.
    class Lowering:
        tokenizer_type = "Test"
        fingerprint = "f" * 64
        unk = None

        def encode_word(self, word):
            return [ord(c) for c in word.lower()]

        encode_words = word_by_word

        def token_classes(self):
            return np.ones(256, dtype=np.uint8)

    d = tmp_path / "d.txt"
    d.write_text("Haus haus\nhaus house\n\u200b zero\n")
    lex = compile_lexicon(read_dictionary(d), Lowering())
    e = entry_by_text(lex)
    assert set(e) == {"Haus", "house", "\u200b", "zero"}
    assert lex.summary()["dropped"]["identical_tokens"] == 2
    assert texts(lex, lex.translations(e["Haus"])) == {"house"}


def test_untokenizable_words_are_dropped(tmp_path, sp):
    class Empty:
        tokenizer_type = sp.tokenizer_type
        fingerprint = sp.fingerprint
        unk = sp.unk

        def encode_word(self, word):
            return [] if word == "nothing" else sp.encode_word(word)

        encode_words = word_by_word

        def token_classes(self):
            return sp.token_classes()

    d = tmp_path / "d.txt"
    d.write_text("house Haus\nnothing nichts\n")
    lex = compile_lexicon(read_dictionary(d), Empty())
    e = entry_by_text(lex)
    assert set(e) == {"house", "Haus", "nichts"}
    assert len(lex.translations(e["nichts"])) == 0
    s = lex.summary()
    assert s["dropped"]["untokenizable"] == 1
    assert s["scannable_entries"] == 2  # "nichts" has nothing to switch to: not in the trie


@pytest.fixture(scope="module")
def sp_without_byte_fallback(tmp_path_factory):
    """A tokenizer with a real unknown token: Cyrillic is outside its vocabulary."""
    import sentencepiece as spm

    prefix = tmp_path_factory.mktemp("nofb") / "nofb"
    spm.SentencePieceTrainer.train(
        input=str(ASSETS / "tiny_corpus.txt"), model_prefix=str(prefix), vocab_size=300, model_type="unigram",
        character_coverage=1.0, byte_fallback=False, pad_id=3, unk_id=0, bos_id=1, eos_id=2, num_threads=1,
        normalization_rule_name="identity", minloglevel=2,
    )
    return build_tokenizer("SentencePieceTokenizer", f"{prefix}.model")


def test_words_with_unknown_tokens_are_untokenizable(tmp_path, sp_without_byte_fallback):
    tok = sp_without_byte_fallback
    assert tok.encode_word("жаба") == tok.encode_word("щука") == tok.encode_word("ёж")  # [▁, <unk>]
    d = tmp_path / "d.txt"
    d.write_text("house Haus\nжаба Kröte\nщука Hecht\nriverж Fluss\n", encoding="utf-8")
    lex = compile_lexicon(read_dictionary(d), tok)
    assert set(entry_by_text(lex)) == {"house", "Haus", "Kröte", "Hecht", "Fluss"}
    for i in range(lex.num_entries):
        assert tok.unk not in lex.entry_tokens(i).tolist()
    assert lex.summary()["dropped"]["untokenizable"] == 3
    assert "untokenizable=3" in format_summary(lex.summary())
    # Other words the vocabulary cannot spell are not taken for dictionary words.
    tokens = np.asarray(tok.encode("the ёж and the riverщ by the house"), dtype=np.int32)
    assert [lex.entry_text(i) for i in lex.scan(tokens)[2]] == ["house"]


def test_nothing_compilable_is_an_error_naming_the_dictionary(tmp_path, sp_without_byte_fallback):
    d = tmp_path / "cyrillic.txt"
    d.write_text("жаба щука\nёж ёжик\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=r"cyrillic\.txt: no entry with a translation is left .* 4 words untokenizable"):
        compile_lexicon(read_dictionary(d), sp_without_byte_fallback)


def test_save_load_round_trip(tmp_path, muse_lexicon, sp):
    path = tmp_path / "sub" / "en_de.lex"
    muse_lexicon.save(path)
    assert not list(path.parent.glob(".*tmp*"))  # the atomic temp name is gone
    lex = load_lexicon(path, sp)
    assert lex.sha256 == muse_lexicon.sha256
    assert lex.num_entries == muse_lexicon.num_entries
    assert lex.summary() == {**muse_lexicon.summary()}
    for i in range(lex.num_entries):
        assert lex.entry_text(i) == muse_lexicon.entry_text(i)
        assert np.array_equal(lex.entry_tokens(i), muse_lexicon.entry_tokens(i))
        assert np.array_equal(lex.translations(i), muse_lexicon.translations(i))
        assert lex.group_id(i) == muse_lexicon.group_id(i)
    tokens = np.asarray(sp.encode("The house by the river and the water"), dtype=np.int32)
    for got, want in zip(lex.scan(tokens), muse_lexicon.scan(tokens)):
        assert np.array_equal(got, want)
    with open(path, "rb") as f:
        assert f.read(8) == LEX_MAGIC


def test_sha256_depends_on_content_and_mode(sp, muse_lexicon):
    r = read_dictionary(ASSETS / "dict_en_de.muse")
    assert compile_lexicon(r, sp).sha256 == muse_lexicon.sha256  # deterministic
    assert compile_lexicon(r, sp, mode="longest-match").sha256 != muse_lexicon.sha256
    assert compile_lexicon(r, sp, case_variants=True).sha256 != muse_lexicon.sha256


def test_fingerprint_mismatch_names_file_both_fingerprints_and_fix(tmp_path, muse_lexicon):
    path = tmp_path / "en_de.lex"
    muse_lexicon.save(path)
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train([str(ASSETS / "tiny_corpus.txt")], trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"]))
    hf.save(str(tmp_path / "tokenizer.json"))
    other = build_tokenizer("HuggingFaceTokenizer", tmp_path / "tokenizer.json")
    with pytest.raises(LexiconError) as exc:
        load_lexicon(path, other)
    msg = str(exc.value)
    assert str(path) in msg
    assert muse_lexicon.tokenizer_fingerprint in msg and other.fingerprint in msg
    assert "rebuild the lexicon with tools/build_lexicon.py" in msg


def test_truncated_file_is_a_clear_error(tmp_path, muse_lexicon):
    path = tmp_path / "t.lex"
    muse_lexicon.save(path)
    blob = path.read_bytes()
    for cut in (len(blob) - 1, len(blob) // 2, 20, 5, 0):
        path.write_bytes(blob[:cut])
        with pytest.raises(LexiconError, match=rf"{path}: truncated"):
            load_lexicon(path)


def test_corrupt_content_fails_the_hash_check(tmp_path, muse_lexicon):
    path = tmp_path / "c.lex"
    muse_lexicon.save(path)
    blob = bytearray(path.read_bytes())
    blob[-70] ^= 0x01  # inside the last array's data
    path.write_bytes(bytes(blob))
    with pytest.raises(LexiconError, match=rf"{path}: .*(sha256 mismatch|corrupt)"):
        load_lexicon(path)


def test_wrong_magic_version_and_header(tmp_path, muse_lexicon):
    path = tmp_path / "m.lex"
    muse_lexicon.save(path)
    blob = path.read_bytes()
    path.write_bytes(b"NOTALEX\0" + blob[8:])
    with pytest.raises(LexiconError, match=rf"{path}: not a lexicon file"):
        load_lexicon(path)
    path.write_bytes(blob[:8] + struct.pack("<I", 99) + blob[12:])
    with pytest.raises(LexiconError, match=rf"{path}: lexicon format version 99 is not supported"):
        load_lexicon(path)
    path.write_bytes(blob[:16] + b"#" + blob[17:])
    with pytest.raises(LexiconError, match=rf"{path}: corrupt lexicon header"):
        load_lexicon(path)


def test_crafted_arrays_are_refused_naming_the_file(muse_lexicon, sp):
    """What a `.lex` written by something else than compile_lexicon (its sha256 then matches)
    could carry: a class outside the three, trie offsets past the edges."""
    arrays = {name: np.array(muse_lexicon._arrays[name]) for name in muse_lexicon._arrays}

    def crafted(**changes):
        return Lexicon({**arrays, **changes}, mode="word", tokenizer_fingerprint="", tokenizer_type="",
                       path="crafted.lex")

    with pytest.raises(LexiconError, match=r"crafted\.lex: corrupt lexicon: token_classes has class 9"):
        crafted(token_classes=np.where(np.arange(sp.vocab_size) == 5, 9, arrays["token_classes"]).astype(np.uint8))
    offsets = arrays["trie_child_offsets"].copy()
    offsets[1] = offsets[-1] + 1000
    lex = crafted(trie_child_offsets=offsets)
    with pytest.raises(LexiconError, match=r"crafted\.lex: corrupt lexicon: invalid lexicon trie: child_offsets"):
        lex.scan(np.zeros(3, np.int32))


def test_from_entries_validation():
    classes = np.ones(10, dtype=np.uint8)
    with pytest.raises(ValueError, match="same tokens"):
        Lexicon.from_entries([[1, 2], [1, 2]], [[1], [0]], classes)
    with pytest.raises(ValueError, match="empty or out-of-range"):
        Lexicon.from_entries([[]], [[]], classes)
    with pytest.raises(ValueError, match="outside"):
        Lexicon.from_entries([[1]], [[5]], classes)
    with pytest.raises(ValueError, match="mode"):
        Lexicon.from_entries([[1]], [[]], classes, mode="fuzzy")


def test_lexicon_pickles_without_the_compiled_trie(muse_lexicon, sp):
    import pickle

    tokens = np.asarray(sp.encode("the house and the bank"), dtype=np.int32)
    before = muse_lexicon.scan(tokens)
    clone = pickle.loads(pickle.dumps(muse_lexicon))
    assert clone.sha256 == muse_lexicon.sha256
    for got, want in zip(clone.scan(tokens), before):
        assert np.array_equal(got, want)


def test_from_entries_explicit_groups():
    classes = np.ones(4, dtype=np.uint8)
    lex = Lexicon.from_entries([[1], [2], [3]], [[1], [0], []], classes, group_ids=[0, 0, 7])
    assert [lex.group_id(i) for i in range(3)] == [0, 0, 7]
    with pytest.raises(ValueError, match="non-negative group ids"):
        Lexicon.from_entries([[1], [2]], [[1], [0]], classes, group_ids=[0, -1])
    with pytest.raises(ValueError, match="non-negative group ids"):
        Lexicon.from_entries([[1], [2]], [[1], [0]], classes, group_ids=[0])
