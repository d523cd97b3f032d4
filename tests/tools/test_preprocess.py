"""Tier 2 (files on disk, megatron-core readers, a few seconds): preprocessing,
`megatron_prealign.data.preprocess.preprocess`, called as a function; one test runs its command
line, tools/preprocess_data.py, as a script in a subprocess with several workers.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

import megatron_prealign.data.preprocess as preprocess_module
from megatron_prealign.data.codeswitch import LexiconArrays
from megatron_prealign.data.preprocess import PreprocessConfig, check_inputs, preprocess
from megatron_prealign.data.sidecar import CodeSwitchSidecar, sidecar_prefix, validate_sidecar
from tests._tools import run_tool

REPO = Path(__file__).resolve().parents[2]
MODEL = str(REPO / "tests" / "assets" / "tiny_sp.model")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data_corpus_lines):
    """A jsonl corpus with good documents and, at known places, every kind of bad line."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("preprocess_corpus")
    good, lines = [], []
    for i in range(400):
        if i % 50 == 7:
            lines.append(b"\xff\xfe not utf-8\n")
        elif i % 50 == 13:
            lines.append(b'{"text": "unterminated\n')
        elif i % 50 == 21:
            lines.append(b"[1, 2, 3]\n")  # JSON, but not an object
        elif i % 50 == 29:
            lines.append(json.dumps({"text": "   "}).encode() + b"\n")  # empty document
        elif i % 50 == 33:
            lines.append(json.dumps({"title": "no text key"}).encode() + b"\n")
        elif i % 50 == 41:
            lines.append(b"\n")  # blank line: empty document
        else:
            text = " ".join(data_corpus_lines[j] for j in rng.integers(0, len(data_corpus_lines), rng.integers(1, 5)))
            good.append(text)
            lines.append(json.dumps({"text": text, "id": i}, ensure_ascii=False).encode() + b"\n")
    path = root / "corpus.jsonl"
    path.write_bytes(b"".join(lines))
    return str(path), good


def argv(corpus_path, prefix, *extra):
    return [
        "--input", corpus_path, "--output-prefix", str(prefix), "--tokenizer-type", "SentencePieceTokenizer",
        "--tokenizer-model", MODEL, "--append-eod", *extra,
    ]


def config(corpus_path, prefix, **overrides) -> PreprocessConfig:
    """The config of `argv(corpus_path, prefix)` with `overrides`."""
    values = dict(input=str(corpus_path), output_prefix=str(prefix), tokenizer_type="SentencePieceTokenizer",
                  tokenizer_model=MODEL, append_eod=True)
    return PreprocessConfig(**{**values, **overrides})


def files_of(prefix):
    base = f"{prefix}_text_document"
    return [base + s for s in (".bin", ".idx", ".json", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json")]


def test_stock_reader_opens_output_and_sidecar_is_aligned(corpus, tmp_path, data_tokenizer, data_lexicon_path):
    from megatron_prealign.lexicon.lexicon import load_lexicon

    path, good = corpus
    preprocess(config(path, tmp_path / "out", lexicon=data_lexicon_path))
    prefix = f"{tmp_path / 'out'}_text_document"
    tokens = IndexedDataset(prefix)  # a stock megatron-core reader
    assert tokens.index.dtype == np.uint16  # vocab 400: megatron's optimal dtype
    assert len(tokens) == len(good)
    lexicon = load_lexicon(data_lexicon_path, data_tokenizer)
    side = CodeSwitchSidecar(prefix)
    for doc, text in enumerate(good):
        expected = data_tokenizer.encode(text) + [data_tokenizer.eod]
        assert tokens[doc].tolist() == expected
        want = lexicon.scan(np.asarray(expected, dtype=np.int32))
        got = side.spans(doc)
        for g, w in zip(got, want):
            assert g.tolist() == w.tolist()
    meta = validate_sidecar(prefix, lexicon=LexiconArrays.from_lexicon(lexicon), lexicon_sha256=lexicon.sha256)
    assert meta.num_documents == len(good) and meta.num_spans > 100
    assert 0.02 < meta.num_span_tokens / meta.num_tokens < 0.5


def test_output_is_independent_of_workers_and_partitions(corpus, tmp_path, data_lexicon_path):
    path, _ = corpus
    runs = {
        "w1": {},
        "w2": {"workers": 2},
        "w2p3": {"workers": 2, "partitions": 3},
        "w1p5": {"partitions": 5},
    }
    contents = {}
    for name, extra in runs.items():
        preprocess(config(path, tmp_path / name, lexicon=data_lexicon_path, **extra))
        contents[name] = [Path(f).read_bytes() for f in files_of(tmp_path / name)]
    for name in runs:
        assert contents[name] == contents["w1"], name
    # Partition scratch space is gone, and no temporary names are left behind.
    assert sorted(os.listdir(tmp_path)) == sorted(Path(f).name for name in runs for f in files_of(tmp_path / name))


def test_bad_lines_are_counted_and_reported(corpus, tmp_path):
    path, good = corpus
    summary = preprocess(config(path, tmp_path / "out"))
    c = summary.counts
    assert c["lines"] == 400
    assert (c["invalid_utf8"], c["invalid_json"]) == (8, 16)
    assert (c["text:empty"], c["text:missing_key"]) == (16, 8)
    assert summary.documents["text"] == len(good) == 400 - 48
    written = IndexedDataset(summary.outputs["text"])  # keep alive: arrays are views of its mmap
    assert summary.tokens["text"] == int(written.sequence_lengths.sum())
    assert not os.path.exists(sidecar_prefix(summary.outputs["text"]) + ".bin")  # no --lexicon


def test_plain_text_input_and_several_keys(tmp_path, data_tokenizer):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("the house by the river\n\nthe water\n", encoding="utf-8")
    preprocess(config(text_file, tmp_path / "t", append_eod=False))
    docs = IndexedDataset(str(tmp_path / "t_text_document"))
    assert [docs[i].tolist() for i in range(len(docs))] == [data_tokenizer.encode("the house by the river"), data_tokenizer.encode("the water")]

    jsonl = tmp_path / "two_keys.jsonl"
    jsonl.write_text(json.dumps({"src": "the house", "tgt": "das Haus"}) + "\n" + json.dumps({"src": "water"}) + "\n")
    summary = preprocess(config(jsonl, tmp_path / "k", json_keys=("src", "tgt"), append_eod=False))
    assert summary.documents == {"src": 2, "tgt": 1} and summary.counts["tgt:missing_key"] == 1
    tgt = IndexedDataset(str(tmp_path / "k_tgt_document"))
    assert len(tgt) == 1 and tgt[0].tolist() == data_tokenizer.encode("das Haus")


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_run_leaves_no_final_named_file(corpus, tmp_path, monkeypatch, data_lexicon_path, workers):
    path, _ = corpus
    calls = {"n": 0}
    real = preprocess_module._Encoder.encode_batch

    def fail_on_second_batch(self, data):
        # Each worker process counts its own calls: every worker fails on its second batch.
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated failure in the middle of the corpus")
        return real(self, data)

    monkeypatch.setattr(preprocess_module, "_BATCH_BYTES", 2000)
    monkeypatch.setattr(preprocess_module._Encoder, "encode_batch", fail_on_second_batch)
    with pytest.raises(RuntimeError, match="simulated failure"):
        preprocess(config(path, tmp_path / "out", lexicon=data_lexicon_path, workers=workers, partitions=2))
    assert os.listdir(tmp_path) == []  # neither final names nor temporaries nor partition scratch


def test_broken_lexicon_fails_before_writing(corpus, tmp_path):
    path, _ = corpus
    bad = tmp_path / "bad.lex"
    bad.write_bytes(b"not a lexicon at all")
    from megatron_prealign.lexicon.dictionary import LexiconError

    with pytest.raises(LexiconError, match="not a lexicon file"):
        preprocess(config(path, tmp_path / "out", lexicon=str(bad)))
    assert os.listdir(tmp_path) == ["bad.lex"]


def test_arguments_are_checked(corpus, tmp_path):
    path, _ = corpus
    for extra, flag in (({"workers": 0}, "--workers"), ({"partitions": 0}, "--partitions"),
                        ({"json_keys": ("text", "text")}, "--json-keys")):
        with pytest.raises(ValueError, match=flag):
            config(path, tmp_path / "out", **extra)
    for extra, message in (({"lexicon": str(tmp_path / "missing.lex")}, "--lexicon .*missing.lex: no such file"),
                           ({"input": str(tmp_path / "missing.jsonl")}, "--input .*: no such file"),
                           ({"input_format": "text", "json_keys": ("a", "b")}, "a single --json-keys")):
        with pytest.raises(ValueError, match=message):
            check_inputs(dataclasses.replace(config(path, tmp_path / "out"), **extra))
    gz = tmp_path / "corpus.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(ValueError, match="corpus.jsonl.gz: corrupt or truncated gzip file"):
        preprocess(config(gz, tmp_path / "out"))
    with pytest.raises(ValueError, match="--input .*shard-\\*.jsonl: no file matches the pattern"):
        check_inputs(config(tmp_path / "shard-*.jsonl", tmp_path / "out"))
    assert check_inputs(config(path, tmp_path / "out")).input_format == "jsonl"


def test_runs_as_a_script_with_workers(corpus, tmp_path, data_lexicon_path):
    path, good = corpus
    proc = run_tool("preprocess_data", argv(path, tmp_path / "script", "--lexicon", data_lexicon_path,
                                            "--workers", "2"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lexicon coverage" in proc.stderr and "8 invalid UTF-8" in proc.stderr
    written = IndexedDataset(f"{tmp_path / 'script'}_text_document")
    assert len(written) == len(good)
    # Bad flags: argparse's usage line and the config's one-line message, exit code 2.
    proc = run_tool("preprocess_data", argv(path, tmp_path / "bad", "--partitions", "0"), cwd=tmp_path)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    assert "error: --partitions must be >= 1, got 0" in proc.stderr


def test_more_partitions_than_lines(tmp_path, data_lexicon_path):
    """Empty partitions are skipped, not merged (megatron-core cannot open an empty .bin)."""
    single = tmp_path / "one.jsonl"
    single.write_text(json.dumps({"text": "The house by the river."}) + "\n")
    preprocess(config(single, tmp_path / "p1", lexicon=data_lexicon_path))
    preprocess(config(single, tmp_path / "p3", lexicon=data_lexicon_path, partitions=3))
    for a, b in zip(files_of(tmp_path / "p1"), files_of(tmp_path / "p3")):
        assert Path(a).read_bytes() == Path(b).read_bytes()


# ----------------------------------------------------------------------------------------------
# Committing the outputs, and the errors of bad inputs and outputs: each fault injected as it
# happens to a user (a killed run, a read-only directory, a directory given for a file).


def _small_corpus(path, lines) -> str:
    Path(path).write_text("".join(json.dumps({"text": t}) + "\n" for t in lines), encoding="utf-8")
    return str(path)


def test_manifest_records_tokenizer_and_every_file(corpus, tmp_path, data_tokenizer, data_lexicon_path):
    from megatron_prealign.data.integrity import file_sha256, read_manifest

    path, good = corpus
    preprocess(config(path, tmp_path / "out", lexicon=data_lexicon_path))
    prefix = f"{tmp_path / 'out'}_text_document"
    manifest = read_manifest(prefix)
    assert (manifest.tokenizer_fingerprint, manifest.tokenizer_type, manifest.tokenizer_model, manifest.vocab_size) \
        == (data_tokenizer.fingerprint, "SentencePieceTokenizer", "tiny_sp.model", 400)
    assert manifest.complete and manifest.num_documents == len(good)
    assert set(manifest.files) == {".bin", ".idx", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json"}
    for suffix, entry in manifest.files.items():
        assert entry == {"size": os.path.getsize(prefix + suffix), "sha256": file_sha256(prefix + suffix)}
    side = json.loads(Path(prefix + "_codeswitch.json").read_text())
    assert (side["token_bin_size"], side["token_bin_sha256"]) == (manifest.files[".bin"]["size"],
                                                                  manifest.files[".bin"]["sha256"])


COMMIT_RENAMES = 7  # manifest (incomplete), 5 files, manifest (complete)


@pytest.mark.parametrize("renames_before_failure", range(COMMIT_RENAMES))
def test_interrupted_commit_never_passes_for_a_dataset(tmp_path, monkeypatch, data_lexicon_path, data_corpus_lines,
                                                       renames_before_failure):
    from megatron_prealign.data.integrity import DataError, open_token_dataset

    old = _small_corpus(tmp_path / "old.jsonl", data_corpus_lines[:12])
    new = _small_corpus(tmp_path / "new.jsonl", data_corpus_lines[12:30])
    preprocess(config(old, tmp_path / "out", lexicon=data_lexicon_path))
    prefix = f"{tmp_path / 'out'}_text_document"
    before = {f: Path(f).read_bytes() for f in files_of(tmp_path / "out")}

    real_replace, calls = os.replace, []

    def replace_then_fail(src, dst):
        if len(calls) == renames_before_failure:
            raise OSError("simulated crash between two renames")
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="simulated crash"):
        preprocess(config(new, tmp_path / "out", lexicon=data_lexicon_path))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # the failed run removed its temporaries
    if renames_before_failure == 0:
        assert {f: Path(f).read_bytes() for f in files_of(tmp_path / "out")} == before  # old outputs intact
        assert len(open_token_dataset(prefix)) == 12
        CodeSwitchSidecar(prefix)
        return
    for read in (lambda: open_token_dataset(prefix), lambda: CodeSwitchSidecar(prefix)):
        with pytest.raises(DataError) as err:
            read()
        assert "\n" not in str(err.value) and "was interrupted" in str(err.value)
        assert "re-run the tools/preprocess_data.py or tools/merge_datasets.py command" in str(err.value)
    preprocess(config(new, tmp_path / "out", lexicon=data_lexicon_path))  # a later run repairs the prefix
    assert len(open_token_dataset(prefix)) == 18


_KILLED_RUN = """
import os, sys
from megatron_prealign.data.preprocess import PreprocessConfig, preprocess
corpus, prefix, model, lexicon, renames = sys.argv[1:6]
real, done = os.replace, []
def replace(src, dst):
    if len(done) == int(renames):
        os._exit(137)  # killed: no cleanup of any kind runs
    done.append(dst)
    real(src, dst)
os.replace = replace
preprocess(PreprocessConfig(input=corpus, output_prefix=prefix, tokenizer_type="SentencePieceTokenizer",
                            tokenizer_model=model, append_eod=True, lexicon=lexicon, partitions=2))
"""


def test_killed_run_is_refused_and_its_temporaries_go_with_the_next_run(tmp_path, data_lexicon_path,
                                                                        data_corpus_lines):
    import subprocess
    import sys

    from megatron_prealign.data.integrity import DataError, open_token_dataset

    corpus = _small_corpus(tmp_path / "c.jsonl", data_corpus_lines[:30])
    out = tmp_path / "out"
    out.mkdir()
    prefix = f"{out / 'run'}_text_document"
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, corpus, str(out / "run"), MODEL, data_lexicon_path,
                             "3"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    left = sorted(n for n in os.listdir(out) if ".tmp-" in n)
    # The killed run's staged sidecar files and its partition scratch directory.
    assert ".run.partitions.tmp-" in left[0] and all(n.startswith(".run_text_document_codeswitch.") for n in left[1:])
    with pytest.raises(DataError, match="was interrupted"):
        open_token_dataset(prefix)
    # Files that only look alike are not ours to remove.
    decoys = [".other_text_document.bin.tmp-4242424", ".run_text_document.bin.tmp-x",
              "run_text_document.bin.tmp-1", "notes.txt"]
    for name in decoys:
        (out / name).write_text("keep me")
    preprocess(config(corpus, out / "run", lexicon=data_lexicon_path))
    assert sorted(os.listdir(out)) == sorted([*decoys, *(Path(f).name for f in files_of(out / "run"))])
    assert len(open_token_dataset(prefix)) == 30
    CodeSwitchSidecar(prefix)


def test_read_only_output_directory_is_one_line(tmp_path, monkeypatch, data_corpus_lines):
    import builtins

    from megatron_prealign.data.integrity import DataError

    corpus = _small_corpus(tmp_path / "c.jsonl", data_corpus_lines[:5])
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: refuse writes there the way the kernel would
        real_open = builtins.open

        def guarded_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and str(file).startswith(str(ro) + os.sep):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
    try:
        with pytest.raises(DataError) as err:
            preprocess(config(corpus, ro / "out"))
    finally:
        ro.chmod(0o755)
    message = str(err.value)
    assert "\n" not in message and f"--output-prefix {ro / 'out'}: cannot write in {ro} " in message
    assert "Permission denied" in message and "choose a writable directory" in message
    assert os.listdir(ro) == []


def test_empty_corpus_warns_and_readers_refuse_it(tmp_path, caplog):
    import logging

    from megatron_prealign.data.integrity import DataError, open_token_dataset

    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "   "}\n')
    with caplog.at_level(logging.WARNING, logger="megatron_prealign"):
        summary = preprocess(config(empty, tmp_path / "e"))
    assert summary.documents == {"text": 0}
    assert any("gave no documents" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="holds no documents: preprocess a corpus with documents"):
        open_token_dataset(summary.outputs["text"])


def test_directories_given_for_files_name_the_flag(corpus, tmp_path, data_lexicon_path):
    path, _ = corpus
    for extra, message in (({"input": str(tmp_path)}, f"--input {tmp_path} is a directory, not a file"),
                           ({"lexicon": str(tmp_path)}, f"--lexicon {tmp_path} is a directory, not a file"),
                           ({"tokenizer_model": str(tmp_path)},
                            f"--tokenizer-model {tmp_path} is a directory: SentencePieceTokenizer needs the .model")):
        with pytest.raises(ValueError, match=message):
            check_inputs(dataclasses.replace(config(path, tmp_path / "out"), **extra))


def test_script_reports_output_and_tokenizer_problems_in_one_line(corpus, tmp_path):
    path, _ = corpus
    (tmp_path / "a_file").write_text("")
    for args, message in (
        (argv(path, tmp_path / "a_file" / "out"), f"error: --output-prefix {tmp_path / 'a_file' / 'out'}: "
                                                  f"{tmp_path / 'a_file'} is a file, not a directory"),
        ([*argv(path, tmp_path / "x")[:-2], str(tmp_path)], "is a directory: SentencePieceTokenizer"),
    ):
        proc = run_tool("preprocess_data", args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_compressed_inputs_and_missing_zstandard(corpus, tmp_path, monkeypatch):
    import bz2
    import lzma

    path, _ = corpus
    raw = Path(path).read_bytes()
    preprocess(config(path, tmp_path / "plain"))
    for name, data in (("c.jsonl.bz2", bz2.compress(raw)), ("c.jsonl.xz", lzma.compress(raw))):
        (tmp_path / name).write_bytes(data)
        summary = preprocess(config(tmp_path / name, tmp_path / name.replace(".", "_")))
        assert summary.counts["lines"] == 400
        for suffix in (".bin", ".idx"):
            assert (Path(summary.outputs["text"] + suffix).read_bytes()
                    == Path(f"{tmp_path / 'plain'}_text_document{suffix}").read_bytes())
    zst = tmp_path / "c.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 16)
    monkeypatch.setattr(preprocess_module, "_zstd_module", lambda: None)
    with pytest.raises(ValueError, match=r"c.jsonl.zst is zstd-compressed .* pip install zstandard"):
        check_inputs(config(zst, tmp_path / "out"))
