"""The code-switch sidecar: lexicon spans of every document, aligned with the token dataset.

For a token dataset ``<prefix>.{bin,idx}`` (megatron-core ``IndexedDataset``, one sequence per
document) the sidecar is

* ``<prefix>_codeswitch.{bin,idx}``: a second, standard megatron-core ``IndexedDataset`` of dtype
  int32 with exactly one sequence per token sequence. Sequence ``d`` holds the switch spans of
  token sequence ``d`` as flattened int32 triples ``(start, length, entry_id)``: ``start`` is a
  token offset inside the document, ``length`` the number of tokens of the matched word, and
  ``entry_id`` its lexicon entry. Spans are sorted by start and do not overlap; a document
  without matches has an empty sequence.
* ``<prefix>_codeswitch.json``: what the spans are valid for (`SidecarMeta`): the lexicon's
  sha256 and tokenizer fingerprint, a digest of the token dataset's sequence lengths, and the
  size and sha256 of the token ``.bin`` itself, so a dataset refuses a sidecar written for
  another lexicon or other tokens, even tokens with the same document lengths.

The sidecar is written and committed together with its token dataset (``integrity.commit``):
the token dataset's manifest ``<prefix>.json`` lists the sidecar's files too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple

import numpy as np

from megatron_prealign.data.codeswitch import LexiconArrays, _native
from megatron_prealign.data.indexed_writer import IndexWriter
from megatron_prealign.data.integrity import (
    DataError,
    hash_builder_output,
    open_indexed,
    open_token_dataset,
    read_manifest,
    verify_content,
    verify_manifest_files,
)
from megatron_prealign.log import get_logger

__all__ = [
    "SIDECAR_SUFFIX",
    "append_documents",
    "SidecarError",
    "SidecarMeta",
    "SidecarWriter",
    "CodeSwitchSidecar",
    "decode_spans",
    "encode_spans",
    "lengths_digest",
    "sidecar_prefix",
    "validate_sidecar",
]

if TYPE_CHECKING:  # megatron-core imports torch: writing a sidecar needs neither
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

logger = get_logger(__name__)

SIDECAR_SUFFIX = "_codeswitch"
SIDECAR_FILES = tuple(SIDECAR_SUFFIX + s for s in (".bin", ".idx", ".json"))
"""The sidecar's files, as suffixes after the token prefix."""
_FORMAT = "megatron_prealign.codeswitch_sidecar"
_VERSION = 2
# Version 1 lacks the token .bin's size and digest; such sidecars are accepted with a warning.
_READABLE_VERSIONS = (1, 2)
# Full validation reads the sidecar in blocks of about this many spans.
_VALIDATE_BLOCK_SPANS = 1 << 20


class SidecarError(DataError):
    """The sidecar is missing, or does not belong to the token dataset / lexicon in use."""


def sidecar_prefix(token_prefix: str) -> str:
    """``<token_prefix>_codeswitch``: the sidecar's IndexedDataset prefix."""
    return f"{token_prefix}{SIDECAR_SUFFIX}"


def _meta_path(token_prefix: str) -> str:
    return sidecar_prefix(token_prefix) + ".json"


def _fix_hint(token_prefix: str) -> str:
    return (
        f"re-run tools/preprocess_data.py with --lexicon FILE.lex (the lexicon the run uses) to "
        f"rebuild {token_prefix}.{{bin,idx}} together with {sidecar_prefix(token_prefix)}.{{bin,idx,json}}"
    )


def encode_spans(starts: np.ndarray, lengths: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    """int32 (3*S,): the spans as flattened ``(start, length, entry_id)`` triples."""
    triples = np.empty((len(starts), 3), dtype=np.int32)  # (S, 3)
    triples[:, 0] = starts
    triples[:, 1] = lengths
    triples[:, 2] = entry_ids
    return triples.reshape(-1)  # (3*S,)


def decode_spans(flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `encode_spans`: three int32 (S,) views ``(starts, lengths, entry_ids)``."""
    triples = np.asarray(flat, dtype=np.int32).reshape(-1, 3)  # (S, 3)
    return triples[:, 0], triples[:, 1], triples[:, 2]


def append_documents(builder: "IndexedDatasetBuilder | IndexWriter", values: np.ndarray, sizes: np.ndarray) -> None:
    """Bulk ``builder.add_document``: append ``len(sizes)`` documents of one sequence each.

    Equivalent to ``for each size: builder.add_document(next `size` values, [size])`` (the files
    are byte-identical), with one write instead of one per document.

    Args:
        builder: a megatron-core IndexedDatasetBuilder (not multimodal) or an `IndexWriter`.
        values: (sum sizes,) the documents' values, concatenated.
        sizes: int (D,) values per document.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    values = np.asarray(values)
    if int(sizes.sum()) != values.size or (sizes < 0).any():
        raise ValueError(f"sizes (sum {int(sizes.sum())}) must split the {values.size} values")
    if builder.multimodal:
        raise ValueError("append_documents does not handle multimodal builders")
    # The array's own buffer: no bytes copy of what may be tens of MB per call.
    builder.data_file.write(np.ascontiguousarray(values, dtype=builder.dtype).data)
    first = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(sizes.tolist())
    builder.document_indices.extend(range(first + 1, first + len(sizes) + 1))


def lengths_digest(sequence_lengths: np.ndarray) -> str:
    """sha256 hex of the token dataset's sequence lengths (int32 little endian)."""
    return hashlib.sha256(np.ascontiguousarray(sequence_lengths, dtype="<i4").tobytes()).hexdigest()


@dataclass(frozen=True)
class SidecarMeta:
    """Contents of ``<prefix>_codeswitch.json``."""

    lexicon_sha256: str
    """sha256 of the lexicon whose entry ids the spans use."""
    tokenizer_fingerprint: str
    """Fingerprint of the tokenizer that produced the token ids."""
    num_documents: int
    """Number of token sequences (= sidecar sequences)."""
    num_tokens: int
    """Total tokens of the token dataset."""
    num_spans: int
    """Total switch spans."""
    num_span_tokens: int
    """Tokens covered by spans (coverage = num_span_tokens / num_tokens)."""
    token_lengths_sha256: str
    """`lengths_digest` of the token dataset's sequence lengths."""
    token_bin_size: Optional[int] = None
    """Size in bytes of the token ``.bin`` the spans index."""
    token_bin_sha256: Optional[str] = None
    """sha256 of that ``.bin``, computed while it was written: binds the spans to the token
    content, not only to the document lengths. None in version-1 sidecars."""
    format: str = _FORMAT
    version: int = _VERSION

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def read(cls, path: str) -> "SidecarMeta":
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
            meta = cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise SidecarError(f"{path}: unreadable code-switch sidecar metadata ({exc})") from exc
        if meta.format != _FORMAT or meta.version not in _READABLE_VERSIONS:
            raise SidecarError(
                f"{path}: not a code-switch sidecar of version {' or '.join(map(str, _READABLE_VERSIONS))} "
                f"(format {meta.format!r}, version {meta.version!r})"
            )
        return meta


class SidecarWriter:
    """Streams document spans into a sidecar ``.bin`` (a standard megatron-core dataset, int32,
    written by `IndexWriter`).

    The caller owns the paths (so they can be temporary names renamed when complete): call
    `add_document` once per token document, in token-dataset order, then `finalize`.
    """

    def __init__(self, bin_path: str) -> None:
        self._builder = IndexWriter(bin_path, dtype=np.int32)
        self.bin_hash = hash_builder_output(self._builder)
        """Size and sha256 of the ``.bin`` as written (for the dataset's manifest)."""
        self.num_documents = 0
        self.num_spans = 0
        self.num_span_tokens = 0

    def add_document(self, starts: np.ndarray, lengths: np.ndarray, entry_ids: np.ndarray) -> None:
        """Append the spans of the next document (positions relative to the document)."""
        flat = encode_spans(starts, lengths, entry_ids)  # (3*S,)
        self._builder.add_document(flat, [flat.size])
        self.num_documents += 1
        self.num_spans += len(starts)
        self.num_span_tokens += int(np.sum(lengths, dtype=np.int64))

    def add_documents(self, flat: np.ndarray, values_per_document: np.ndarray, num_span_tokens: int) -> None:
        """Append several documents at once.

        Args:
            flat: int32 (3 * total spans,) the documents' flattened triples, concatenated.
            values_per_document: int (D,) how many of those values (3 per span) each document has.
            num_span_tokens: the sum of the span lengths (for the coverage statistics).
        """
        flat = np.asarray(flat, dtype=np.int32)
        sizes = np.asarray(values_per_document, dtype=np.int64)
        if np.any(sizes % 3):
            raise ValueError("values_per_document must split `flat` into whole triples")
        append_documents(self._builder, flat, sizes)
        self.num_documents += len(sizes)
        self.num_spans += flat.size // 3
        self.num_span_tokens += int(num_span_tokens)

    def add_index(self, path_prefix: str, num_spans: int, num_span_tokens: int) -> None:
        """Append a complete sidecar written earlier (a partition), in order.

        ``num_spans`` / ``num_span_tokens`` are that partition writer's counts (reading them
        back would cost a pass over the partition's spans).
        """
        part = open_indexed(path_prefix)
        self.num_documents += len(part)
        if int(part.sequence_lengths.sum(dtype=np.int64)) != 3 * num_spans:
            raise ValueError(f"{path_prefix}: partition holds a different number of spans than stated")
        del part
        self._builder.add_index(path_prefix)
        self.num_spans += num_spans
        self.num_span_tokens += num_span_tokens

    def finalize(self, idx_path: str) -> None:
        """Write the ``.idx`` (the ``.bin`` is complete afterwards)."""
        self._builder.finalize(idx_path)

    def make_meta(
        self,
        token_sequence_lengths: np.ndarray,
        *,
        lexicon_sha256: str,
        tokenizer_fingerprint: str,
        token_bin_size: Optional[int] = None,
        token_bin_sha256: Optional[str] = None,
    ) -> SidecarMeta:
        """The metadata binding these spans to a token dataset with the given sequence lengths and
        ``.bin`` (size and sha256, as hashed while it was written)."""
        lengths = np.asarray(token_sequence_lengths)
        if len(lengths) != self.num_documents:
            raise ValueError(
                f"token dataset has {len(lengths)} documents, sidecar {self.num_documents}"
            )
        return SidecarMeta(
            lexicon_sha256=lexicon_sha256,
            tokenizer_fingerprint=tokenizer_fingerprint,
            num_documents=self.num_documents,
            num_tokens=int(lengths.sum(dtype=np.int64)),
            num_spans=self.num_spans,
            num_span_tokens=self.num_span_tokens,
            token_lengths_sha256=lengths_digest(lengths),
            token_bin_size=token_bin_size,
            token_bin_sha256=token_bin_sha256,
        )


_OLD_SIDECARS_WARNED: set = set()
_WARN_LOCK = threading.Lock()


class CodeSwitchSidecar:
    """Reader of ``<token_prefix>_codeswitch.{bin,idx,json}``.

    Opening checks the files themselves: present, listed with these sizes and digests in the
    token dataset's manifest when it lists them (``integrity.verify_manifest_files``), an index
    whose ``.bin`` has the size it describes (``integrity.open_indexed``), int32 values.
    `check_matches` then binds the sidecar to the token dataset and lexicon in use.

    Args:
        token_prefix: prefix of the token dataset the sidecar belongs to.
        mmap: memory-map the ``.bin`` (as megatron-core's IndexedDataset does by default).
        cache_dir: where verdicts about large files are kept (``integrity.verify_content``).
    """

    def __init__(self, token_prefix: str, mmap: bool = True, cache_dir: Optional[str] = None,
                 _verify: bool = True) -> None:
        self.token_prefix = token_prefix
        self.path_prefix = sidecar_prefix(token_prefix)
        self.cache_dir = cache_dir
        missing = [
            p for p in (self.path_prefix + ".bin", self.path_prefix + ".idx", _meta_path(token_prefix))
            if not os.path.isfile(p)
        ]
        if missing:
            raise SidecarError(
                f"code-switch sidecar for {token_prefix}.{{bin,idx}} is missing ({', '.join(missing)}); "
                + _fix_hint(token_prefix)
            )
        try:
            if _verify:
                manifest = read_manifest(token_prefix)
                if manifest is not None:
                    verify_manifest_files(token_prefix, manifest, SIDECAR_FILES, cache_dir=cache_dir)
            self.meta = SidecarMeta.read(_meta_path(token_prefix))
            self.dataset = open_indexed(self.path_prefix, mmap=mmap, fix=_fix_hint(token_prefix))
        except SidecarError:
            raise
        except DataError as exc:  # the files themselves: still the sidecar's problem to callers
            raise SidecarError(str(exc)) from exc
        if self.dataset.index.dtype != np.int32:
            raise SidecarError(
                f"{self.path_prefix}.idx: sidecar dtype is {self.dataset.index.dtype.__name__}, "
                f"expected int32; " + _fix_hint(token_prefix)
            )
        self._mmap = mmap

    def __getstate__(self) -> Tuple[str, bool, Optional[str]]:
        # Re-open in the unpickling process (DataLoader workers under spawn) instead of copying
        # the memory-mapped index arrays; the files were verified when the original was opened.
        return (self.token_prefix, self._mmap, self.cache_dir)

    def __setstate__(self, state: Tuple[str, bool, Optional[str]]) -> None:
        self.__init__(*state, _verify=False)

    def __len__(self) -> int:
        return len(self.dataset)

    def spans(self, doc: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All spans of document ``doc`` as int32 (S,) views ``(starts, lengths, entry_ids)``."""
        return decode_spans(self.dataset.get(int(doc)))

    def native(self, doc_lengths: np.ndarray) -> Any:
        """The sidecar as a ``megatron_prealign._C.SidecarSpans`` (what ``_C.CodeSwitcher``
        walks), bound to the token dataset's ``doc_lengths`` (int32 (D,)).

        Memory-mapped, the spans are read in place from a map of the whole ``.bin``; otherwise
        each sample's documents are read from the file (``pread``), as megatron-core's
        IndexedDataset does with ``mmap=False``.
        """
        native = _native()
        values = self.dataset.sequence_lengths  # (D,) int32 values (3 per span) per document
        pointers = self.dataset.index.sequence_pointers  # (D,) int64 byte offsets in the .bin
        path = self.path_prefix + ".bin"
        if not self._mmap:
            return native.SidecarSpans.from_file(doc_lengths, values, pointers, path)
        flat = (
            np.memmap(path, dtype=np.int32, mode="r").view(np.ndarray)
            if os.path.getsize(path)
            else np.zeros(0, np.int32)
        )  # int32 view of the whole .bin
        return native.SidecarSpans(doc_lengths, values, pointers, flat)

    def error(self, exc: ValueError, lexicon_path: Optional[str] = None) -> SidecarError:
        """A compiled lookup's ValueError as a SidecarError naming the files (and the fix when
        the sidecar belongs to other token files)."""
        hint = "; " + _fix_hint(self.token_prefix) if str(exc).startswith("span (") else ""
        lexicon = f" and lexicon {lexicon_path}" if lexicon_path else ""
        return SidecarError(
            f"{self.path_prefix}.{{bin,idx}} with {self.token_prefix}.{{bin,idx}}{lexicon}: {exc}{hint}"
        )

    def check_matches(
        self,
        token_dataset: IndexedDataset,
        *,
        lexicon_sha256: Optional[str] = None,
        tokenizer_fingerprint: Optional[str] = None,
    ) -> None:
        """Checks that read no span: same documents, same lengths, same token content, same
        lexicon and tokenizer.

        The token content is the size and sha256 of the token ``.bin`` recorded when the sidecar
        was written, checked by ``integrity.verify_content`` (digest recomputed for small files,
        once per file version for large ones given this sidecar's ``cache_dir``). A sidecar
        of version 1, which does not record it, is accepted with a warning (once per file).

        Raises:
            SidecarError: naming both files and how to rebuild them.
        """
        tok = f"{getattr(token_dataset, 'path_prefix', self.token_prefix)}.{{bin,idx}}"
        side = f"{self.path_prefix}.{{bin,idx,json}}"
        n_tok, n_side = len(token_dataset.sequence_lengths), len(self.dataset)
        if n_tok != n_side or self.meta.num_documents != n_tok:
            raise SidecarError(
                f"{side} has {n_side} documents (metadata: {self.meta.num_documents}) but {tok} has "
                f"{n_tok}; " + _fix_hint(self.token_prefix)
            )
        if lengths_digest(token_dataset.sequence_lengths) != self.meta.token_lengths_sha256:
            raise SidecarError(
                f"{side} was written for different documents than {tok} (document lengths differ); "
                + _fix_hint(self.token_prefix)
            )
        self._check_token_content(getattr(token_dataset, "path_prefix", self.token_prefix) + ".bin", tok, side)
        if lexicon_sha256 is not None and lexicon_sha256 != self.meta.lexicon_sha256:
            raise SidecarError(
                f"{side} was built with lexicon sha256 {self.meta.lexicon_sha256[:12]}…, the run uses "
                f"{lexicon_sha256[:12]}… ({tok}); " + _fix_hint(self.token_prefix)
            )
        if tokenizer_fingerprint is not None and tokenizer_fingerprint != self.meta.tokenizer_fingerprint:
            raise SidecarError(
                f"{side} was built with another tokenizer (fingerprint "
                f"{self.meta.tokenizer_fingerprint[:12]}…) than the one in use ({tokenizer_fingerprint[:12]}…); "
                + _fix_hint(self.token_prefix)
            )


    def _check_token_content(self, token_bin: str, tok: str, side: str) -> None:
        size, sha = self.meta.token_bin_size, self.meta.token_bin_sha256
        if size is None or sha is None:
            path = _meta_path(self.token_prefix)
            with _WARN_LOCK:
                first = path not in _OLD_SIDECARS_WARNED
                _OLD_SIDECARS_WARNED.add(path)
            if first:
                logger.warning(
                    "%s records no digest of %s: it is bound to the document lengths only, so a sidecar of "
                    "other tokens with the same lengths would pass; to bind it to the tokens, %s",
                    path, token_bin, _fix_hint(self.token_prefix))
            return
        verdict = verify_content(token_bin, size, sha, cache_dir=self.cache_dir)
        if verdict is False:
            raise SidecarError(
                f"{side} was written for other token content than {tok} (same document lengths, but the "
                f".bin differs from the one it indexes); " + _fix_hint(self.token_prefix)
            )


def validate_sidecar(
    token_prefix: str,
    *,
    lexicon: Optional[LexiconArrays] = None,
    lexicon_sha256: Optional[str] = None,
) -> SidecarMeta:
    """Full check of a sidecar against its token dataset (reads every span once).

    Besides `CodeSwitchSidecar.check_matches`: every document's value count is a multiple of 3;
    spans are sorted, non-overlapping, with ``start >= 0``, ``length > 0`` and
    ``start + length <= document length``; the span total matches the metadata; with ``lexicon``,
    entry ids are in range and each span's length equals its entry's token count.

    Returns:
        The sidecar metadata.

    Raises:
        SidecarError: on the first violation, naming both files and the fix.
    """
    side = CodeSwitchSidecar(token_prefix)
    tokens = open_token_dataset(token_prefix, allow_empty=True)
    side.check_matches(tokens, lexicon_sha256=lexicon_sha256)
    label = f"{side.path_prefix}.{{bin,idx}} (for {token_prefix}.{{bin,idx}})"

    sizes = side.dataset.sequence_lengths.astype(np.int64)  # (D,) int32 values per document
    if np.any(sizes % 3):
        bad = int(np.flatnonzero(sizes % 3)[0])
        raise SidecarError(f"{label}: document {bad} holds {sizes[bad]} values, not whole triples; " + _fix_hint(token_prefix))
    spans_per_doc = sizes // 3  # (D,)
    doc_lengths = tokens.sequence_lengths.astype(np.int64)  # (D,)
    entry_lengths = lexicon.entry_lengths() if lexicon is not None else None

    total = 0
    covered = 0
    doc = 0
    D = len(sizes)
    while doc < D:
        # A block of whole documents with about _VALIDATE_BLOCK_SPANS spans.
        end = doc + 1
        acc = spans_per_doc[doc]
        while end < D and acc + spans_per_doc[end] <= _VALIDATE_BLOCK_SPANS:
            acc += spans_per_doc[end]
            end += 1
        n_block = int(spans_per_doc[doc:end].sum())
        if n_block:
            flat = side.dataset.bin_reader.read(
                dtype=np.int32, count=3 * n_block, offset=int(side.dataset.index.sequence_pointers[doc])
            )
            s, l, e = (c.astype(np.int64) for c in decode_spans(flat))  # (N,) each
            owner = np.repeat(np.arange(doc, end), spans_per_doc[doc:end])  # (N,) document of span
            problems = {
                "start < 0": s < 0,
                "length <= 0": l <= 0,
                "span ends after its document": s + l > doc_lengths[owner],
            }
            same_doc = owner[1:] == owner[:-1]
            overlap = np.zeros(len(s), dtype=bool)
            overlap[1:] = same_doc & (s[1:] < s[:-1] + l[:-1])
            problems["spans unsorted or overlapping"] = overlap
            if lexicon is not None:
                in_range = (e >= 0) & (e < lexicon.num_entries)
                problems["entry id outside the lexicon"] = ~in_range
                mismatch = np.zeros(len(s), dtype=bool)
                mismatch[in_range] = entry_lengths[e[in_range]] != l[in_range]
                problems["span length differs from its entry's token count"] = mismatch
            for what, bad in problems.items():
                if np.any(bad):
                    i = int(np.flatnonzero(bad)[0])
                    raise SidecarError(
                        f"{label}: document {int(owner[i])}, span {(int(s[i]), int(l[i]), int(e[i]))}: "
                        f"{what}; " + _fix_hint(token_prefix)
                    )
            total += n_block
            covered += int(l.sum())
        doc = end
    if total != side.meta.num_spans or covered != side.meta.num_span_tokens:
        raise SidecarError(
            f"{label}: holds {total} spans / {covered} span tokens but its metadata says "
            f"{side.meta.num_spans} / {side.meta.num_span_tokens}; " + _fix_hint(token_prefix)
        )
    return side.meta
