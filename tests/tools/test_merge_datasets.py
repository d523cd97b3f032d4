"""Tier 2 (files on disk, megatron-core readers, a few seconds): tools/merge_datasets.py.

Shards are written by tools/preprocess_data.py (loaded from its file, run in-process); the merge
of the shards must be byte-identical to one preprocessing run over the concatenated shards,
code-switch sidecar included, and the tool must refuse inputs that do not belong together
without leaving any output behind.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data.codeswitch import LexiconArrays
from megatron_prealign.data.sidecar import CodeSwitchSidecar, SidecarWriter, validate_sidecar

REPO = Path(__file__).resolve().parents[2]
MODEL = str(REPO / "tests" / "assets" / "tiny_sp.model")
SUFFIXES = (".bin", ".idx", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json")


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tools():
    loaded = {name: _load_tool(name) for name in ("preprocess_data", "merge_datasets")}
    yield loaded
    for name in loaded:
        del sys.modules[name]


def _preprocess(tools, input_path, prefix, lexicon=None) -> str:
    argv = ["--input", str(input_path), "--output-prefix", str(prefix), "--tokenizer-type",
            "SentencePieceTokenizer", "--tokenizer-model", MODEL, "--append-eod"]
    assert tools["preprocess_data"].main(argv + (["--lexicon", lexicon] if lexicon else [])) == 0
    return f"{prefix}_text_document"


def _bytes(prefix, suffixes=SUFFIXES):
    return {s: Path(prefix + s).read_bytes() for s in suffixes if os.path.exists(prefix + s)}


@pytest.fixture(scope="module")
def shard_inputs(tmp_path_factory, data_corpus_lines):
    """Four jsonl shards of uneven sizes (the third one empty) and their concatenation."""
    root = tmp_path_factory.mktemp("merge_inputs")
    rng = np.random.default_rng(3)
    lines = [json.dumps({"text": data_corpus_lines[i]}, ensure_ascii=False) + "\n"
             for i in rng.integers(0, len(data_corpus_lines), 150)]
    cuts = [0, 70, 101, 101, 150]
    paths = []
    for i in range(4):
        path = root / f"shard_{i}.jsonl"
        path.write_text("".join(lines[cuts[i]:cuts[i + 1]]), encoding="utf-8")
        paths.append(path)
    whole = root / "all.jsonl"
    whole.write_text("".join(lines), encoding="utf-8")
    return paths, whole


@pytest.fixture(scope="module")
def shards(tools, shard_inputs, tmp_path_factory, data_lexicon_path):
    """Per-shard outputs with sidecars (in their own directory) and the single-run reference."""
    paths, whole = shard_inputs
    root = tmp_path_factory.mktemp("merge_shards")
    (root / "shards").mkdir()
    prefixes = [_preprocess(tools, p, root / "shards" / f"shard_{i:05d}", data_lexicon_path)
                for i, p in enumerate(paths)]
    reference = _preprocess(tools, whole, root / "single", data_lexicon_path)
    return prefixes, reference


def test_merge_equals_single_run_with_sidecar(tools, shards, tmp_path, data_tokenizer, data_lexicon_path):
    from megatron_prealign.lexicon.lexicon import load_lexicon

    prefixes, reference = shards
    assert len(IndexedDataset(prefixes[2], mmap=False)) == 0  # the empty shard takes part
    out = str(tmp_path / "merged_text_document")
    assert tools["merge_datasets"].main(["--input", *prefixes, "--output-prefix", out]) == 0
    expected = _bytes(reference)
    assert set(expected) == set(SUFFIXES)
    assert _bytes(out) == expected

    # A directory stands for its datasets by name; the sidecars in it are not inputs.
    out_dir = str(tmp_path / "from_dir_text_document")
    assert tools["merge_datasets"].main(["--input", os.path.dirname(prefixes[0]), "--output-prefix", out_dir]) == 0
    assert _bytes(out_dir) == expected

    lexicon = load_lexicon(data_lexicon_path, data_tokenizer)
    meta = validate_sidecar(out, lexicon=LexiconArrays.from_lexicon(lexicon), lexicon_sha256=lexicon.sha256)
    assert meta.num_documents == 150 and meta.num_spans > 0
    assert sorted(os.listdir(tmp_path)) == sorted(Path(p + s).name for p in (out, out_dir) for s in SUFFIXES)


def test_merge_without_sidecars(tools, shard_inputs, tmp_path):
    paths, whole = shard_inputs
    prefixes = [_preprocess(tools, p, tmp_path / f"s{i}") for i, p in enumerate(paths)]
    reference = _preprocess(tools, whole, tmp_path / "single")
    out = str(tmp_path / "merged")
    summary = tools["merge_datasets"].merge(prefixes, out)
    assert (summary.inputs, summary.documents, summary.spans) == (4, 150, None)
    assert _bytes(out) == _bytes(reference) and set(_bytes(out)) == {".bin", ".idx"}


def _copy_dataset(prefix: str, dest: str, suffixes=SUFFIXES) -> str:
    for s in suffixes:
        shutil.copyfile(prefix + s, dest + s)
    return dest


def _edit_meta(prefix: str, **changes) -> None:
    path = Path(prefix + "_codeswitch.json")
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _other_lexicon_shard(tools, shard_inputs, root, data_tokenizer) -> str:
    from megatron_prealign.lexicon.dictionary import read_dictionary
    from megatron_prealign.lexicon.lexicon import compile_lexicon
    from tests.conftest import DATA_DICTIONARY

    dictionary = root / "small.muse"
    dictionary.write_text("\n".join(DATA_DICTIONARY.splitlines()[:5]) + "\n", encoding="utf-8")
    lexicon = root / "small.lex"
    compile_lexicon(read_dictionary(dictionary), data_tokenizer).save(lexicon)
    return _preprocess(tools, shard_inputs[0][1], root / "other_lexicon", str(lexicon))


def _int32_shard(root) -> str:
    prefix = str(root / "int32")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    builder.add_document(np.arange(5, dtype=np.int32), [5])
    builder.finalize(prefix + ".idx")
    return prefix


@pytest.mark.parametrize(
    "case, message",
    [
        ("other_lexicon", "written with another lexicon"),
        ("other_tokenizer", "written with another tokenizer"),
        ("sidecar_missing", "1 do not"),
        ("sidecar_json_missing", "incomplete code-switch sidecar"),
        ("foreign_sidecar", "has 70 documents"),
        ("dtype", "holds int32 tokens but"),
        ("duplicate", "is given twice"),
        ("output_is_input", "is also an input"),
        ("missing_bin", "missing"),
    ],
)
def test_refuses_inputs_that_do_not_belong_together(tools, shards, shard_inputs, tmp_path, data_tokenizer, case,
                                                    message, caplog):
    prefixes, _ = shards
    a = _copy_dataset(prefixes[0], str(tmp_path / "a"))
    b = _copy_dataset(prefixes[1], str(tmp_path / "b"))
    inputs = [a, b]
    out = str(tmp_path / "out" / "merged")
    if case == "other_lexicon":
        inputs[1] = _other_lexicon_shard(tools, shard_inputs, tmp_path, data_tokenizer)
    elif case == "other_tokenizer":
        _edit_meta(b, tokenizer_fingerprint="0" * 64)
    elif case == "sidecar_missing":
        for s in SUFFIXES[2:]:
            os.remove(b + s)
    elif case == "sidecar_json_missing":
        os.remove(b + "_codeswitch.json")
    elif case == "foreign_sidecar":  # b's sidecar files are a's (70 documents, b has 31)
        _copy_dataset(prefixes[0] + "_codeswitch", b + "_codeswitch", (".bin", ".idx", ".json"))
    elif case == "dtype":
        for p in (a, b):
            for s in SUFFIXES[2:]:
                os.remove(p + s)
        inputs.append(_int32_shard(tmp_path))
    elif case == "duplicate":
        inputs.append(a)
    elif case == "output_is_input":
        out = b
    elif case == "missing_bin":
        os.remove(b + ".bin")
    before = sorted(os.listdir(tmp_path))
    with caplog.at_level("ERROR"):
        assert tools["merge_datasets"].main(["--input", *inputs, "--output-prefix", out]) == 2
    assert message in caplog.text
    assert sorted(os.listdir(tmp_path)) == before  # nothing written (no output directory either)


def test_failure_while_writing_leaves_previous_outputs_untouched(tools, shards, tmp_path, monkeypatch):
    prefixes, _ = shards
    out = str(tmp_path / "merged")
    tools["merge_datasets"].merge(prefixes[:1], out)
    previous = _bytes(out)
    assert len(previous) == 5

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SidecarWriter, "add_index", fail)
    with pytest.raises(OSError, match="disk full"):
        tools["merge_datasets"].merge(prefixes, out)
    assert _bytes(out) == previous
    assert sorted(os.listdir(tmp_path)) == sorted(Path(out + s).name for s in SUFFIXES)  # no temporaries


def test_merged_dataset_reads_like_the_shards(tools, shards, tmp_path):
    prefixes, _ = shards
    out = str(tmp_path / "merged")
    tools["merge_datasets"].merge(prefixes, out)
    merged, side = IndexedDataset(out), CodeSwitchSidecar(out)
    assert merged.index.dtype == DType.optimal_dtype(400)
    doc = 0
    for prefix in prefixes:
        part = IndexedDataset(prefix, mmap=False)
        part_side = CodeSwitchSidecar(prefix, mmap=False)
        for i in range(len(part)):
            assert merged[doc].tolist() == part[i].tolist()
            assert [c.tolist() for c in side.spans(doc)] == [c.tolist() for c in part_side.spans(i)]
            doc += 1
    assert doc == len(merged) == 150
