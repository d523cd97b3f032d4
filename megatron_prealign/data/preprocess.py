"""Tokenize a raw corpus into megatron-core IndexedDataset files, plus the code-switch sidecar.

    summary = preprocess(PreprocessConfig(input="corpus.jsonl", output_prefix="data/corpus",
                                          tokenizer_type="SentencePieceTokenizer",
                                          tokenizer_model="tok.model", append_eod=True,
                                          workers=8, lexicon="en_de.lex"))

(``tools/preprocess_data.py`` is its command line, one flag per `PreprocessConfig` field) writes,
per ``json_keys`` key, ``<prefix>_<key>_document.{bin,idx}`` (standard megatron-core format, one
sequence per document, dtype uint16 below 65500 token ids else int32) and, with a lexicon,
``<prefix>_<key>_document_codeswitch.{bin,idx,json}`` (see ``megatron_prealign/data/README.md``).

Input: JSON lines (``{"text": ...}``), or plain text with one document per line
(``input_format="text"``; ``auto`` picks jsonl for ``.jsonl``/``.json`` files and for files whose
first non-blank line starts with ``{``). ``input`` is one file or a glob pattern
(``"shards/*.jsonl.gz"``): the matching files are read in sorted order as one corpus. Files may
be gzip, bzip2, xz or zstd compressed (recognised by their first bytes; zstd needs the
``zstandard`` package). Lines that are not valid UTF-8 or not a JSON object, missing keys and
empty documents are skipped, counted and reported; they never stop the run.

The output does not depend on ``workers`` or ``partitions``: the input is cut into tasks of about
``_BATCH_BYTES`` of whole lines (byte ranges that each worker reads itself for uncompressed
files, decompressed blocks for compressed ones), workers encode them in one tokenizer call per
task and key, scan them for lexicon spans in one compiled call, and return flat arrays that are
written in input order; partitions (contiguous runs of tasks written to partial files) are merged
in order.

Besides the data, every key gets the manifest ``<prefix>_<key>_document.json``
(``integrity.DatasetManifest``: the tokenizer's identity, and size and sha256 of every file,
hashed while written). Every output is written under a temporary name and committed when the
whole run succeeded, by ``integrity.commit``: readers never take a half-installed prefix for a
dataset. Temporaries that an earlier, killed run left for the same outputs are removed first.
"""
from __future__ import annotations

import bz2
import collections
import contextlib
import dataclasses
import glob
import gzip
import json
import json.scanner
import lzma
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
from tqdm import tqdm

from megatron_prealign.data.integrity import (
    DataError,
    DatasetManifest,
    check_output_dir,
    commit,
    hash_builder_output,
    output_error,
    staged_file_entry,
    tokenizer_identity,
)
from megatron_prealign.data.codeswitch import _native
from megatron_prealign.data.indexed_writer import IndexWriter
from megatron_prealign.data.sidecar import SIDECAR_FILES, SidecarWriter, append_documents, sidecar_prefix
from megatron_prealign.fileio import remove_path, remove_stale_temporaries, tmp_name
from megatron_prealign.lexicon.lexicon import load_lexicon
from megatron_prealign.lexicon.tokenizer import build_tokenizer, canonical_tokenizer_type
from megatron_prealign.log import get_logger

__all__ = ["INPUT_FORMATS", "PreprocessConfig", "PreprocessSummary", "check_inputs", "input_files", "preprocess"]

logger = get_logger(__name__)

INPUT_FORMATS = ("auto", "jsonl", "text")

# A worker task: about this many bytes of whole lines (one tokenizer call per task and key).
_BATCH_BYTES = 1 << 20
_MIN_TASK_BYTES = 1 << 16
# Tasks in flight per worker: bounds memory while keeping every worker busy.
_IN_FLIGHT_PER_WORKER = 4


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """What `preprocess` reads and writes (each field is the tools/preprocess_data.py flag of the
    same name)."""

    input: str
    """JSON-lines file, or plain text with one document per line; or a glob pattern matching
    several such files, read in sorted order; gzip/bzip2/xz/zstd-compressed files are read as
    they are (--input)."""
    output_prefix: str
    """Outputs are <output_prefix>_<key>_document.{bin,idx} [+ _codeswitch.{bin,idx,json}] (--output-prefix)."""
    tokenizer_type: str
    """SentencePieceTokenizer or HuggingFaceTokenizer; Megatron-LM's GPTSentencePieceTokenizer and
    Llama2Tokenizer name the first (--tokenizer-type)."""
    tokenizer_model: str
    """SentencePiece .model, or tokenizer.json / directory (--tokenizer-model)."""
    json_keys: tuple[str, ...] = ("text",)
    """Keys to extract from each JSON line, one output per key (--json-keys)."""
    input_format: str = "auto"
    """auto, jsonl or text; `check_inputs` resolves auto from the file (--input-format)."""
    append_eod: bool = False
    """Append the end-of-document token to every document (--append-eod)."""
    lexicon: Optional[str] = None
    """Compiled .lex lexicon: also write the code-switch sidecar for it (--lexicon)."""
    workers: int = 1
    """Encoding processes (--workers)."""
    partitions: int = 1
    """Split the input into this many partial outputs, merged in order (--partitions)."""

    def __post_init__(self) -> None:
        # A list (from argparse) is accepted; the frozen config keeps a tuple.
        object.__setattr__(self, "json_keys", tuple(self.json_keys))
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.partitions < 1:
            raise ValueError(f"--partitions must be >= 1, got {self.partitions}")
        if not self.json_keys:
            raise ValueError("--json-keys needs at least one key")
        if len(set(self.json_keys)) != len(self.json_keys):
            raise ValueError(f"--json-keys has duplicates: {list(self.json_keys)}")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, got {self.input_format!r}")
        object.__setattr__(self, "tokenizer_type", canonical_tokenizer_type(self.tokenizer_type))


def check_inputs(cfg: PreprocessConfig) -> PreprocessConfig:
    """Check the input and lexicon files and resolve ``input_format="auto"``.

    Returns:
        `cfg` with ``input_format`` ``jsonl`` or ``text``.

    Raises:
        DataError: naming the flag and the fix (no input file, a directory, a zstd file without
            the zstandard package, missing lexicon or tokenizer model, several keys for
            plain-text input).
    """
    files = input_files(cfg.input)
    for path in files:
        _check_file("--input", path, "give a corpus file or a glob pattern of files (quote it: "
                                     "--input 'shards/*.jsonl.gz')")
        compression = _compression(path)
        if compression == "zstd" and _zstd_module() is None:
            raise DataError(f"--input {path} is zstd-compressed and the zstandard package is not installed: "
                            f"pip install zstandard, or decompress it first (zstd -d)")
    if cfg.lexicon is not None:
        _check_file("--lexicon", cfg.lexicon, "give the compiled FILE.lex from tools/build_lexicon.py")
    if not os.path.exists(cfg.tokenizer_model):
        raise DataError(f"--tokenizer-model {cfg.tokenizer_model}: no such file or directory")
    if cfg.tokenizer_type == "SentencePieceTokenizer" and os.path.isdir(cfg.tokenizer_model):
        raise DataError(f"--tokenizer-model {cfg.tokenizer_model} is a directory: SentencePieceTokenizer "
                        f"needs the .model file")
    input_format = _detect_format(files[0]) if cfg.input_format == "auto" else cfg.input_format
    if input_format == "text" and len(cfg.json_keys) != 1:
        raise DataError("plain-text input has one document per line: give a single --json-keys name")
    return dataclasses.replace(cfg, input_format=input_format)


def input_files(pattern: str) -> List[str]:
    """The files ``--input`` names: the path itself if it exists, else the sorted glob matches.

    Raises:
        DataError: nothing exists at ``pattern`` and no file matches it.
    """
    if os.path.exists(pattern) or not glob.has_magic(pattern):
        if not os.path.exists(pattern):
            raise DataError(f"--input {pattern}: no such file")
        return [pattern]
    files = sorted(glob.glob(pattern))
    if not files:
        raise DataError(f"--input {pattern}: no file matches the pattern")
    return files


def _check_file(flag: str, path: str, hint: str) -> None:
    if os.path.isdir(path):
        raise DataError(f"{flag} {path} is a directory, not a file: {hint}")
    if not os.path.isfile(path):
        raise DataError(f"{flag} {path}: no such file")


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def _compression(path: str) -> Optional[str]:
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def _zstd_module():
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _open_input(path: str) -> Tuple[BinaryIO, BinaryIO]:
    """``(reader, raw)``: the decompressed byte stream, and the file under it (for progress)."""
    raw = open(path, "rb")
    compression = _compression(path)
    if compression is None:
        return raw, raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if compression == "bzip2":
        return bz2.BZ2File(raw, mode="rb"), raw
    if compression == "xz":
        return lzma.LZMAFile(raw, mode="rb"), raw
    return _zstd_module().ZstdDecompressor().stream_reader(raw, read_across_frames=True), raw


@contextlib.contextmanager
def _reading(path: str):
    """A damaged compressed file is a one-line error naming it, not a decompressor traceback."""
    try:
        yield
    except (EOFError, OSError, lzma.LZMAError) as exc:
        compression = _compression(path)
        if compression is None:
            raise
        raise DataError(f"--input {path}: corrupt or truncated {compression} file ({exc})") from None
    except Exception as exc:
        if type(exc).__name__ != "ZstdError":
            raise
        raise DataError(f"--input {path}: corrupt or truncated zstd file ({exc})") from None


def _detect_format(path: str) -> str:
    name = path
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zstd"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    reader, raw = _open_input(path)
    with raw, reader, _reading(path):
        for line in reader:
            if line.strip():
                return "jsonl" if line.lstrip().startswith(b"{") else "text"
    return "text"


# ----------------------------------------------------------------------------------------------
# Encoding (runs in the workers)


def _token_dtype(vocab_size: int) -> type:
    """megatron-core's ``DType.optimal_dtype``, without importing megatron-core (and torch) for it
    (tests/tools/test_preprocess.py checks that both agree)."""
    return np.uint16 if vocab_size < 65500 else np.int32


@dataclass(frozen=True)
class _EncoderOptions:
    tokenizer_type: str
    tokenizer_model: str
    lexicon: Optional[str]
    keys: Tuple[str, ...]
    input_format: str
    append_eod: bool
    dtype: type  # the token .bin's dtype: workers send tokens in it (uint16 halves the transfer)


# A task: a byte range of an uncompressed file (path, start, end), which the worker reads
# itself, or a block of whole lines the main process decompressed.
_Task = Union[Tuple[str, int, int], bytes]


@dataclass
class _KeyBatch:
    """Encoded documents of one key in one batch (flat arrays: cheap to send between processes)."""

    lengths: np.ndarray  # int64 (D,) tokens per document
    tokens: np.ndarray  # (sum lengths,) in the output dtype
    span_values: np.ndarray  # int64 (D,) int32 values of each document's span triples (3 per span)
    spans: np.ndarray  # int32 (sum span_values,) flattened (start, length, entry_id) triples
    span_tokens: int  # sum of the span lengths


@dataclass
class _Batch:
    nbytes: int
    counts: collections.Counter
    keys: Dict[str, _KeyBatch]


class _Encoder:
    """Tokenizer + lexicon, loaded once per worker (or handed over when encoding in-process)."""

    def __init__(self, options: _EncoderOptions, tokenizer=None, lexicon=None) -> None:
        self.options = options
        self.tokenizer = tokenizer or build_tokenizer(options.tokenizer_type, options.tokenizer_model)
        if lexicon is None and options.lexicon:
            lexicon = load_lexicon(options.lexicon, self.tokenizer)
        self.lexicon = lexicon
        self.eod = self.tokenizer.eod
        self.dtype = np.dtype(options.dtype)

    def encode_task(self, task: _Task) -> _Batch:
        if isinstance(task, tuple):
            path, start, end = task
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        else:
            data = task
        return self.encode_batch(data)

    def _records(self, data: bytes, counts: collections.Counter) -> List[Optional[dict]]:
        """Per line of ``data``: its keys' texts (a key maps to None when missing), or None for
        a skipped line."""
        try:
            decoded: List[Optional[str]] = data.decode("utf-8").split("\n")
            if decoded[-1] == "":
                decoded.pop()  # the newline ending the last line, not an empty line after it
        except UnicodeDecodeError:  # find the bad lines; the others are read as usual
            lines = data.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            decoded = []
            for raw in lines:
                try:
                    decoded.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    counts["invalid_utf8"] += 1
                    decoded.append(None)
        counts["lines"] += len(decoded)
        keys = self.options.keys
        if self.options.input_format == "text":
            key = keys[0]
            return [None if line is None else {key: line.rstrip("\r")} for line in decoded]
        records: List[Optional[dict]] = []
        scan_once, loads = _JSON_SCAN_ONCE, json.loads
        for line in decoded:
            if line is None:
                records.append(None)
                continue
            if not line or line.isspace():
                records.append({key: "" for key in keys})  # a blank line: an empty document
                continue
            try:
                # json.loads without its Python wrapper layers: a line that is one value, at most
                # followed by whitespace (else loads, for leading whitespace and the error).
                record, end = scan_once(line, 0)
                if end != len(line) and not line[end:].isspace():
                    record = loads(line)
            except (ValueError, StopIteration):
                try:
                    record = loads(line)
                except ValueError:
                    record = None
            if not isinstance(record, dict):
                counts["invalid_json"] += 1
                record = None
            records.append(record)
        return records

    def encode_batch(self, data: bytes) -> _Batch:
        """Encode whole lines: one tokenizer call per key, one compiled scan."""
        counts: collections.Counter = collections.Counter(lines=0)
        records = [r for r in self._records(data, counts) if r is not None]
        out = {}
        for key in self.options.keys:
            values = [r.get(key) for r in records]
            strings = [v for v in values if isinstance(v, str)]
            missing = len(values) - len(strings)
            texts = [v for v in strings if v and not v.isspace()]
            counts[f"{key}:missing_key"] += missing
            # Flat, in the output dtype, with the EOD after each document, in one compiled pass.
            lengths, tokens = _native().flatten_token_lists(self.tokenizer.encode_batch(texts, num_threads=1),
                                                            self.eod if self.options.append_eod else -1,
                                                            self.dtype)
            nonempty = lengths > 0
            counts[f"{key}:empty"] += len(values) - missing - int(nonempty.sum())
            if not nonempty.all():
                lengths = lengths[nonempty]
            if self.lexicon is not None and len(lengths):
                # One compiled scan per batch, already in the sidecar's (start, length, entry) layout.
                flat, span_values, span_tokens = self.lexicon.scan_documents(tokens, lengths)
            else:
                flat, span_values, span_tokens = np.zeros(0, np.int32), np.zeros(len(lengths), np.int64), 0
            out[key] = _KeyBatch(lengths=lengths, tokens=tokens, span_values=span_values, spans=flat,
                                 span_tokens=span_tokens)
        return _Batch(nbytes=len(data), counts=counts, keys=out)


_JSON_SCAN_ONCE = json.scanner.make_scanner(json.JSONDecoder())
_WORKER: Optional[_Encoder] = None


def _init_worker(options: _EncoderOptions) -> None:
    global _WORKER
    _WORKER = _Encoder(options)


def _encode_in_worker(task: _Task) -> _Batch:
    return _WORKER.encode_task(task)


# ----------------------------------------------------------------------------------------------
# Reading and writing (main process)


def _tasks(files: List[str], task_bytes: int) -> List[Tuple[List[_Task], int]]:
    """Per input file: its tasks (byte ranges of an uncompressed file, found by seeking; a
    compressed file's are produced while it is read, see `_read_tasks`) and its size on disk."""
    out = []
    for path in files:
        size = os.path.getsize(path)
        if _compression(path) is not None:
            out.append(([], size))
            continue
        bounds = [0]
        with open(path, "rb") as f:
            while bounds[-1] < size:
                f.seek(min(bounds[-1] + task_bytes, size) - 1)
                f.readline()  # to the start of the next line
                bounds.append(min(f.tell(), size))
        out.append(([(path, a, b) for a, b in zip(bounds, bounds[1:])], size))
    return out


def _read_tasks(path: str, tasks: List[_Task], size: int) -> Iterator[Tuple[_Task, int]]:
    """``(task, input bytes it covers on disk)`` for one file."""
    if tasks:
        yield from ((t, t[2] - t[1]) for t in tasks)
        return
    reader, raw = _open_input(path)
    with raw, reader, _reading(path):
        rest, done = b"", 0
        while True:
            block = reader.read(_BATCH_BYTES)
            position = raw.tell() if block else size
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if cut:
                yield data[:cut], position - done
                done = position
            rest = data[cut:]
            if not block:
                break
        if done < size:
            yield b"", size - done


def _partition_tasks(files: List[str], partitions: int, workers: int) -> List[Iterator[Tuple[_Task, int]]]:
    """The input as ``partitions`` contiguous runs of tasks of about equal size on disk (a
    compressed file is never split: it cannot be read from the middle)."""
    # Smaller tasks for a small input, so that it still keeps every worker busy.
    total = sum(os.path.getsize(f) for f in files)
    task_bytes = max(1, min(_BATCH_BYTES, max(_MIN_TASK_BYTES, total // (4 * workers * partitions))))
    units: List[Tuple[str, List[_Task], int]] = []
    for path, (tasks, size) in zip(files, _tasks(files, task_bytes)):
        units += [(path, [t], t[2] - t[1]) for t in tasks] if tasks else [(path, [], size)]
    total = sum(u[2] for u in units)
    parts: List[List[Tuple[str, List[_Task], int]]] = [[] for _ in range(partitions)]
    seen = 0
    for unit in units:
        # A unit goes to the partition its middle byte falls in.
        parts[min(partitions - 1, (2 * seen + unit[2]) * partitions // max(2 * total, 1))].append(unit)
        seen += unit[2]
    return [(item for path, tasks, size in part for item in _read_tasks(path, tasks, size)) for part in parts]


class _Outputs:
    """The token builder (and sidecar writer) of one key for one partition."""

    def __init__(self, prefix_paths: Dict[str, str], dtype, with_sidecar: bool, hashed: bool = False) -> None:
        self.paths = prefix_paths
        self.tokens = IndexWriter(prefix_paths["bin"], dtype=dtype)
        # The final outputs' digests go into the manifest (partial files are not committed).
        self.tokens_hash = hash_builder_output(self.tokens) if hashed else None
        self.sidecar = SidecarWriter(prefix_paths["cs_bin"]) if with_sidecar else None
        self.num_tokens = 0

    def add(self, batch: _KeyBatch) -> None:
        append_documents(self.tokens, batch.tokens, batch.lengths)
        self.num_tokens += int(batch.tokens.size)
        if self.sidecar is not None:
            self.sidecar.add_documents(batch.spans, batch.span_values, batch.span_tokens)

    def finalize(self) -> None:
        self.tokens.finalize(self.paths["idx"])
        if self.sidecar is not None:
            self.sidecar.finalize(self.paths["cs_idx"])


@dataclass
class PreprocessSummary:
    """What a run did (returned by `preprocess` and logged)."""

    counts: collections.Counter = field(default_factory=collections.Counter)
    documents: Dict[str, int] = field(default_factory=dict)
    tokens: Dict[str, int] = field(default_factory=dict)
    spans: Dict[str, int] = field(default_factory=dict)
    span_tokens: Dict[str, int] = field(default_factory=dict)
    outputs: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    input_bytes: int = 0

    def coverage(self, key: str) -> float:
        """Share of the key's tokens inside a matchable lexicon span."""
        return self.span_tokens.get(key, 0) / max(1, self.tokens.get(key, 0))


class _InOrder:
    """Results of a pool's workers for a stream of tasks, in input order. Keeps
    ``limit`` tasks in flight from the moment it is made, so that the workers start on the
    input while the main process still gets its writers ready."""

    def __init__(self, pool, tasks: Iterator[Tuple[_Task, int]], limit: int) -> None:
        self.pool, self.tasks, self.limit = pool, iter(tasks), limit
        self.pending: collections.deque = collections.deque()
        self._fill()

    def _fill(self) -> None:
        while len(self.pending) < self.limit:
            item = next(self.tasks, None)
            if item is None:
                return
            task, n = item
            self.pending.append((self.pool.apply_async(_encode_in_worker, (task,)), n))

    def __iter__(self) -> "_InOrder":
        return self

    def __next__(self) -> Tuple[_Batch, int]:
        if not self.pending:
            raise StopIteration
        result, n = self.pending.popleft()
        self._fill()  # before waiting: the workers never run dry while this one is written
        return result.get(), n


@contextlib.contextmanager
def _encode_fn(options: _EncoderOptions, workers: int, tokenizer, lexicon):
    """Yields ``encode(iterable of (task, disk bytes)) -> iterator of (_Batch, disk bytes)`` in
    input order."""
    if workers == 1:
        encoder = _Encoder(options, tokenizer, lexicon)
        yield lambda tasks: ((encoder.encode_task(task), n) for task, n in tasks)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(options,)) as pool:
        yield lambda tasks: _InOrder(pool, tasks, workers * _IN_FLIGHT_PER_WORKER)


def preprocess(cfg: PreprocessConfig) -> PreprocessSummary:
    """Tokenize ``cfg.input`` into ``cfg.output_prefix`` as described in the module docstring.

    Raises:
        DataError: from `check_inputs`; an output directory that cannot be written (read-only,
            full) names --output-prefix.
        LexiconError: the lexicon is not a lexicon file or belongs to another tokenizer (before
            anything is written).
    """
    cfg = check_inputs(cfg)
    t_start = time.perf_counter()
    tokenizer = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    lexicon = load_lexicon(cfg.lexicon, tokenizer) if cfg.lexicon else None  # fails early on a mismatch
    dtype = _token_dtype(tokenizer.vocab_size)
    keys = cfg.json_keys
    options = _EncoderOptions(
        cfg.tokenizer_type, cfg.tokenizer_model, cfg.lexicon, keys, cfg.input_format, cfg.append_eod, dtype
    )
    files = input_files(cfg.input)
    summary = PreprocessSummary(input_bytes=sum(os.path.getsize(f) for f in files))
    parts = _partition_tasks(files, cfg.partitions, cfg.workers)

    finals: Dict[str, Dict[str, str]] = {}
    ours = []  # every name this run may write, for the temporaries of earlier killed runs
    for key in keys:
        prefix = f"{cfg.output_prefix}_{key}_document"
        finals[key] = {"bin": prefix + ".bin", "idx": prefix + ".idx"}
        if lexicon is not None:
            side = sidecar_prefix(prefix)
            finals[key].update(cs_bin=side + ".bin", cs_idx=side + ".idx", cs_json=side + ".json")
        summary.outputs[key] = prefix
        ours += [prefix + s for s in (".bin", ".idx", ".json", *SIDECAR_FILES)]
    scratch_name = cfg.output_prefix + _SCRATCH_SUFFIX
    out_dir = os.path.dirname(os.path.abspath(cfg.output_prefix))
    tmp = {key: {kind: str(tmp_name(p)) for kind, p in paths.items()} for key, paths in finals.items()}
    manifests: Dict[str, DatasetManifest] = {}

    check_output_dir(cfg.output_prefix)
    try:
        os.makedirs(out_dir, exist_ok=True)
        for stale in remove_stale_temporaries([*ours, scratch_name]):
            logger.info("removed %s, left by an interrupted run", stale)
        with contextlib.ExitStack() as stack:
            stack.callback(_remove_all, [p for paths in tmp.values() for p in paths.values()])
            scratch = stack.enter_context(_scratch_dir(scratch_name)) if cfg.partitions > 1 else None
            # The workers start on the first partition before the outputs are opened.
            encode = stack.enter_context(_encode_fn(options, cfg.workers, tokenizer, lexicon))
            first = encode(parts[0])
            final_outputs = {key: _Outputs(tmp[key], dtype, lexicon is not None, hashed=True) for key in keys}
            progress = stack.enter_context(
                tqdm(total=summary.input_bytes, unit="B", unit_scale=True, desc="preprocess", disable=None,
                     file=sys.stderr)
            )
            _encode_partitions([first, *map(encode, parts[1:])], keys, final_outputs, scratch, dtype,
                               lexicon is not None, summary, progress, t_start)
            for key in keys:
                manifests[key] = _finalize_key(final_outputs[key], tmp[key], finals[key], tokenizer, cfg,
                                               lexicon, summary, key)
            # Installed together, each key's files in one commit; a failure before this point
            # leaves only temporaries, which the callback above removes.
            for key in keys:
                staged = [(tmp[key][kind], finals[key][kind]) for kind in finals[key]]
                commit(staged, summary.outputs[key], manifests[key])
    except OSError as exc:
        problem = output_error(exc, cfg.output_prefix)
        if problem is not None:
            raise problem from exc
        raise
    summary.seconds = time.perf_counter() - t_start
    _report(summary, lexicon is not None, cfg.input)
    return summary


def _encode_partitions(parts, keys, final_outputs, scratch, dtype, with_sidecar, summary, progress,
                       t_start) -> None:
    """Encode the input, partition by partition, into the final outputs (through partial files
    in `scratch` when there are several partitions)."""
    docs_seen, bytes_seen = 0, 0
    for part, tasks in enumerate(parts):
        if scratch is None:
            outputs = final_outputs
        else:
            outputs = {
                key: _Outputs(
                    {kind: os.path.join(scratch, f"part{part}_{key}{suffix}") for kind, suffix in _PART_SUFFIXES.items()},
                    dtype,
                    with_sidecar,
                )
                for key in keys
            }
        for batch, disk_bytes in tasks:
            summary.counts.update(batch.counts)
            for key in keys:
                outputs[key].add(batch.keys[key])
            docs_seen += len(batch.keys[keys[0]].lengths)
            bytes_seen += batch.nbytes
            progress.update(disk_bytes)
            elapsed = max(time.perf_counter() - t_start, 1e-9)
            progress.set_postfix_str(f"{docs_seen / elapsed:,.0f} docs/s, {bytes_seen / 1e6 / elapsed:.1f} MB/s",
                                     refresh=False)
        if scratch is None:
            continue
        for key in keys:
            outputs[key].finalize()
            if not outputs[key].tokens.sequence_lengths:
                # An empty partition (more partitions than lines): megatron-core cannot
                # open an empty .bin, and there is nothing to merge.
                _remove_all(outputs[key].paths.values())
                continue
            final_outputs[key].tokens.add_index(os.path.join(scratch, f"part{part}_{key}"))
            if with_sidecar:
                part_side = outputs[key].sidecar
                final_outputs[key].sidecar.add_index(
                    os.path.join(scratch, f"part{part}_{key}_cs"), part_side.num_spans, part_side.num_span_tokens
                )
            final_outputs[key].num_tokens += outputs[key].num_tokens
            _remove_all(outputs[key].paths.values())  # merged: free the disk space now


def _finalize_key(out: _Outputs, tmp: Dict[str, str], finals: Dict[str, str], tokenizer, cfg: PreprocessConfig,
                  lexicon, summary: PreprocessSummary, key: str) -> DatasetManifest:
    """Close one key's staged files, write its sidecar metadata, and return its manifest."""
    out.finalize()
    lengths = np.asarray(out.tokens.sequence_lengths, dtype=np.int32)
    summary.documents[key] = len(lengths)
    summary.tokens[key] = int(lengths.sum(dtype=np.int64))
    files = {".bin": staged_file_entry(tmp["bin"], out.tokens_hash), ".idx": staged_file_entry(tmp["idx"])}
    if lexicon is not None:
        out.sidecar.make_meta(
            lengths, lexicon_sha256=lexicon.sha256, tokenizer_fingerprint=lexicon.tokenizer_fingerprint,
            token_bin_size=files[".bin"]["size"], token_bin_sha256=files[".bin"]["sha256"],
        ).write(tmp["cs_json"])
        summary.spans[key] = out.sidecar.num_spans
        summary.span_tokens[key] = out.sidecar.num_span_tokens
        prefix = summary.outputs[key]
        for kind in ("cs_bin", "cs_idx", "cs_json"):
            suffix = finals[kind][len(prefix):]  # the manifest names files relative to the prefix
            files[suffix] = staged_file_entry(tmp[kind], out.sidecar.bin_hash if kind == "cs_bin" else None)
    return DatasetManifest(**tokenizer_identity(tokenizer, cfg.tokenizer_model), num_documents=len(lengths),
                           num_tokens=summary.tokens[key], files=files)


_PART_SUFFIXES = {"bin": ".bin", "idx": ".idx", "cs_bin": "_cs.bin", "cs_idx": "_cs.idx"}
# The partial files of --partitions live in one directory beside the outputs, named after the
# output prefix so that a later run over the same prefix finds it if this run is killed.
_SCRATCH_SUFFIX = ".partitions"


def _remove_all(paths) -> None:
    for path in paths:
        remove_path(path)


@contextlib.contextmanager
def _scratch_dir(name: str) -> Iterator[str]:
    path = tmp_name(name)
    os.makedirs(path)
    try:
        yield str(path)
    finally:
        remove_path(path)


def _report(summary: PreprocessSummary, with_lexicon: bool, input_path: str) -> None:
    c = summary.counts
    mb = summary.input_bytes / 1e6
    docs = sum(summary.documents.values())
    t = max(summary.seconds, 1e-9)
    logger.info(
        "read %d lines (%.1f MB) in %.1f s: %.0f docs/s, %.2f MB/s",
        c["lines"], mb, summary.seconds, docs / t, mb / t,
    )
    skipped = {"invalid UTF-8": c["invalid_utf8"], "invalid JSON": c["invalid_json"]}
    for key in summary.documents:
        skipped[f"{key}: empty"] = c[f"{key}:empty"]
        skipped[f"{key}: missing key"] = c[f"{key}:missing_key"]
    log = logger.warning if any(skipped.values()) else logger.info
    log("skipped lines/documents: %s", ", ".join(f"{v} {k}" for k, v in skipped.items()))
    for key, prefix in summary.outputs.items():
        logger.info("%s: %d documents, %d tokens -> %s.{bin,idx}", key, summary.documents[key], summary.tokens[key], prefix)
        if not summary.documents[key]:
            # Kept, not refused: an empty shard of a split corpus merges like any other.
            logger.warning("%s: --input %s gave no documents, %s is an empty dataset: training and evaluation "
                           "refuse it, tools/merge_datasets.py takes it as an empty shard", key, input_path, prefix)
        if with_lexicon:
            logger.info(
                "%s: lexicon coverage %.2f%% of tokens inside a matchable span (%d spans, %d tokens) -> %s",
                key, 100 * summary.coverage(key), summary.spans[key], summary.span_tokens[key],
                sidecar_prefix(prefix) + ".{bin,idx,json}",
            )

