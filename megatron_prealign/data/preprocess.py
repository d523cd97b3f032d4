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
first non-blank line starts with ``{``). Lines that are not valid UTF-8 or not a JSON object,
missing keys and empty documents are skipped, counted and reported; they never stop the run.

The output does not depend on ``workers`` or ``partitions``: workers encode batches of lines
that are written in input order, and partitions (contiguous byte ranges of the input written to
partial files) are merged in order.

Besides the data, every key gets the manifest ``<prefix>_<key>_document.json``
(``integrity.DatasetManifest``: the tokenizer's identity, and size and sha256 of every file,
hashed while written). Every output is written under a temporary name and committed when the
whole run succeeded, by ``integrity.commit``: readers never take a half-installed prefix for a
dataset. Temporaries that an earlier, killed run left for the same outputs are removed first.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
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
from megatron_prealign.data.sidecar import SIDECAR_FILES, SidecarWriter, append_documents, sidecar_prefix
from megatron_prealign.fileio import remove_path, remove_stale_temporaries, tmp_name
from megatron_prealign.lexicon.lexicon import load_lexicon
from megatron_prealign.lexicon.tokenizer import build_tokenizer, canonical_tokenizer_type
from megatron_prealign.log import get_logger

__all__ = ["INPUT_FORMATS", "PreprocessConfig", "PreprocessSummary", "check_inputs", "preprocess"]

logger = get_logger(__name__)

INPUT_FORMATS = ("auto", "jsonl", "text")

# A worker task: this many lines or bytes, whichever comes first.
_BATCH_LINES = 512
_BATCH_BYTES = 1 << 20
# Tasks in flight per worker: bounds memory while keeping every worker busy.
_IN_FLIGHT_PER_WORKER = 4


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """What `preprocess` reads and writes (each field is the tools/preprocess_data.py flag of the
    same name)."""

    input: str
    """JSON-lines file, or plain text with one document per line (--input)."""
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
        DataError: naming the flag and the fix (missing, directory or compressed input, missing
            lexicon or tokenizer model, several keys for plain-text input).
    """
    _check_file("--input", cfg.input, "give one corpus file per run (merge the outputs of several with "
                                      "tools/merge_datasets.py)")
    compression = _compression(cfg.input)
    if compression:
        raise DataError(f"--input {cfg.input} is {compression}-compressed: decompress it first "
                        f"(the input is split by byte offsets across --workers/--partitions)")
    if cfg.lexicon is not None:
        _check_file("--lexicon", cfg.lexicon, "give the compiled FILE.lex from tools/build_lexicon.py")
    if not os.path.exists(cfg.tokenizer_model):
        raise DataError(f"--tokenizer-model {cfg.tokenizer_model}: no such file or directory")
    if cfg.tokenizer_type == "SentencePieceTokenizer" and os.path.isdir(cfg.tokenizer_model):
        raise DataError(f"--tokenizer-model {cfg.tokenizer_model} is a directory: SentencePieceTokenizer "
                        f"needs the .model file")
    input_format = _detect_format(cfg.input) if cfg.input_format == "auto" else cfg.input_format
    if input_format == "text" and len(cfg.json_keys) != 1:
        raise DataError("plain-text input has one document per line: give a single --json-keys name")
    return dataclasses.replace(cfg, input_format=input_format)


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


def _detect_format(path: str) -> str:
    if path.endswith((".jsonl", ".json")):
        return "jsonl"
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                return "jsonl" if line.lstrip().startswith(b"{") else "text"
    return "text"


# ----------------------------------------------------------------------------------------------
# Encoding (runs in the workers)


@dataclass(frozen=True)
class _EncoderOptions:
    tokenizer_type: str
    tokenizer_model: str
    lexicon: Optional[str]
    keys: Tuple[str, ...]
    input_format: str
    append_eod: bool


@dataclass
class _KeyBatch:
    """Encoded documents of one key in one batch (flat arrays: cheap to send between processes)."""

    lengths: np.ndarray  # int64 (D,) tokens per document
    tokens: np.ndarray  # int32 (sum lengths,)
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

    def _texts(self, raw: bytes, counts: collections.Counter) -> Dict[str, Optional[str]]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            counts["invalid_utf8"] += 1
            return {}
        if self.options.input_format == "text":
            return {self.options.keys[0]: line.rstrip("\r\n")}
        if not line.strip():
            return {key: "" for key in self.options.keys}  # a blank line: an empty document
        try:
            record = json.loads(line)
        except ValueError:
            counts["invalid_json"] += 1
            return {}
        if not isinstance(record, dict):
            counts["invalid_json"] += 1
            return {}
        texts = {}
        for key in self.options.keys:
            value = record.get(key)
            texts[key] = value if isinstance(value, str) else None
        return texts

    def encode_batch(self, lines: List[bytes], nbytes: int) -> _Batch:
        counts: collections.Counter = collections.Counter(lines=len(lines))
        docs: Dict[str, list] = {key: [] for key in self.options.keys}
        for raw in lines:
            for key, text in self._texts(raw, counts).items():
                if text is None:
                    counts[f"{key}:missing_key"] += 1
                    continue
                ids = self.tokenizer.encode(text) if text.strip() else []
                if not ids:
                    counts[f"{key}:empty"] += 1
                    continue
                if self.options.append_eod:
                    ids.append(self.eod)
                docs[key].append(ids)
        out = {}
        for key in self.options.keys:
            d = docs[key]
            lengths = np.fromiter((len(t) for t in d), dtype=np.int64, count=len(d))  # (D,)
            tokens = np.fromiter(itertools.chain.from_iterable(d), dtype=np.int32, count=int(lengths.sum()))
            if self.lexicon is not None and d:
                # One compiled scan per batch, already in the sidecar's (start, length, entry) layout.
                flat, span_values, span_tokens = self.lexicon.scan_documents(tokens, lengths)
            else:
                flat, span_values, span_tokens = np.zeros(0, np.int32), np.zeros(len(d), np.int64), 0
            out[key] = _KeyBatch(
                lengths=lengths,
                tokens=tokens,
                span_values=span_values,
                spans=flat,
                span_tokens=span_tokens,
            )
        return _Batch(nbytes=nbytes, counts=counts, keys=out)


_WORKER: Optional[_Encoder] = None


def _init_worker(options: _EncoderOptions) -> None:
    global _WORKER
    _WORKER = _Encoder(options)


def _encode_in_worker(lines: List[bytes], nbytes: int) -> _Batch:
    return _WORKER.encode_batch(lines, nbytes)


# ----------------------------------------------------------------------------------------------
# Reading and writing (main process)


def _partition_bounds(path: str, partitions: int) -> List[int]:
    """Byte offsets splitting the file into ``partitions`` ranges that start at line starts."""
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as f:
        for i in range(1, partitions):
            target = size * i // partitions
            if target <= bounds[-1]:
                bounds.append(bounds[-1])
                continue
            f.seek(target - 1)
            f.readline()  # to the start of the first line at or after `target`
            bounds.append(min(f.tell(), size))
    bounds.append(size)
    return bounds


def _batches(path: str, start: int, end: int) -> Iterator[Tuple[List[bytes], int]]:
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        batch: List[bytes] = []
        nbytes = 0
        while pos < end:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            batch.append(line)
            nbytes += len(line)
            if len(batch) >= _BATCH_LINES or nbytes >= _BATCH_BYTES:
                yield batch, nbytes
                batch, nbytes = [], 0
        if batch:
            yield batch, nbytes


class _Outputs:
    """The token builder (and sidecar writer) of one key for one partition."""

    def __init__(self, prefix_paths: Dict[str, str], dtype, with_sidecar: bool, hashed: bool = False) -> None:
        self.paths = prefix_paths
        self.tokens = IndexedDatasetBuilder(prefix_paths["bin"], dtype=dtype)
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


@contextlib.contextmanager
def _encode_fn(options: _EncoderOptions, workers: int, tokenizer, lexicon):
    """Yields ``encode(iterable of (lines, nbytes)) -> iterator of _Batch`` in input order."""
    if workers == 1:
        encoder = _Encoder(options, tokenizer, lexicon)
        yield lambda batches: (encoder.encode_batch(lines, n) for lines, n in batches)
        return
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(options,)) as pool:

        def encode(batches):
            pending: collections.deque = collections.deque()
            for lines, n in batches:
                pending.append(pool.apply_async(_encode_in_worker, (lines, n)))
                if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()

        yield encode


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
    dtype = DType.optimal_dtype(tokenizer.vocab_size)
    keys = cfg.json_keys
    options = _EncoderOptions(
        cfg.tokenizer_type, cfg.tokenizer_model, cfg.lexicon, keys, cfg.input_format, cfg.append_eod
    )
    summary = PreprocessSummary(input_bytes=os.path.getsize(cfg.input))
    bounds = _partition_bounds(cfg.input, cfg.partitions)

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
            final_outputs = {key: _Outputs(tmp[key], dtype, lexicon is not None, hashed=True) for key in keys}
            progress = stack.enter_context(
                tqdm(total=summary.input_bytes, unit="B", unit_scale=True, desc="preprocess", disable=None,
                     file=sys.stderr)
            )
            encode = stack.enter_context(_encode_fn(options, cfg.workers, tokenizer, lexicon))
            _encode_partitions(cfg, bounds, keys, encode, final_outputs, scratch, dtype, lexicon is not None,
                               summary, progress, t_start)
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


def _encode_partitions(cfg, bounds, keys, encode, final_outputs, scratch, dtype, with_sidecar, summary, progress,
                       t_start) -> None:
    """Encode the input, partition by partition, into the final outputs (through partial files
    in `scratch` when there are several partitions)."""
    docs_seen = 0
    for part in range(cfg.partitions):
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
        for batch in encode(_batches(cfg.input, bounds[part], bounds[part + 1])):
            summary.counts.update(batch.counts)
            for key in keys:
                outputs[key].add(batch.keys[key])
                docs_seen += len(batch.keys[key].lengths)
            progress.update(batch.nbytes)
            elapsed = max(time.perf_counter() - t_start, 1e-9)
            progress.set_postfix_str(f"{docs_seen / elapsed:,.0f} docs/s", refresh=False)
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

