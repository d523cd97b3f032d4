"""Tier 1-2 (files on disk, megatron-core readers, well under a second each): what every reader
of a token dataset finds at open (`megatron_prealign.data.integrity`), each case written as its
fault is injected into otherwise good files: a truncated .bin (tokens or sidecar), an empty
dataset, a directory where a file belongs, token ids outside the model's vocabulary, tokens of
another tokenizer, a sidecar of other tokens with the same document lengths, and the
verification policy for large files. Every refusal is one line naming the file and the fix.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data import integrity
from megatron_prealign.data.integrity import DataError, open_token_dataset
from megatron_prealign.data.sidecar import CodeSwitchSidecar, SidecarError, SidecarWriter, sidecar_prefix
from megatron_prealign.training.config import DataConfig
from megatron_prealign.training.data import build_datasets

REPO = Path(__file__).resolve().parents[2]


def plain(prefix, docs, dtype=np.uint16) -> str:
    """A token dataset without manifest, as Megatron-LM's own tools write it."""
    prefix = str(prefix)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for doc in docs:
        builder.add_document(np.asarray(doc, dtype=np.int64), [len(doc)])
    builder.finalize(prefix + ".idx")
    return prefix


def train_split(prefix, tokenizer, tmp_path, **kw):
    """The trainer's way in: build_datasets over one prefix."""
    cfg = DataConfig(data_path=(prefix,), split="100,0,0", tokenizer_model="x",
                     data_cache_path=str(tmp_path / "cache"))
    return build_datasets(cfg, tokenizer, seq_length=8, seed=1, num_samples=[4, 0, 0],
                          is_built_on_rank=lambda: True, **kw)[0]


def one_line(exc) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


DOCS = [list(range(2, 30)), list(range(5, 40)), list(range(7, 20))]


def test_truncated_token_bin_is_refused_by_every_reader(tmp_path, data_tokenizer):
    from megatron_prealign.evaluate.perplexity import read_stream

    prefix = plain(tmp_path / "t", DOCS)
    train_split(prefix, data_tokenizer, tmp_path)  # intact: opens
    with open(prefix + ".bin", "r+b") as f:  # an interrupted copy
        f.truncate(os.path.getsize(prefix + ".bin") - 6)
    for read in (lambda: train_split(prefix, data_tokenizer, tmp_path),
                 lambda: read_stream(prefix, 100),
                 lambda: open_token_dataset(prefix)):
        with pytest.raises(DataError) as err:
            read()
        message = one_line(err)
        assert f"{prefix}.bin has {2 * 73} bytes but {prefix}.idx describes {2 * 76}" in message
        assert "truncated" in message and "preprocess_data.py" in message


def test_truncated_sidecar_bin_is_refused_at_open(tmp_path, data_tokenizer, data_lexicon_path, data_corpus_lines,
                                                  data_write_corpus):
    from megatron_prealign.lexicon.lexicon import load_lexicon

    lexicon = load_lexicon(data_lexicon_path, data_tokenizer)
    prefix = data_write_corpus(tmp_path / "c_text_document", data_corpus_lines[:20], data_tokenizer, lexicon)
    CodeSwitchSidecar(prefix)
    side_bin = sidecar_prefix(prefix) + ".bin"
    with open(side_bin, "r+b") as f:
        f.truncate(os.path.getsize(side_bin) - 12)  # one span triple short
    with pytest.raises(SidecarError) as err:
        CodeSwitchSidecar(prefix)
    message = one_line(err)
    assert side_bin in message and "truncated" in message and "--lexicon" in message


def test_index_that_is_not_an_index_is_named(tmp_path):
    prefix = plain(tmp_path / "t", DOCS)
    Path(prefix + ".idx").write_bytes(b"MMIDIDX\x00\x00" + b"\x01" + b"\x00" * 7)  # cut inside the header
    with pytest.raises(DataError, match=f"{prefix}.idx: not a megatron-core index"):
        open_token_dataset(prefix)
    plain(tmp_path / "t", DOCS)
    with open(prefix + ".idx", "r+b") as f:
        f.truncate(40)
    with pytest.raises(DataError, match=f"{prefix}.idx: truncated index"):
        open_token_dataset(prefix)


def test_empty_dataset_is_refused_for_training_and_evaluation(tmp_path, data_tokenizer):
    from megatron_prealign.evaluate.perplexity import read_stream

    prefix = plain(tmp_path / "empty", [])
    for read in (lambda: train_split(prefix, data_tokenizer, tmp_path), lambda: read_stream(prefix, 100)):
        with pytest.raises(DataError) as err:
            read()
        assert f"{prefix}.{{bin,idx}} holds no documents" in one_line(err)
    assert len(open_token_dataset(prefix, allow_empty=True)) == 0  # a merge's empty shard is fine


def test_directory_where_a_file_is_expected(tmp_path, data_tokenizer):
    prefix = plain(tmp_path / "t", DOCS)
    with pytest.raises(DataError, match=f"--data-path {tmp_path}: {tmp_path}.bin not found: {tmp_path} is a "
                                        f"directory; give a dataset prefix"):
        train_split(str(tmp_path), data_tokenizer, tmp_path)
    with pytest.raises(DataError, match="give the prefix without .bin"):
        train_split(prefix + ".bin", data_tokenizer, tmp_path)
    os.makedirs(tmp_path / "d.bin")
    plain(tmp_path / "x", DOCS)
    shutil.copyfile(tmp_path / "x.idx", tmp_path / "d.idx")
    with pytest.raises(DataError, match="d.bin is a directory"):
        train_split(str(tmp_path / "d"), data_tokenizer, tmp_path)


def test_token_ids_outside_the_vocabulary_name_the_dataset(tmp_path, data_tokenizer):
    # Written by another tool for a larger vocabulary: no manifest says which tokenizer.
    prefix = plain(tmp_path / "big_vocab", [[1, 2, 3], [450, 7], [9]])
    with pytest.raises(DataError) as err:
        train_split(prefix, data_tokenizer, tmp_path)
    message = one_line(err)
    assert f"{prefix}.bin holds token id 450, outside the model's vocabulary of 400 ids" in message
    assert "records no tokenizer" in message and "preprocess_data.py" in message
    # The model's vocabulary (a checkpoint's larger embedding) is what counts.
    assert len(train_split(prefix, data_tokenizer, tmp_path, vocab_size=512)) > 0


def _preprocessed(tmp_path, tokenizer_model, lexicon=None, texts=None) -> str:
    from megatron_prealign.data.preprocess import PreprocessConfig, preprocess

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts or ["the house by the river", "the old bridge over the water",
                                         "children read books in the summer"]) + "\n", encoding="utf-8")
    summary = preprocess(PreprocessConfig(input=str(corpus), output_prefix=str(tmp_path / "pp"),
                                          tokenizer_type="SentencePieceTokenizer", tokenizer_model=tokenizer_model,
                                          append_eod=True, lexicon=lexicon))
    return summary.outputs["text"]


def test_dataset_of_another_tokenizer_is_refused_in_training(tmp_path, data_tokenizer, data_other_tokenizer_model):
    from megatron_prealign.lexicon.tokenizer import build_tokenizer
    from megatron_prealign.training.data import check_datasets

    prefix = _preprocessed(tmp_path, data_tokenizer.model_path)
    other = build_tokenizer("SentencePieceTokenizer", data_other_tokenizer_model)
    assert len(train_split(prefix, data_tokenizer, tmp_path)) > 0
    cfg = DataConfig(data_path=(prefix,), tokenizer_model=data_other_tokenizer_model)
    for read in (lambda: train_split(prefix, other, tmp_path), lambda: check_datasets(cfg, other)):
        with pytest.raises(DataError) as err:
            read()
        message = one_line(err)
        assert f"{prefix}.json: {prefix} was tokenized with tiny_sp.model (SentencePieceTokenizer, vocab 400" in message
        assert "the run uses other.model (SentencePieceTokenizer, vocab 390" in message
        assert "re-run tools/preprocess_data.py with the run's --tokenizer-type/--tokenizer-model" in message


@pytest.mark.parametrize("case", ["foreign_data", "tokenizer_model_is_a_directory"])
def test_pretrain_stops_in_one_line_before_building_the_model(tmp_path, data_tokenizer, data_other_tokenizer_model,
                                                              monkeypatch, capsys, case):
    import megatron_prealign.pretrain as pretrain

    prefix = _preprocessed(tmp_path, data_tokenizer.model_path)
    # The process groups of a real launch are not needed to get as far as the data.
    monkeypatch.setattr(pretrain, "check_runtime_support", lambda cfg: None)
    monkeypatch.setattr(pretrain, "activate_cpu_compat", lambda: None)
    monkeypatch.setattr(pretrain, "init_distributed", lambda *a, **k: None)
    monkeypatch.setattr(pretrain, "destroy_distributed", lambda: None)
    monkeypatch.setattr("megatron_prealign.run.build_model", lambda *a, **k: pytest.fail("model built"))
    tokenizer_model, message = {
        "foreign_data": (data_other_tokenizer_model, "was tokenized with tiny_sp.model"),
        "tokenizer_model_is_a_directory": (str(tmp_path), f"--tokenizer-model {tmp_path}: is a directory"),
    }[case]
    code = pretrain.main(["--data-path", prefix, "--tokenizer-model", tokenizer_model, "--train-iters", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("python -m megatron_prealign.pretrain: error: ") and message in err[0]


def _with_other_tokens(prefix: str, dest: str, lexicon) -> str:
    """A copy of `prefix` whose documents keep their lengths but not their tokens, with its own
    (correct) sidecar."""
    src = IndexedDataset(prefix)
    builder = IndexedDatasetBuilder(dest + ".bin", dtype=src.index.dtype)
    writer = SidecarWriter(sidecar_prefix(dest) + ".bin")
    for d in range(len(src)):
        tokens = np.asarray(src[d], dtype=np.int32)[::-1].copy()
        builder.add_document(tokens, [len(tokens)])
        writer.add_document(*lexicon.scan(tokens))
    builder.finalize(dest + ".idx")
    writer.finalize(sidecar_prefix(dest) + ".idx")
    writer.make_meta(src.sequence_lengths, lexicon_sha256=lexicon.sha256,
                     tokenizer_fingerprint=lexicon.tokenizer_fingerprint,
                     token_bin_size=os.path.getsize(dest + ".bin"),
                     token_bin_sha256=integrity.file_sha256(dest + ".bin")).write(sidecar_prefix(dest) + ".json")
    return dest


def test_sidecar_of_other_tokens_with_the_same_lengths_is_refused(tmp_path, data_prefixes, data_tokenizer,
                                                                   data_lexicon_path):
    from megatron_prealign.lexicon.lexicon import load_lexicon
    from tests.unit.test_dataset import build
    from megatron_prealign.data.dataset import CodeSwitchGPTDataset

    lexicon = load_lexicon(data_lexicon_path, data_tokenizer)
    prefix = str(tmp_path / "a")
    for suffix in (".bin", ".idx", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json"):
        shutil.copyfile(data_prefixes[0] + suffix, prefix + suffix)
    other = _with_other_tokens(prefix, str(tmp_path / "b"), lexicon)
    for suffix in (".bin", ".idx", ".json"):  # the other corpus's sidecar lands beside our tokens
        shutil.copyfile(sidecar_prefix(other) + suffix, sidecar_prefix(prefix) + suffix)
    with pytest.raises(SidecarError) as err:
        build(CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path / "cache", codeswitch_ratio=0.1,
              lexicon_path=data_lexicon_path)
    message = one_line(err)
    assert f"{prefix}_codeswitch.{{bin,idx,json}} was written for other token content than {prefix}.{{bin,idx}}" \
        in message
    assert "same document lengths" in message and "preprocess_data.py with --lexicon" in message


def test_old_sidecar_without_token_digest_warns_once_and_is_accepted(tmp_path, data_prefixes, caplog):
    prefix = str(tmp_path / "a")
    for suffix in (".bin", ".idx", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json"):
        shutil.copyfile(data_prefixes[0] + suffix, prefix + suffix)
    meta_path = Path(sidecar_prefix(prefix) + ".json")
    meta = json.loads(meta_path.read_text())
    del meta["token_bin_size"], meta["token_bin_sha256"]
    meta_path.write_text(json.dumps({**meta, "version": 1}))  # a version-1 sidecar
    tokens = IndexedDataset(prefix)
    with caplog.at_level(logging.WARNING, logger="megatron_prealign"):
        for _ in range(3):
            CodeSwitchSidecar(prefix).check_matches(tokens)
    warnings = [r for r in caplog.records if "records no digest" in r.getMessage()]
    assert len(warnings) == 1 and str(meta_path) in warnings[0].getMessage()


def test_large_files_are_hashed_once_per_version(tmp_path, monkeypatch):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * 64)
    size, sha = path.stat().st_size, integrity.file_sha256(str(path))
    monkeypatch.setattr(integrity, "FULL_DIGEST_BYTES", 1024)  # this file counts as large
    monkeypatch.setattr(integrity, "_FACTS", {})
    calls = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda p: calls.append(p) or real(p))
    cache = str(tmp_path / "cache")

    assert integrity.verify_content(str(path), size, sha) is None  # no cache dir: size only
    assert integrity.verify_content(str(path), size + 1, sha) is False
    assert calls == []
    assert integrity.verify_content(str(path), size, sha, cache_dir=cache) is True
    assert integrity.verify_content(str(path), size, sha, cache_dir=cache) is True
    assert len(calls) == 1  # remembered in this process
    monkeypatch.setattr(integrity, "_FACTS", {})  # another rank, a later run
    assert integrity.verify_content(str(path), size, sha, cache_dir=cache) is True
    assert len(calls) == 1  # remembered in the cache dir
    # Rewritten with other bytes of the same size (a new file version): hashed again, refused.
    tmp = tmp_path / "new.bin"
    tmp.write_bytes(bytes(reversed(range(256))) * 64)
    os.replace(tmp, path)
    assert integrity.verify_content(str(path), size, sha, cache_dir=cache) is False
    assert len(calls) == 2
    # Small files are hashed at every version and never need the cache.
    monkeypatch.setattr(integrity, "FULL_DIGEST_BYTES", 1 << 20)
    assert integrity.verify_content(str(path), size, sha) is False


def test_interrupted_commit_is_refused(tmp_path):
    prefix = plain(tmp_path / "t", DOCS)
    manifest = integrity.DatasetManifest(tokenizer_fingerprint=None, tokenizer_type=None, tokenizer_model=None,
                                         vocab_size=None, num_documents=3, num_tokens=76,
                                         files={s: integrity.staged_file_entry(prefix + s) for s in (".bin", ".idx")})
    Path(prefix + ".json").write_text(json.dumps({**json.loads(manifest.to_json()), "complete": False}))
    with pytest.raises(DataError) as err:
        open_token_dataset(prefix)
    assert f"{prefix}.json: the write of {prefix}.* was interrupted" in one_line(err)
    Path(prefix + ".json").write_text(manifest.to_json())
    assert len(open_token_dataset(prefix)) == 3
    # Files replaced after the manifest was written do not pass for it.
    plain(tmp_path / "t", DOCS[:2])
    with pytest.raises(DataError, match=f"{prefix}.idx changed after {prefix}.json was written"):
        open_token_dataset(prefix)


def test_stale_temporaries_match_only_our_pattern(tmp_path):
    from megatron_prealign.fileio import remove_stale_temporaries

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    alive = os.getppid()
    names = {
        f".out_text_document.bin.tmp-{dead}": False,  # ours, from a process that is gone
        f".out_text_document.json.tmp-{dead}": False,
        f".out_text_document.bin.tmp-{alive}": True,  # a writer that still runs
        f".out_text_document.bin.tmp-{dead}x": True,  # not our pattern
        ".out_text_document.bin.tmp-": True,
        f"out_text_document.bin.tmp-{dead}": True,
        f".other_text_document.bin.tmp-{dead}": True,  # another output prefix
        "out_text_document.bin": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries([str(tmp_path / f"out_text_document{s}") for s in (".bin", ".idx", ".json")])
    assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, keep in names.items() if keep)
