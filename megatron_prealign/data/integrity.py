"""Trusting a token dataset on disk, and committing one in a single step.

Every reader of a megatron-core ``IndexedDataset`` prefix in this project goes through
`open_token_dataset` (training, evaluation, merging, ``--dry-run``) or, for any other prefix
such as the code-switch sidecar, `open_indexed`. So each of these problems is found at open, in
one place, as a one-line `DataError` naming the file and what to do, instead of as a numpy error
without a file name in the middle of training or an IndexError deep in the embedding:

* a missing file, a directory where a file belongs, an ``.idx`` that is not an index;
* a ``.bin`` whose size is not what its ``.idx`` describes (sum of the sequence lengths x the
  dtype size): a truncated copy, or files of two different writes;
* an empty dataset where documents are needed;
* an interrupted write, or files changed after they were written (see *Manifest*);
* tokens of another tokenizer than the run's (the manifest's fingerprint) or, for datasets
  without a manifest (e.g. written by Megatron-LM's own tools), token ids outside the model's
  vocabulary (the largest id is found once per file version, with numpy over the memory map).

Manifest
--------
Preprocessing and merging write ``<prefix>.json`` (`DatasetManifest`) beside
``<prefix>.{bin,idx}``: the tokenizer's identity (fingerprint, type, model file name, vocabulary
size), the counts, and the size and sha256 of every file committed with it (the tokens, and the
code-switch sidecar ``<prefix>_codeswitch.{bin,idx,json}`` when there is one). Digests are
computed while the files are written (`HashingFile`), never by reading them back.

`commit` installs staged outputs in one step as far as readers can tell:

1. ``<prefix>.json`` is replaced by the new manifest marked ``"complete": false``;
2. every staged file is renamed onto its final name;
3. ``<prefix>.json`` is replaced by the same manifest marked ``"complete": true``.

A reader refuses a prefix whose manifest is incomplete, so a kill anywhere in the commit leaves
either the previous outputs untouched (before 1) or a prefix that is refused with the fix
(re-run the tool) until a later run completes, never old tokens beside a new sidecar that
pass for one dataset. Temporaries left by a killed writer are removed by the next run that
writes the same prefix (`megatron_prealign.fileio.remove_stale_temporaries`).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.fileio import remove_path, tmp_name

__all__ = [
    "DataError",
    "DatasetManifest",
    "FULL_DIGEST_BYTES",
    "HashingFile",
    "IndexSummary",
    "check_dataset_files",
    "check_output_dir",
    "commit",
    "file_sha256",
    "hash_builder_output",
    "index_summary",
    "manifest_path",
    "max_token_id",
    "open_indexed",
    "open_token_dataset",
    "output_error",
    "read_manifest",
    "staged_file_entry",
    "tokenizer_identity",
    "verdict_cache_dir",
    "verify_content",
    "verify_manifest_files",
]

MANIFEST_FORMAT = "megatron_prealign.token_dataset"
MANIFEST_VERSION = 1

FULL_DIGEST_BYTES = 256 << 20
"""Files up to this size are re-hashed at every open (well under a second); larger ones once per
file version (see `verify_content`)."""

REBUILD = "rebuild it with tools/preprocess_data.py (or tools/merge_datasets.py for merged shards)"

_INDEX_HEADER = b"MMIDIDX\x00\x00"
_HEADER_BYTES = 34  # magic (9) + version (8) + dtype code (1) + sequence count (8) + document count (8)
# megatron-core's DType codes (indexed_dataset.DType), so the header is checked without megatron.
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
           8: np.uint16}


class DataError(ValueError):
    """A dataset file, or a data flag, that cannot be used as given. The message is one line that
    names the file or flag and what to do; the tools print it as ``error: ...`` and exit with 2."""


# ----------------------------------------------------------------------------------------------
# Digests


class HashingFile:
    """A writable file that hashes (sha256) and counts every byte written through it.

    Wraps the ``.bin`` file of a megatron-core ``IndexedDatasetBuilder`` (`hash_builder_output`):
    its ``add_document``/``add_index`` and our bulk appends all write through ``data_file``.
    """

    def __init__(self, file: Any) -> None:
        self._file = file
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")  # numpy buffers are typed views; hash their bytes
        self._sha.update(view)
        self.size += view.nbytes
        return self._file.write(view)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def hash_builder_output(builder: Any) -> HashingFile:
    """Hash what an ``IndexedDatasetBuilder`` writes to its ``.bin`` from now on (call it right
    after constructing the builder); returns the `HashingFile` that holds size and digest."""
    if not isinstance(builder.data_file, HashingFile):
        builder.data_file = HashingFile(builder.data_file)
    return builder.data_file


def file_sha256(path: str) -> str:
    """sha256 hex of a file, streamed."""
    sha = hashlib.sha256()
    buffer = bytearray(8 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            sha.update(view[:n])
    return sha.hexdigest()


# Facts about one version of a file (its digest, its largest token id), keyed by what changes
# whenever the file is rewritten: real path, size, mtime_ns and inode (our writers rename a new
# file over the old one, so even an equal size and mtime come with a new inode).
_FACTS: Dict[str, str] = {}
_FACTS_LOCK = threading.Lock()
_CACHE_SUBDIR = "prealign_file_facts"


def _version_key(path: str, kind: str) -> str:
    st = os.stat(path)
    raw = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{kind}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _file_fact(path: str, kind: str, compute: Callable[[], str], cache_dir: Optional[str]) -> str:
    """``compute()`` for this version of `path`, remembered in this process and, with
    `cache_dir`, in a small file there (other ranks, later runs)."""
    key = _version_key(path, kind)
    with _FACTS_LOCK:
        if key in _FACTS:
            return _FACTS[key]
    record = os.path.join(cache_dir, _CACHE_SUBDIR, key) if cache_dir else None
    value = None
    if record is not None:
        try:
            with open(record, encoding="utf-8") as f:
                value = f.read().strip() or None
        except OSError:
            value = None
    if value is None:
        value = compute()
        if record is not None:
            try:
                os.makedirs(os.path.dirname(record), exist_ok=True)
                tmp = tmp_name(record)
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(value)
                os.replace(tmp, record)
            except OSError:
                pass  # a read-only cache only costs the next open another pass over the file
    with _FACTS_LOCK:
        _FACTS[key] = value
    return value


def verify_content(path: str, size: int, sha256: str, *, cache_dir: Optional[str] = None) -> Optional[bool]:
    """Whether `path` holds the bytes that were `size` long and hashed to `sha256` when written.

    The size is compared always (free). The digest is recomputed for files up to
    `FULL_DIGEST_BYTES`: that takes well under a second. A larger file (a multi-GB corpus read by
    every rank) is hashed once per file version and the verdict kept in this process and, given
    a `cache_dir` (the dataset index cache), on disk, keyed by real path, size, mtime_ns and
    inode. That is sound for what this guards against, outputs of another write or a partial
    copy: every rewrite, rename-over or copy gives the file a new mtime or inode, so a kept
    verdict never vouches for other bytes (only an in-place edit that restores the mtime by hand
    could fool it). Without a cache dir a large file is compared by size only.

    Returns:
        True (verified), False (differs), or None (large, no cache dir: size equal, digest not
        checked).
    """
    actual = os.path.getsize(path)
    if actual != size:
        return False
    if actual > FULL_DIGEST_BYTES and not cache_dir:
        return None
    return _file_fact(path, "sha256", lambda: file_sha256(path),
                      cache_dir if actual > FULL_DIGEST_BYTES else None) == sha256


def verdict_cache_dir(path_to_cache: Optional[str], prefix: str) -> str:
    """Where verdicts about the large files of `prefix` are kept (`verify_content`): the dataset
    index cache (``--data-cache-path``), or megatron-core's default for it, ``<prefix>/cache``."""
    return path_to_cache or os.path.join(prefix, "cache")


# ----------------------------------------------------------------------------------------------
# Manifest


def manifest_path(prefix: str) -> str:
    """``<prefix>.json``: the manifest of a token dataset prefix."""
    return prefix + ".json"


@dataclass(frozen=True)
class DatasetManifest:
    """Contents of ``<prefix>.json`` (see the module docstring)."""

    tokenizer_fingerprint: Optional[str]
    """`Tokenizer.fingerprint` of the tokenizer that produced the ids; None when unknown."""
    tokenizer_type: Optional[str]
    """Its type (SentencePieceTokenizer, HuggingFaceTokenizer)."""
    tokenizer_model: Optional[str]
    """The file (or directory) name of its model, for messages only."""
    vocab_size: Optional[int]
    """Its vocabulary size: every token id is below it."""
    num_documents: int
    num_tokens: int
    files: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    """Suffix after the prefix (``.bin``, ``.idx``, ``_codeswitch.bin``, ...) -> ``{"size": int,
    "sha256": str}`` of each file committed together."""
    complete: bool = True
    """False while `commit` is renaming the files: the prefix is not to be trusted."""
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def tokenizer_label(self) -> str:
        """The recorded tokenizer in words."""
        return _tokenizer_label(self.tokenizer_model, self.tokenizer_type, self.vocab_size,
                                self.tokenizer_fingerprint)


def _tokenizer_label(model: Optional[str], kind: Optional[str], vocab: Optional[int],
                     fingerprint: Optional[str]) -> str:
    details = ", ".join(x for x in (kind, f"vocab {vocab}" if vocab is not None else None,
                                    f"fingerprint {fingerprint[:12]}" if fingerprint else None) if x)
    return f"{model or 'a tokenizer'} ({details})" if details else (model or "an unknown tokenizer")


def tokenizer_identity(tokenizer: Any, model_path: Optional[str] = None) -> Dict[str, Any]:
    """The manifest's tokenizer fields for a ``megatron_prealign.lexicon`` tokenizer."""
    path = model_path or getattr(tokenizer, "model_path", None)
    return {
        "tokenizer_fingerprint": getattr(tokenizer, "fingerprint", None),
        "tokenizer_type": getattr(tokenizer, "tokenizer_type", None),
        "tokenizer_model": os.path.basename(os.path.normpath(str(path))) if path else None,
        "vocab_size": getattr(tokenizer, "vocab_size", None),
    }


def read_manifest(prefix: str) -> Optional[DatasetManifest]:
    """The manifest of `prefix`, or None when it has none (a dataset written by another tool).

    Raises:
        DataError: unreadable, or left incomplete by an interrupted write.
    """
    path = manifest_path(prefix)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {raw.get('format') if isinstance(raw, dict) else raw!r}")
        if raw.get("version") != MANIFEST_VERSION:
            raise ValueError(f"version {raw.get('version')!r}, this reader knows {MANIFEST_VERSION}")
        manifest = DatasetManifest(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a readable manifest of {prefix}.{{bin,idx}} ({exc}); {REBUILD}") from exc
    if not manifest.complete:
        raise DataError(
            f"{path}: the write of {prefix}.* was interrupted (its files may mix two runs); re-run the "
            f"tools/preprocess_data.py or tools/merge_datasets.py command that wrote {prefix}"
        )
    return manifest


def verify_manifest_files(prefix: str, manifest: DatasetManifest, suffixes: Sequence[str], *,
                          cache_dir: Optional[str] = None) -> None:
    """Check the files ``prefix + suffix`` that `manifest` lists against their recorded size and
    digest (`verify_content`); suffixes it does not list are skipped.

    Raises:
        DataError: a listed file is missing or holds other bytes.
    """
    for suffix in suffixes:
        entry = manifest.files.get(suffix)
        if entry is None:
            continue
        path = prefix + suffix
        if not os.path.isfile(path):
            raise DataError(f"{path} is missing but {manifest_path(prefix)} lists it; {REBUILD}")
        size = os.path.getsize(path)
        verdict = verify_content(path, int(entry["size"]), str(entry["sha256"]), cache_dir=cache_dir)
        if verdict is False:
            what = f"{size} bytes, {entry['size']} when written" if size != entry["size"] else "same size, other bytes"
            raise DataError(
                f"{path} changed after {manifest_path(prefix)} was written ({what}): the files of {prefix} "
                f"come from different writes or a partial copy; {REBUILD}"
            )


def commit(staged: Sequence[Tuple[str, str]], prefix: str, manifest: DatasetManifest) -> None:
    """Install ``staged`` ``(temporary path, final path)`` files of `prefix` and its manifest
    (see the module docstring for why a reader never trusts a half-installed prefix).

    The temporaries must be on the final names' file system (siblings, see `fileio.tmp_name`).
    """
    final_manifest = manifest_path(prefix)
    _write_text_atomic(final_manifest, dataclasses.replace(manifest, complete=False).to_json())
    for tmp, final in staged:
        os.replace(tmp, final)
    _write_text_atomic(final_manifest, dataclasses.replace(manifest, complete=True).to_json())


def _write_text_atomic(path: str, text: str) -> None:
    tmp = tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def check_output_dir(output_prefix: str, flag: str = "--output-prefix") -> None:
    """The directory of `output_prefix` is a directory, or does not exist yet.

    Raises:
        DataError: it is a file.
    """
    out_dir = os.path.dirname(os.path.abspath(output_prefix))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"{flag} {output_prefix}: {out_dir} is a file, not a directory; give a prefix inside a "
                        f"directory (DIR/NAME)")


# Failures to write the outputs, as opposed to reading an input or a bug.
_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}


def output_error(exc: OSError, output_prefix: str, flag: str = "--output-prefix") -> Optional[DataError]:
    """`exc` as a `DataError` naming `flag` and the directory, when it is a failure to write in
    the directory of `output_prefix` (read-only, full, not a directory); None otherwise."""
    out_dir = os.path.dirname(os.path.abspath(output_prefix))
    failed = os.path.abspath(str(exc.filename)) if exc.filename else None
    if exc.errno not in _OUTPUT_ERRNOS or (failed is not None and failed != out_dir
                                           and not failed.startswith(out_dir + os.sep)):
        return None
    where = out_dir if failed in (None, out_dir) else os.path.dirname(failed)  # the directory, not a temporary
    return DataError(f"{flag} {output_prefix}: cannot write in {where} ({exc.strerror or exc}); choose a "
                     f"writable directory with enough free space")


def staged_file_entry(path: str, hashed: Optional[HashingFile] = None) -> Dict[str, Any]:
    """A manifest ``files`` entry for a staged file: size and sha256, from `hashed` when it was
    hashed while written, else by reading it (for the small ``.idx``/``.json`` files)."""
    if hashed is not None:
        if hashed.size != os.path.getsize(path):
            raise OSError(f"{path}: {os.path.getsize(path)} bytes on disk, {hashed.size} written")
        return {"size": hashed.size, "sha256": hashed.hexdigest()}
    return {"size": os.path.getsize(path), "sha256": file_sha256(path)}


# ----------------------------------------------------------------------------------------------
# Opening


def check_dataset_files(prefix: str, *, flag: Optional[str] = None) -> None:
    """``<prefix>.bin`` and ``<prefix>.idx`` exist and are files.

    Raises:
        DataError: naming the flag (when given), the file and what to do.
    """
    where = f"{flag} {prefix}: " if flag else ""
    for suffix in (".bin", ".idx"):
        path = prefix + suffix
        if os.path.isdir(path):
            raise DataError(f"{where}{path} is a directory; a dataset prefix names the files <prefix>.bin and "
                            f"<prefix>.idx")
        if not os.path.isfile(path):
            for given in (".bin", ".idx"):
                if prefix.endswith(given) and os.path.isfile(prefix):
                    raise DataError(f"{where}{path} not found: give the prefix without {given}, i.e. "
                                    f"{prefix[:-len(given)]}")
            if os.path.isdir(prefix):
                raise DataError(f"{where}{path} not found: {prefix} is a directory; give a dataset prefix "
                                f"(DIR/NAME for DIR/NAME.bin and DIR/NAME.idx)")
            raise DataError(f"{where}{path} not found; build it with tools/preprocess_data.py --output-prefix ...")


@dataclass(frozen=True)
class IndexSummary:
    """What an ``.idx`` header and its sequence lengths say."""

    dtype: type
    num_sequences: int
    num_documents: int
    num_values: int
    """Sum of the sequence lengths: the ``.bin`` holds exactly this many values of `dtype`."""

    @property
    def bin_bytes(self) -> int:
        return self.num_values * np.dtype(self.dtype).itemsize


def index_summary(prefix: str, fix: str = REBUILD) -> IndexSummary:
    """Read and check ``<prefix>.idx`` (megatron-core's index format, without megatron-core's
    reader, whose failures name no file) and check that ``<prefix>.bin`` has the size it describes.

    Raises:
        DataError: not an index, a truncated index, or a ``.bin`` of another size.
    """
    idx, bin_path = prefix + ".idx", prefix + ".bin"
    idx_size = os.path.getsize(idx)
    with open(idx, "rb") as f:
        header = f.read(_HEADER_BYTES)
    if len(header) < _HEADER_BYTES or header[:9] != _INDEX_HEADER:
        raise DataError(f"{idx}: not a megatron-core index (bad header); {fix}")
    version, code, sequences, documents = struct.unpack("<QBQQ", header[9:])
    if version != 1 or code not in _DTYPES:
        raise DataError(f"{idx}: unsupported index (version {version}, dtype code {code}); {fix}")
    dtype = _DTYPES[code]
    needed = _HEADER_BYTES + sequences * (4 + 8) + documents * 8
    if idx_size < needed or documents < 1:
        raise DataError(f"{idx}: truncated index ({idx_size} bytes, its header needs {needed}); {fix}")
    values = 0
    if sequences:
        lengths = np.memmap(idx, dtype="<i4", mode="r", offset=_HEADER_BYTES, shape=(sequences,))
        values = int(lengths.sum(dtype=np.int64))
        del lengths
    summary = IndexSummary(dtype=dtype, num_sequences=sequences, num_documents=documents - 1, num_values=values)
    bin_size = os.path.getsize(bin_path)
    if bin_size != summary.bin_bytes:
        raise DataError(
            f"{bin_path} has {bin_size} bytes but {idx} describes {summary.bin_bytes} ({values} values of "
            f"{np.dtype(dtype).name}): the file is truncated or belongs to another index; copy it again or {fix}"
        )
    return summary


def open_indexed(prefix: str, *, mmap: bool = True, flag: Optional[str] = None, fix: str = REBUILD) -> Any:
    """A megatron-core ``IndexedDataset`` of `prefix` after `check_dataset_files` and
    `index_summary` (an empty ``.bin`` is read without a memory map, which cannot map 0 bytes)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    check_dataset_files(prefix, flag=flag)
    summary = index_summary(prefix, fix)
    return IndexedDataset(prefix, mmap=mmap and summary.bin_bytes > 0)


def max_token_id(dataset: Any, *, cache_dir: Optional[str] = None) -> int:
    """The largest token id of an ``IndexedDataset`` (-1 when empty), found with numpy over the
    memory-mapped ``.bin`` once per file version (remembered like `verify_content`'s digests)."""
    path = dataset.path_prefix + ".bin"
    dtype = np.dtype(dataset.index.dtype)

    def compute() -> str:
        n = os.path.getsize(path) // dtype.itemsize
        if n == 0:
            return "-1"
        values = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
        step = 1 << 26  # a bounded working set however large the file
        top = max(int(values[i:i + step].max()) for i in range(0, n, step))
        del values
        return str(top)

    return int(_file_fact(path, "max_token_id", compute, cache_dir))


def open_token_dataset(
    prefix: str,
    *,
    mmap: bool = True,
    tokenizer: Any = None,
    tokenizer_fingerprint: Optional[str] = None,
    vocab_size: Optional[int] = None,
    cache_dir: Optional[str] = None,
    allow_empty: bool = False,
    verify: bool = True,
    flag: Optional[str] = None,
) -> Any:
    """Open the token dataset `prefix` after every check of the module docstring.

    Args:
        prefix: ``<prefix>.{bin,idx}``.
        mmap: memory-map the ``.bin`` (megatron-core's default).
        tokenizer: the run's tokenizer; its ``fingerprint`` must equal the manifest's.
        tokenizer_fingerprint: the fingerprint alone, when there is no tokenizer object (e.g. the
            one a checkpoint records).
        vocab_size: the model's vocabulary: token ids must be below it. Checked over the whole
            ``.bin`` unless the manifest's tokenizer is the run's (then it holds by construction).
        cache_dir: where verdicts about large files are kept (`verify_content`).
        allow_empty: accept a dataset without documents (a merge's empty shard).
        verify: also the checks that read whole files (digests, largest token id); without it,
            only what the headers and sizes say (a cheap early check on every rank).
        flag: the flag that named `prefix`, for messages.

    Returns:
        The megatron-core ``IndexedDataset``.

    Raises:
        DataError: the first problem, in one line naming the file and the fix.
    """
    check_dataset_files(prefix, flag=flag)
    manifest = read_manifest(prefix)
    if manifest is not None and verify:
        verify_manifest_files(prefix, manifest, (".idx", ".bin"), cache_dir=cache_dir)
    summary = index_summary(prefix)
    if summary.num_sequences == 0 and not allow_empty:
        raise DataError(f"{prefix}.{{bin,idx}} holds no documents: preprocess a corpus with documents in it "
                        f"(tools/preprocess_data.py), or leave {prefix} out")
    ours = getattr(tokenizer, "fingerprint", None) if tokenizer is not None else tokenizer_fingerprint
    if manifest is not None and ours and manifest.tokenizer_fingerprint and ours != manifest.tokenizer_fingerprint:
        if tokenizer is not None:
            model = os.path.basename(os.path.normpath(str(getattr(tokenizer, "model_path", "") or ""))) or None
            run = _tokenizer_label(model, getattr(tokenizer, "tokenizer_type", None),
                                   getattr(tokenizer, "vocab_size", None), ours)
        else:
            run = _tokenizer_label("the checkpoint's tokenizer", None, None, ours)
        raise DataError(
            f"{manifest_path(prefix)}: {prefix} was tokenized with {manifest.tokenizer_label()}, the run uses "
            f"{run}; re-run tools/preprocess_data.py with the run's --tokenizer-type/--tokenizer-model, or use "
            f"the dataset's tokenizer"
        )
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix, mmap=mmap and summary.bin_bytes > 0)
    vouched = manifest is not None and ours is not None and manifest.tokenizer_fingerprint == ours
    if vocab_size is not None and verify and not vouched:
        top = max_token_id(dataset, cache_dir=cache_dir)
        if top >= vocab_size:
            made_by = (f"was tokenized with {manifest.tokenizer_label()}" if manifest is not None
                       else "records no tokenizer (written by another tool?)")
            raise DataError(
                f"{prefix}.bin holds token id {top}, outside the model's vocabulary of {vocab_size} ids: {prefix} "
                f"{made_by} and is not data for this model; re-run tools/preprocess_data.py with the run's "
                f"--tokenizer-model"
            )
    return dataset
