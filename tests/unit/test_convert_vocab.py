"""Tier 2 (in process, no process groups): vocabulary extension (megatron_prealign/convert/vocab.py
and tools/extend_vocab.py).

Extending SentencePiece models (unigram and BPE) and byte-level BPE tokenizer.json files with
German pieces: old ids keep their pieces, English text encodes exactly as before, German text
gets shorter; the initialisation rule of new rows on a hand-made lexicon; and the errors. The
checkpoint side (logits of old tokens unchanged at TP=1/TP=2/PP=2, rows in a real checkpoint,
export) is in tests/distributed/test_convert_parity.py; a pre-pass and pretraining run from an
extended model in tests/distributed/test_continue_from_hf.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_prealign.convert.vocab import (
    EXTENSION_FILE,
    TokenizerExtension,
    dictionary_sources,
    extend_checkpoint,
    extend_tokenizer,
    initial_rows,
    load_tokenizer,
    locate_tokenizer,
)
from megatron_prealign.lexicon import WORD_START, Lexicon
from tests.conftest import ASSETS
from tests._tools import run_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """English lines of the tiny corpus (the text to preserve) and the German text, as files."""
    root = tmp_path_factory.mktemp("texts")
    lines = [line for line in (ASSETS / "tiny_corpus.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    english = [line for line in lines if line.isascii()]
    (root / "english.txt").write_text("\n".join(english), encoding="utf-8")
    german = (ASSETS / "tiny_de.txt").read_text(encoding="utf-8").splitlines()
    return {"english": english, "english_path": root / "english.txt", "german": german,
            "german_path": ASSETS / "tiny_de.txt", "root": root}


def _bpe_tokenizer_json(directory: Path, lines, vocab_size: int) -> Path:
    """A byte-level BPE tokenizer.json trained on `lines`, its special tokens last (Llama 3's layout)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end_of_text|>"}))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": 1}))
    return directory


def _sp_bpe_model(path: Path, lines) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(path.with_suffix("")),
                                   vocab_size=300, model_type="bpe", minloglevel=2,
                                   normalization_rule_name="identity", num_threads=1)
    return path


def _check_extension(base, extended, record: TokenizerExtension, texts) -> None:
    """The properties every extension must have."""
    assert record.base_vocab_size == base.vocab_size and record.vocab_size == extended.vocab_size
    assert extended.vocab_size == base.vocab_size + len(record.added) > base.vocab_size
    assert extended.pieces()[:base.vocab_size] == base.pieces()
    assert extended.pieces()[base.vocab_size:] == list(record.added)
    assert (record.base_fingerprint, record.fingerprint) == (base.fingerprint, extended.fingerprint)
    assert extended.eod == base.eod
    for line in texts["english"]:
        assert extended.encode(line) == base.encode(line), line
    old = sum(len(base.encode(line)) for line in texts["german"])
    new = sum(len(extended.encode(line)) for line in texts["german"])
    print(f"{record.tokenizer_type}: +{len(record.added)} pieces ({len(record.dropped)} dropped), "
          f"German tokens {old} -> {new}")
    assert new < 0.9 * old
    assert any(t >= base.vocab_size for line in texts["german"] for t in extended.encode(line))


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_extension_keeps_old_ids_and_old_text(model_type, texts, tmp_path):
    base_path = ASSETS / "tiny_sp.model" if model_type == "unigram" else _sp_bpe_model(tmp_path / "bpe.model",
                                                                                       texts["english"])
    record = extend_tokenizer(base_path, tmp_path / "ext", new_language_text=texts["german_path"],
                              new_language_vocab_size=150, preserve_text=texts["english_path"])
    assert sorted(p.name for p in (tmp_path / "ext").iterdir()) == sorted([EXTENSION_FILE, "tokenizer.model"])
    assert TokenizerExtension.read(tmp_path / "ext" / EXTENSION_FILE) == record
    base, extended = load_tokenizer(base_path), load_tokenizer(tmp_path / "ext")
    assert locate_tokenizer(tmp_path / "ext")[0] == "SentencePieceTokenizer"
    _check_extension(base, extended, record, texts)
    if model_type == "bpe":
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((tmp_path / "ext" / "tokenizer.model").read_bytes())
        scores = [p.score for p in proto.pieces]
        # New merges rank after every old one (BPE merges the highest score first).
        assert max(scores[base.vocab_size:]) < min(s for p, s in zip(proto.pieces[:base.vocab_size], scores)
                                                   if p.type == 1)
    # A new whole-word piece starts a word, so the lexicon scan can match it.
    classes = extended.token_classes()
    whole_words = [i for i in range(base.vocab_size, extended.vocab_size) if extended.pieces()[i].startswith("▁")
                   and len(extended.pieces()[i]) > 2]
    assert whole_words and all(classes[i] == WORD_START for i in whole_words)


def test_without_preserved_text_some_old_text_would_change(texts, tmp_path):
    """The guard is what keeps old text: unguarded, the same German pieces re-split English lines."""
    unguarded = extend_tokenizer(ASSETS / "tiny_sp.model", tmp_path / "free", new_language_text=texts["german_path"],
                                 new_language_vocab_size=150)
    guarded = extend_tokenizer(ASSETS / "tiny_sp.model", tmp_path / "kept", new_language_text=texts["german_path"],
                               new_language_vocab_size=150, preserve_text=texts["english_path"])
    assert unguarded.dropped == () and guarded.dropped
    assert set(guarded.added) | set(guarded.dropped) == set(unguarded.added)
    base, free = load_tokenizer(ASSETS / "tiny_sp.model"), load_tokenizer(tmp_path / "free")
    assert any(free.encode(line) != base.encode(line) for line in texts["english"])


def test_sentencepiece_extension_from_a_given_model(texts, tmp_path):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts["german"]), model_prefix=str(tmp_path / "de"),
                                   vocab_size=120, hard_vocab_limit=False, minloglevel=2, num_threads=1,
                                   normalization_rule_name="identity")
    record = extend_tokenizer(ASSETS / "tiny_sp.model", tmp_path / "ext", new_tokenizer=tmp_path / "de.model",
                              preserve_text=texts["english_path"])
    _check_extension(load_tokenizer(ASSETS / "tiny_sp.model"), load_tokenizer(tmp_path / "ext"), record, texts)


def test_tokenizer_json_extension_keeps_ids_special_tokens_and_old_text(texts, tmp_path):
    transformers = pytest.importorskip("transformers")
    base_dir = _bpe_tokenizer_json(tmp_path / "base", texts["english"], 500)
    (base_dir / "vocab.json").write_text("{}")  # a stale slow-tokenizer file: not carried over
    record = extend_tokenizer(base_dir, tmp_path / "ext", new_language_text=texts["german_path"],
                              new_language_vocab_size=400, preserve_text=texts["english_path"])
    out = tmp_path / "ext"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [EXTENSION_FILE, "generation_config.json", "tokenizer.json", "tokenizer_config.json"])
    base, extended = load_tokenizer(base_dir), load_tokenizer(out)
    _check_extension(base, extended, record, texts)
    special = {"<|begin_of_text|>": 500, "<|end_of_text|>": 501}
    assert {p: extended.pieces().index(p) for p in special} == special
    assert extended.eod == 501
    # transformers reads the extended tokenizer.json the same way.
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert len(hf) == extended.vocab_size
    for line in texts["german"][:5] + texts["english"][:5]:
        assert hf(line, add_special_tokens=False)["input_ids"] == extended.encode(line)


def test_sentencepiece_style_tokenizer_json_gets_pieces_within_words(texts, tmp_path):
    """A Llama-2-style tokenizer.json (BPE with byte fallback, "▁" for spaces, Metaspace that does
    not split): new pieces are trained split at "▁", so none spans two words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.train_from_iterator(texts["english"], trainers.BpeTrainer(
        vocab_size=700, show_progress=False, special_tokens=["<unk>", "<s>", "</s>"]
        + [f"<0x{b:02X}>" for b in range(256)]))
    spec = json.loads(tok.to_str())
    spec["pre_tokenizer"]["split"] = False  # as transformers writes Llama tokenizers
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "base" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    record = extend_tokenizer(tmp_path / "base", tmp_path / "ext", new_language_text=texts["german_path"],
                              new_language_vocab_size=300, preserve_text=texts["english_path"])
    _check_extension(load_tokenizer(tmp_path / "base"), load_tokenizer(tmp_path / "ext"), record, texts)
    assert not [p for p in record.added if "\u2581" in p[1:]]


def test_tokenizer_json_extension_from_a_given_tokenizer(texts, tmp_path):
    base_dir = _bpe_tokenizer_json(tmp_path / "base", texts["english"], 500)
    german = _bpe_tokenizer_json(tmp_path / "de", texts["german"], 400)
    record = extend_tokenizer(base_dir / "tokenizer.json", tmp_path / "ext", new_tokenizer=german / "tokenizer.json",
                              preserve_text=texts["english_path"])
    _check_extension(load_tokenizer(base_dir), load_tokenizer(tmp_path / "ext"), record, texts)


def test_tokenizer_errors_name_the_flag(texts, tmp_path):
    base = ASSETS / "tiny_sp.model"
    with pytest.raises(ValueError, match="either --new-tokenizer or --new-language-text"):
        extend_tokenizer(base, tmp_path / "a")
    with pytest.raises(ValueError, match="--new-language-vocab-size > 0"):
        extend_tokenizer(base, tmp_path / "a", new_language_text=texts["german_path"])
    with pytest.raises(ValueError, match="adds no piece"):
        extend_tokenizer(base, tmp_path / "a", new_tokenizer=base)
    json_dir = _bpe_tokenizer_json(tmp_path / "bpe", texts["english"], 300)
    with pytest.raises(ValueError, match="is a HuggingFaceTokenizer; the base is a SentencePieceTokenizer"):
        extend_tokenizer(base, tmp_path / "a", new_tokenizer=json_dir)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--output .*foreign exists and holds files this tool did not write"):
        extend_tokenizer(base, foreign, new_language_text=texts["german_path"], new_language_vocab_size=150)
    assert (foreign / "notes.txt").read_text() == "mine"
    spec = json.loads((json_dir / "tokenizer.json").read_text())
    spec["model"] = {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
    spec["added_tokens"] = []
    (tmp_path / "wordlevel").mkdir()
    (tmp_path / "wordlevel" / "tokenizer.json").write_text(json.dumps(spec))
    (tmp_path / "wordlevel" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "a"}))
    with pytest.raises(ValueError, match="only BPE tokenizer.json models can be extended"):
        extend_tokenizer(tmp_path / "wordlevel", tmp_path / "a", new_tokenizer=json_dir)
    with pytest.raises(FileNotFoundError, match="holds neither tokenizer.json nor tokenizer.model"):
        locate_tokenizer(tmp_path)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------ initial rows


def test_new_rows_start_at_their_translations_embedding():
    """Base vocabulary 10; new ids 10-13. Entries (token ids) and their translations:
    [10] <-> [1, 2] and [3]; [10, 11] <-> [4]; [12] <-> [11] (only new ids: not usable); 13 in no entry."""
    entries = [[10], [1, 2], [3], [10, 11], [4], [12], [11]]
    translations = [[1, 2], [0], [0], [4], [3], [6], [5]]
    lexicon = Lexicon.from_entries(entries, translations, np.ones(14, dtype=np.uint8))
    sources = dictionary_sources(lexicon, base_vocab_size=10)
    assert sorted(sources) == [10, 11]
    weight = torch.arange(14 * 2, dtype=torch.float32).reshape(14, 2) ** 1.5
    rows, from_dictionary = initial_rows(weight, 10, range(10, 14), sources)
    old = weight[:10].double()
    entry_10 = (old[[1, 2]].mean(0) + old[3]) / 2  # translations [1, 2] and [3], equally weighted
    entry_10_11 = old[4]
    torch.testing.assert_close(rows[10], (entry_10 + entry_10_11) / 2)
    torch.testing.assert_close(rows[11], entry_10_11)
    torch.testing.assert_close(rows[12], old.mean(0))
    torch.testing.assert_close(rows[13], old.mean(0))
    assert from_dictionary == 2


# ---------------------------------------------------------------------------- model errors


def _fake_checkpoint(root: Path, vocab_size: int, **state) -> Path:
    """A checkpoint directory with a prealign_state.json and no tensors: enough for every check
    made before the tensors are read."""
    import dataclasses

    from megatron_prealign.model import ModelConfig

    import pickle

    from torch.distributed.checkpoint.metadata import Metadata

    ckpt = root / "release"
    ckpt.mkdir(parents=True)
    (ckpt / "prealign_state.json").write_text(json.dumps(
        {"model": dataclasses.asdict(ModelConfig(vocab_size=vocab_size)), "iteration": 0, **state}))
    # dist_checkpointing's files, holding no tensor: the directory passes the completeness check.
    (ckpt / ".metadata").write_bytes(pickle.dumps(Metadata(state_dict_metadata={}, storage_data={})))
    (ckpt / "common.pt").write_bytes(b"")
    (ckpt / "metadata.json").write_text("{}")
    return ckpt


def test_checkpoint_extension_refuses_mismatched_inputs(texts, tmp_path):
    extend_tokenizer(ASSETS / "tiny_sp.model", tmp_path / "ext", new_language_text=texts["german_path"],
                     new_language_vocab_size=150, preserve_text=texts["english_path"])
    base = load_tokenizer(ASSETS / "tiny_sp.model")
    ckpt = _fake_checkpoint(tmp_path / "ckpt", 400)
    with pytest.raises(ValueError, match="--init dictionary needs --lexicon"):
        extend_checkpoint(ckpt, tmp_path / "ext", tmp_path / "out")
    with pytest.raises(ValueError, match="--init must be one of"):
        extend_checkpoint(ckpt, tmp_path / "ext", tmp_path / "out", init="zeros")
    with pytest.raises(ValueError, match="has no vocab_extension.json .* --base-tokenizer-model"):
        extend_checkpoint(ckpt, ASSETS / "tiny_sp.model", tmp_path / "out", init="mean")
    other = _sp_bpe_model(tmp_path / "other.model", texts["english"])
    with pytest.raises(ValueError, match="does not extend its base tokenizer"):
        extend_checkpoint(ckpt, tmp_path / "ext", tmp_path / "out", init="mean", base_tokenizer=other)
    trained = _fake_checkpoint(tmp_path / "trained", 400, tokenizer_fingerprint="0" * 64)
    with pytest.raises(ValueError, match="was trained with another tokenizer than the base"):
        extend_checkpoint(trained, tmp_path / "ext", tmp_path / "out", init="mean")
    small = _fake_checkpoint(tmp_path / "small", 300, tokenizer_fingerprint=base.fingerprint)
    with pytest.raises(ValueError, match="the base tokenizer has 400 ids but .* only 300 rows"):
        extend_checkpoint(small, tmp_path / "ext", tmp_path / "out", init="mean")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- the tool


def test_tool_extends_a_tokenizer_and_reports_errors(texts, tmp_path):
    done = run_tool("extend_vocab", ["tokenizer", "--base", str(ASSETS / "tiny_sp.model"), "--new-language-text",
                                     str(texts["german_path"]), "--new-language-vocab-size", "150", "--preserve-text",
                                     str(texts["english_path"]), "--output", str(tmp_path / "ext")])
    assert done.returncode == 0, done.stderr
    assert TokenizerExtension.read(tmp_path / "ext" / EXTENSION_FILE).vocab_size > 400
    done = run_tool("extend_vocab", ["tokenizer", "--base", str(tmp_path / "missing.model"), "--new-language-text",
                                     str(texts["german_path"]), "--new-language-vocab-size", "150",
                                     "--output", str(tmp_path / "x")])
    assert done.returncode == 2 and "missing.model not found" in done.stderr
    done = run_tool("extend_vocab", ["model", "--load", str(tmp_path / "nowhere"), "--tokenizer", str(tmp_path / "ext"),
                                     "--init", "mean", "--output", str(tmp_path / "out")])
    assert done.returncode == 2 and "nowhere does not exist" in done.stderr
    done = run_tool("extend_vocab", ["model", "--load", "x", "--tokenizer", "y", "--init", "zeros", "--output", "z"])
    assert done.returncode == 2 and "--init" in done.stderr
