"""Tier 2: our preprocessing writes the tokens Megatron-LM's own tools/preprocess_data.py writes.

Always: against the procedure of Megatron-LM core_v0.16.1's tool written out here (per JSON line
``json.loads``, the SentencePiece model's ``encode_as_ids``, plus EOD, one
``IndexedDatasetBuilder.add_document`` per document), with megatron-core's own builder. With
MEGATRON_LM set to a Megatron-LM checkout or bare git directory holding tag core_v0.16.1: against
that tool itself, run as a command (bench/bench_preprocess.py checks the large corpus).
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

from megatron_prealign.data.preprocess import PreprocessConfig, preprocess

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "tests" / "assets" / "tiny_sp.model"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data_corpus_lines):
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("parity")
    docs = ["\n\n".join(data_corpus_lines[j] for j in rng.integers(0, len(data_corpus_lines), rng.integers(1, 6)))
            for _ in range(300)]
    docs += ["Ünïcödé — “quotes” 银行 ёж", "tabs\tand  spaces ", "x" * 3000]
    path = root / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=i % 2 == 0) + "\n" for i, d in enumerate(docs)),
                    encoding="utf-8")
    return path


def megatron_procedure(corpus: Path, prefix: Path) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(MODEL))
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(sp.get_piece_size()))
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            ids = sp.encode_as_ids(json.loads(line)["text"])
            if ids:
                ids.append(sp.eos_id())
                builder.add_document(np.array(ids), [len(ids)])
    builder.finalize(f"{prefix}.idx")


def ours(corpus, prefix: Path, **kw) -> Path:
    preprocess(PreprocessConfig(input=str(corpus), output_prefix=str(prefix), tokenizer_type="GPTSentencePieceTokenizer",
                                tokenizer_model=str(MODEL), append_eod=True, **kw))
    return Path(f"{prefix}_text_document")


def same_files(a: Path, b: Path) -> bool:
    return all(Path(f"{a}{s}").read_bytes() == Path(f"{b}{s}").read_bytes() for s in (".bin", ".idx"))


def test_same_tokens_as_megatron_lms_procedure(corpus, tmp_path):
    megatron_procedure(corpus, tmp_path / "megatron")
    assert same_files(ours(corpus, tmp_path / "ours", workers=2), tmp_path / "megatron")
    # Sharded and compressed, the same corpus gives the same files.
    lines = corpus.read_bytes().splitlines(keepends=True)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "part-0.jsonl").write_bytes(b"".join(lines[:100]))
    (tmp_path / "shards" / "part-1.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[100:200])))
    (tmp_path / "shards" / "part-2.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[200:])))
    sharded = ours(str(tmp_path / "shards" / "part-*"), tmp_path / "sharded", workers=2, partitions=2)
    assert same_files(sharded, tmp_path / "megatron")


@pytest.mark.skipif(not os.environ.get("MEGATRON_LM"), reason="MEGATRON_LM (a Megatron-LM checkout) is not set")
def test_same_tokens_as_megatron_lms_tool(corpus, tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from bench_preprocess import extract_megatron
    finally:
        sys.path.remove(str(REPO / "bench"))
    tree = extract_megatron(Path(os.environ["MEGATRON_LM"]), tmp_path / "megatron-lm")
    proc = subprocess.run(
        [sys.executable, "tools/preprocess_data.py", "--input", str(corpus), "--output-prefix", str(tmp_path / "mlm"),
         "--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model", str(MODEL), "--append-eod",
         "--workers", "2"], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert same_files(ours(corpus, tmp_path / "ours", workers=2), tmp_path / "mlm_text_document")
