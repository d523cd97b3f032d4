"""Tier 2 (files on disk, megatron-core readers, a few seconds): merging,
`megatron_prealign.data.merge.merge_datasets`, and its command line tools/merge_datasets.py.

Shards are written by `preprocess`; the merge of the shards must be byte-identical to one
preprocessing run over the concatenated shards, code-switch sidecar included, and inputs that do
not belong together must be refused without leaving any output behind.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data.codeswitch import LexiconArrays
from megatron_prealign.data.integrity import DataError
from megatron_prealign.data.merge import merge_datasets
from megatron_prealign.data.preprocess import PreprocessConfig, preprocess
from megatron_prealign.data.sidecar import CodeSwitchSidecar, SidecarWriter, validate_sidecar
from tests._tools import run_tool

REPO = Path(__file__).resolve().parents[2]
MODEL = str(REPO / "tests" / "assets" / "tiny_sp.model")
SUFFIXES = (".bin", ".idx", ".json", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json")


def _preprocess(input_path, prefix, lexicon=None) -> str:
    preprocess(PreprocessConfig(input=str(input_path), output_prefix=str(prefix),
                                tokenizer_type="SentencePieceTokenizer", tokenizer_model=MODEL, append_eod=True,
                                lexicon=lexicon))
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
def shards(shard_inputs, tmp_path_factory, data_lexicon_path):
    """Per-shard outputs with sidecars (in their own directory) and the single-run reference."""
    paths, whole = shard_inputs
    root = tmp_path_factory.mktemp("merge_shards")
    (root / "shards").mkdir()
    prefixes = [_preprocess(p, root / "shards" / f"shard_{i:05d}", data_lexicon_path)
                for i, p in enumerate(paths)]
    reference = _preprocess(whole, root / "single", data_lexicon_path)
    return prefixes, reference


def test_merge_equals_single_run_with_sidecar(shards, tmp_path, data_tokenizer, data_lexicon_path):
    from megatron_prealign.lexicon.lexicon import load_lexicon

    prefixes, reference = shards
    assert len(IndexedDataset(prefixes[2], mmap=False)) == 0  # the empty shard takes part
    out = str(tmp_path / "merged_text_document")
    merge_datasets(prefixes, out)
    expected = _bytes(reference)
    assert set(expected) == set(SUFFIXES)
    assert _bytes(out) == expected

    # A directory stands for its datasets by name; the sidecars in it are not inputs.
    out_dir = str(tmp_path / "from_dir_text_document")
    merge_datasets([os.path.dirname(prefixes[0])], out_dir)
    assert _bytes(out_dir) == expected

    lexicon = load_lexicon(data_lexicon_path, data_tokenizer)
    meta = validate_sidecar(out, lexicon=LexiconArrays.from_lexicon(lexicon), lexicon_sha256=lexicon.sha256)
    assert meta.num_documents == 150 and meta.num_spans > 0
    assert sorted(os.listdir(tmp_path)) == sorted(Path(p + s).name for p in (out, out_dir) for s in SUFFIXES)


def test_merge_without_sidecars(shard_inputs, tmp_path):
    paths, whole = shard_inputs
    prefixes = [_preprocess(p, tmp_path / f"s{i}") for i, p in enumerate(paths)]
    reference = _preprocess(whole, tmp_path / "single")
    out = str(tmp_path / "merged")
    summary = merge_datasets(prefixes, out)
    assert (summary.inputs, summary.documents, summary.spans) == (4, 150, None)
    assert _bytes(out) == _bytes(reference) and set(_bytes(out)) == {".bin", ".idx", ".json"}


def _copy_dataset(prefix: str, dest: str, suffixes=SUFFIXES) -> str:
    for s in suffixes:
        shutil.copyfile(prefix + s, dest + s)
    return dest


def _edit_meta(prefix: str, **changes) -> None:
    path = Path(prefix + "_codeswitch.json")
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _other_lexicon_shard(shard_inputs, root, data_tokenizer) -> str:
    from megatron_prealign.lexicon.dictionary import read_dictionary
    from megatron_prealign.lexicon.lexicon import compile_lexicon
    from tests.conftest import DATA_DICTIONARY

    dictionary = root / "small.muse"
    dictionary.write_text("\n".join(DATA_DICTIONARY.splitlines()[:5]) + "\n", encoding="utf-8")
    lexicon = root / "small.lex"
    compile_lexicon(read_dictionary(dictionary), data_tokenizer).save(lexicon)
    return _preprocess(shard_inputs[0][1], root / "other_lexicon", str(lexicon))


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
        ("other_sidecar_tokenizer", "written with another tokenizer"),
        ("sidecar_missing", "1 do not"),
        ("sidecar_json_missing", "incomplete code-switch sidecar"),
        ("foreign_sidecar", "b_codeswitch.bin changed after"),
        ("foreign_sidecar_no_manifest", "has 70 documents"),
        ("dtype", "holds int32 tokens but"),
        ("duplicate", "is given twice"),
        ("output_is_input", "is also an input"),
        ("missing_bin", "missing"),
    ],
)
def test_refuses_inputs_that_do_not_belong_together(shards, shard_inputs, tmp_path, data_tokenizer, case,
                                                    message):
    prefixes, _ = shards
    a = _copy_dataset(prefixes[0], str(tmp_path / "a"))
    b = _copy_dataset(prefixes[1], str(tmp_path / "b"))
    inputs = [a, b]
    out = str(tmp_path / "out" / "merged")
    if case == "other_lexicon":
        inputs[1] = _other_lexicon_shard(shard_inputs, tmp_path, data_tokenizer)
    elif case == "other_tokenizer":  # the token manifests record different tokenizers
        manifest = json.loads(Path(b + ".json").read_text())
        manifest["tokenizer_fingerprint"] = "0" * 64
        Path(b + ".json").write_text(json.dumps(manifest))
    elif case == "other_sidecar_tokenizer":  # without manifests, the sidecars' metadata tells
        for p in (a, b):
            os.remove(p + ".json")
        _edit_meta(b, tokenizer_fingerprint="0" * 64)
    elif case == "sidecar_missing":
        for s in SUFFIXES[3:]:
            os.remove(b + s)
    elif case == "sidecar_json_missing":
        os.remove(b + "_codeswitch.json")
    elif case in ("foreign_sidecar", "foreign_sidecar_no_manifest"):  # b's sidecar files are a's (70 documents, b has 31)
        _copy_dataset(prefixes[0] + "_codeswitch", b + "_codeswitch", (".bin", ".idx", ".json"))
        if case == "foreign_sidecar_no_manifest":
            os.remove(b + ".json")
    elif case == "dtype":
        for p in (a, b):
            for s in SUFFIXES[3:]:
                os.remove(p + s)
        inputs.append(_int32_shard(tmp_path))
    elif case == "duplicate":
        inputs.append(a)
    elif case == "output_is_input":
        out = b
    elif case == "missing_bin":
        os.remove(b + ".bin")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(DataError) as error:  # MergeError and SidecarError are DataErrors
        merge_datasets(inputs, out)
    assert message in str(error.value)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written (no output directory either)


def test_failure_while_writing_leaves_previous_outputs_untouched(shards, tmp_path, monkeypatch):
    prefixes, _ = shards
    out = str(tmp_path / "merged")
    merge_datasets(prefixes[:1], out)
    previous = _bytes(out)
    assert len(previous) == 6

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SidecarWriter, "add_index", fail)
    with pytest.raises(OSError, match="disk full"):
        merge_datasets(prefixes, out)
    assert _bytes(out) == previous
    assert sorted(os.listdir(tmp_path)) == sorted(Path(out + s).name for s in SUFFIXES)  # no temporaries


def test_merged_dataset_reads_like_the_shards(shards, tmp_path):
    prefixes, _ = shards
    out = str(tmp_path / "merged")
    merge_datasets(prefixes, out)
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


def test_runs_as_a_script(shards, tmp_path):
    """tools/merge_datasets.py: a directory of shards merges into the single-run bytes; inputs
    that do not belong together exit with 2 and one error line naming the problem."""
    prefixes, reference = shards
    out = str(tmp_path / "merged_text_document")
    proc = run_tool("merge_datasets", ["--input", os.path.dirname(prefixes[0]), "--output-prefix", out], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "merged 4 datasets: 150 documents" in proc.stderr
    assert _bytes(out) == _bytes(reference)
    proc = run_tool("merge_datasets", ["--input", prefixes[0], prefixes[0], "--output-prefix", str(tmp_path / "twice")],
                    cwd=tmp_path)
    assert proc.returncode == 2 and "is given twice" in proc.stderr
    assert not list(tmp_path.glob("twice*"))


@pytest.mark.parametrize("with_manifest", [True, False])
def test_truncated_shard_is_refused(shards, tmp_path, with_manifest):
    prefixes, _ = shards
    b = _copy_dataset(prefixes[1], str(tmp_path / "b"))
    if not with_manifest:  # as Megatron-LM's tools write datasets
        os.remove(b + ".json")
    with open(b + ".bin", "r+b") as f:  # an interrupted copy
        f.truncate(os.path.getsize(b + ".bin") - 10)
    out = str(tmp_path / "merged")
    with pytest.raises(DataError) as err:
        merge_datasets([prefixes[0], b], out)
    message = str(err.value)
    assert "\n" not in message and f"{b}.bin" in message
    assert ("changed after" if with_manifest else "the file is truncated") in message
    assert not list(tmp_path.glob("merged*"))
    proc = run_tool("merge_datasets", ["--input", prefixes[0], b, "--output-prefix", out], cwd=tmp_path)
    assert proc.returncode == 2 and f"{b}.bin" in proc.stderr and "Traceback" not in proc.stderr


def test_shard_content_changed_in_place_is_caught_while_copying(shards, tmp_path, monkeypatch):
    from megatron_prealign.data import integrity

    prefixes, _ = shards
    b = _copy_dataset(prefixes[1], str(tmp_path / "b"))
    data = bytearray(Path(b + ".bin").read_bytes())
    data[10] ^= 0xFF  # same size, other bytes
    Path(b + ".bin").write_bytes(bytes(data))
    # A multi-GB shard is not hashed at open (merge has no cache dir), only while it is copied.
    monkeypatch.setattr(integrity, "FULL_DIGEST_BYTES", 0)
    out = str(tmp_path / "merged")
    with pytest.raises(DataError, match=f"{b}.bin changed after it was written"):
        merge_datasets([prefixes[0], b], out)
    assert not list(tmp_path.glob("merged*")) and not list(tmp_path.glob(".merged*"))


def test_datasets_without_manifest_merge_only_with_each_other(shards, tmp_path):
    prefixes, _ = shards
    a, b = (_copy_dataset(p, str(tmp_path / n)) for p, n in zip(prefixes[:2], "ab"))
    os.remove(b + ".json")
    with pytest.raises(DataError, match=f"{a}.json records its tokenizer .* but {b} records none"):
        merge_datasets([a, b], str(tmp_path / "merged"))
    os.remove(a + ".json")
    summary = merge_datasets([a, b], str(tmp_path / "merged"))
    manifest = json.loads(Path(tmp_path / "merged.json").read_text())
    assert summary.documents == 101 and manifest["tokenizer_fingerprint"] is None and manifest["complete"]


def test_output_that_cannot_be_written_is_one_line(shards, tmp_path, monkeypatch):
    import builtins

    prefixes, _ = shards
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=f"--output-prefix {tmp_path}/a_file/m: {tmp_path}/a_file is a file"):
        merge_datasets(prefixes[:2], str(tmp_path / "a_file" / "m"))
    full = tmp_path / "full"
    full.mkdir()
    real_open = builtins.open

    def no_space(file, mode="r", *args, **kwargs):  # a full disk, whoever runs the test
        if "w" in mode and str(file).startswith(str(full) + os.sep):
            raise OSError(28, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_space)
    with pytest.raises(DataError) as err:
        merge_datasets(prefixes[:2], str(full / "m"))
    assert f"--output-prefix {full / 'm'}: cannot write in {full} (No space left on device)" in str(err.value)
    assert os.listdir(full) == []
