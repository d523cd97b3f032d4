"""Merge token datasets (megatron-core IndexedDataset) into one, code-switch sidecars included.

    merge_datasets(["data/shards/shard_00000_text_document", "data/shards/shard_00001_text_document"],
                   "data/corpus_text_document")
    merge_datasets(["data/shards"], "data/corpus_text_document")

(``tools/merge_datasets.py --input ... --output-prefix ...`` is its command line.) Each input is a
prefix of ``<prefix>.{bin,idx}``, or a directory standing for every token dataset in it, sorted
by file name. Documents are concatenated in input order with megatron-core's
``IndexedDatasetBuilder.add_index``, so the per-shard outputs of `preprocess` (e.g. from
``examples/slurm/preprocess_array.sbatch``) merge into the same bytes as one `preprocess` run
over the concatenated shards.

Every input is opened through ``integrity.open_token_dataset`` (files present and complete, the
``.bin`` of the size its ``.idx`` describes, files as their manifest recorded them) and all of
them must record the same tokenizer in their manifests (``<prefix>.json``); datasets without a
manifest (e.g. from Megatron-LM's own tool) merge only with each other. Each input's ``.bin`` is
checked against the digest its manifest (or sidecar) recorded while it is copied, so a shard
whose content changed is refused without an extra read.

Code-switch sidecars (``<prefix>_codeswitch.{bin,idx,json}``): either every input has one or none
does. All of them must come from the same lexicon and tokenizer (their metadata records both),
and each must belong to its token dataset; the merged sidecar is written next to the merged
tokens. Every output is written under a temporary name and committed with its manifest by
``integrity.commit`` when the whole merge succeeded; temporaries of an earlier, killed merge
into the same prefix are removed first.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_prealign.data.integrity import (
    DataError,
    DatasetManifest,
    check_output_dir,
    commit,
    hash_builder_output,
    open_token_dataset,
    output_error,
    read_manifest,
    staged_file_entry,
)
from megatron_prealign.data.sidecar import (
    SIDECAR_FILES,
    CodeSwitchSidecar,
    SidecarMeta,
    SidecarWriter,
    sidecar_prefix,
)
from megatron_prealign.fileio import remove_path, remove_stale_temporaries, tmp_name
from megatron_prealign.log import get_logger

__all__ = ["MergeError", "MergeSummary", "inspect_inputs", "merge_datasets", "resolve_inputs"]

logger = get_logger(__name__)

_SIDECAR_FILES = (".bin", ".idx", ".json")


class MergeError(DataError):
    """The inputs cannot be merged (missing files, mixed dtypes, lexicons or tokenizers)."""


@dataclass(frozen=True)
class _Shard:
    prefix: str
    dtype: type
    num_documents: int
    sidecar: Optional[SidecarMeta]
    manifest: Optional[DatasetManifest] = None
    bin_sha256: Optional[str] = None
    """What the shard's .bin must hash to (recorded by its manifest or sidecar), or None."""


@dataclass
class MergeSummary:
    """What `merge_datasets` wrote."""

    output_prefix: str
    """The merged dataset's prefix."""
    inputs: int
    """Datasets merged (after expanding directories)."""
    documents: int
    """Documents of the merged dataset."""
    tokens: int
    """Tokens of the merged dataset."""
    spans: Optional[int]
    """Switch spans of the merged sidecar; None when the inputs have no sidecars."""


def _strip_suffix(path: str) -> str:
    for suffix in (".bin", ".idx"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _datasets_in(directory: str) -> List[str]:
    """Token dataset prefixes in ``directory``, by name; sidecars of those datasets are skipped."""
    names = sorted(n[: -len(".idx")] for n in os.listdir(directory) if n.endswith(".idx"))
    present = set(names)
    prefixes = []
    for name in names:
        if name.endswith("_codeswitch") and name[: -len("_codeswitch")] in present:
            continue
        prefixes.append(os.path.join(directory, name))
    if not prefixes:
        raise MergeError(f"--input {directory}: no *.idx datasets in this directory")
    return prefixes


def resolve_inputs(inputs: Sequence[str]) -> List[str]:
    """Expand directories and check that every prefix has its ``.bin`` and ``.idx``."""
    prefixes: List[str] = []
    for item in inputs:
        prefixes.extend(_datasets_in(item) if os.path.isdir(item) else [_strip_suffix(item)])
    seen = set()
    for prefix in prefixes:
        missing = [prefix + s for s in (".bin", ".idx") if not os.path.isfile(prefix + s)]
        if missing:
            raise MergeError(f"input dataset {prefix}: missing {', '.join(missing)}")
        key = os.path.realpath(prefix)
        if key in seen:
            raise MergeError(f"input dataset {prefix} is given twice")
        seen.add(key)
    return prefixes


def _has_sidecar_files(prefix: str) -> List[bool]:
    side = sidecar_prefix(prefix)
    return [os.path.isfile(side + s) for s in _SIDECAR_FILES]


def inspect_inputs(prefixes: Sequence[str]) -> List[_Shard]:
    """Read every input's index (and sidecar metadata) and check that they can be merged.

    Raises:
        MergeError: different token dtypes or tokenizers; sidecars on some inputs only or
            incomplete; sidecars from different lexicons or tokenizers.
        DataError: an input that is not a complete, consistent dataset (``integrity``).
        SidecarError: a sidecar that does not belong to its token dataset.
    """
    shards = []
    for prefix in prefixes:
        # mmap=False: the shards are only copied; an empty shard takes part.
        tokens = open_token_dataset(prefix, mmap=False, allow_empty=True, flag="--input")
        manifest = read_manifest(prefix)
        present = _has_sidecar_files(prefix)
        meta = None
        if all(present):
            side = CodeSwitchSidecar(prefix, mmap=False)
            side.check_matches(tokens)
            meta = side.meta
        elif any(present):
            missing = [sidecar_prefix(prefix) + s for s, p in zip(_SIDECAR_FILES, present) if not p]
            raise MergeError(f"incomplete code-switch sidecar for {prefix}: missing {', '.join(missing)}")
        recorded = {d for d in ((manifest.files.get(".bin") or {}).get("sha256") if manifest else None,
                                meta.token_bin_sha256 if meta else None) if d}
        if len(recorded) > 1:
            raise MergeError(f"{sidecar_prefix(prefix)}.json and {prefix}.json record different token content "
                             f"for {prefix}.bin: the sidecar belongs to other tokens; re-run tools/preprocess_data.py "
                             f"for this shard")
        shards.append(_Shard(prefix, tokens.index.dtype, len(tokens.sequence_lengths), meta, manifest,
                             next(iter(recorded), None)))

    first = shards[0]
    for shard in shards[1:]:
        if shard.dtype != first.dtype:
            raise MergeError(
                f"{shard.prefix} holds {np.dtype(shard.dtype).name} tokens but {first.prefix} holds "
                f"{np.dtype(first.dtype).name}: they were written for vocabularies of different sizes"
            )
    _check_same_tokenizer(shards)
    with_sidecar = [s.prefix for s in shards if s.sidecar is not None]
    if with_sidecar and len(with_sidecar) != len(shards):
        without = [s.prefix for s in shards if s.sidecar is None]
        raise MergeError(
            f"{len(with_sidecar)} inputs have code-switch sidecars and {len(without)} do not "
            f"(e.g. {without[0]}); preprocess every shard with the same --lexicon"
        )
    if with_sidecar:
        for shard in shards[1:]:
            for field, what in (("lexicon_sha256", "lexicon"), ("tokenizer_fingerprint", "tokenizer")):
                ours, theirs = getattr(shard.sidecar, field), getattr(first.sidecar, field)
                if ours != theirs:
                    raise MergeError(
                        f"{sidecar_prefix(shard.prefix)}.json was written with another {what} than "
                        f"{sidecar_prefix(first.prefix)}.json ({field} {ours[:12]}... vs {theirs[:12]}...); "
                        f"preprocess every shard with the same --tokenizer-model and --lexicon"
                    )
    return shards


def _check_same_tokenizer(shards: Sequence[_Shard]) -> None:
    known = [s for s in shards if s.manifest is not None and s.manifest.tokenizer_fingerprint]
    if not known:
        return
    first = known[0]
    unknown = [s.prefix for s in shards if s.manifest is None or not s.manifest.tokenizer_fingerprint]
    if unknown:
        raise MergeError(
            f"{first.prefix}.json records its tokenizer ({first.manifest.tokenizer_label()}) but {unknown[0]} "
            f"records none, so nothing says they share a tokenizer; preprocess {unknown[0]} again with "
            f"tools/preprocess_data.py and the same --tokenizer-model"
        )
    for shard in known[1:]:
        if shard.manifest.tokenizer_fingerprint != first.manifest.tokenizer_fingerprint:
            raise MergeError(
                f"{shard.prefix}.json was written with another tokenizer than {first.prefix}.json "
                f"({shard.manifest.tokenizer_label()} vs {first.manifest.tokenizer_label()}); preprocess every "
                f"shard with the same --tokenizer-type and --tokenizer-model"
            )


def _append_shard(builder: Any, shard: _Shard) -> None:
    """``builder.add_index(shard.prefix)``, hashing the shard's ``.bin`` while it is copied and
    refusing it when that differs from the digest recorded for it (the one read of the file
    doubles as its verification, however large it is)."""
    tokens = open_token_dataset(shard.prefix, mmap=False, allow_empty=True, verify=False)
    offset = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(tokens.sequence_lengths.tolist())
    builder.document_indices.extend((offset + np.asarray(tokens.document_indices[1:], dtype=np.int64)).tolist())
    del tokens
    sha = hashlib.sha256()
    path = shard.prefix + ".bin"
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            sha.update(chunk)
            builder.data_file.write(chunk)
    if shard.bin_sha256 is not None and sha.hexdigest() != shard.bin_sha256:
        raise MergeError(f"{path} changed after it was written (its sha256 differs from the one its manifest "
                         f"recorded); re-run tools/preprocess_data.py for this shard")


def _merged_manifest(shards: Sequence[_Shard], num_documents: int, num_tokens: int, files: dict) -> DatasetManifest:
    identity = next((s.manifest for s in shards if s.manifest is not None), None)
    fields = ("tokenizer_fingerprint", "tokenizer_type", "tokenizer_model", "vocab_size")
    return DatasetManifest(**{f: getattr(identity, f) if identity is not None else None for f in fields},
                           num_documents=num_documents, num_tokens=num_tokens, files=files)


def merge_datasets(inputs: Sequence[str], output_prefix: str) -> MergeSummary:
    """Merge the datasets ``inputs`` (prefixes or directories) into ``output_prefix``.

    Raises:
        MergeError: see `inspect_inputs`; also an output that is one of the inputs.
        DataError: an input that is not a complete, consistent dataset; an output directory that
            cannot be written.
        SidecarError: a sidecar that does not belong to its token dataset.
    """
    prefixes = resolve_inputs(inputs)
    for prefix in prefixes:
        if os.path.realpath(prefix) == os.path.realpath(output_prefix):
            raise MergeError(f"--output-prefix {output_prefix} is also an input")
    shards = inspect_inputs(prefixes)
    check_output_dir(output_prefix)
    try:
        summary = _write_merged(shards, output_prefix)
    except OSError as exc:
        problem = output_error(exc, output_prefix)
        if problem is not None:
            raise problem from exc
        raise
    with_sidecar = summary.spans is not None
    logger.info(
        "merged %d datasets: %d documents, %d tokens%s -> %s.{bin,idx}%s",
        summary.inputs, summary.documents, summary.tokens,
        f", {summary.spans} switch spans" if with_sidecar else "", output_prefix,
        f" + {sidecar_prefix(output_prefix)}.{{bin,idx,json}}" if with_sidecar else "",
    )
    return summary


def _write_merged(shards: Sequence[_Shard], output_prefix: str) -> MergeSummary:
    """Stage the merged files beside their final names and commit them with their manifest."""
    outputs = [output_prefix + ".bin", output_prefix + ".idx"]
    with_sidecar = shards[0].sidecar is not None
    if with_sidecar:
        outputs += [output_prefix + s for s in SIDECAR_FILES]
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    for stale in remove_stale_temporaries([output_prefix + s for s in (".bin", ".idx", ".json", *SIDECAR_FILES)]):
        logger.info("removed %s, left by an interrupted merge", stale)
    tmp = {final: str(tmp_name(final)) for final in outputs}
    with contextlib.ExitStack() as stack:
        # Whatever is still staged when the block ends (all of it on failure) is removed.
        stack.callback(lambda: [remove_path(p) for p in tmp.values()])
        tokens = IndexedDatasetBuilder(tmp[output_prefix + ".bin"], dtype=shards[0].dtype)
        tokens_hash = hash_builder_output(tokens)
        side_out = sidecar_prefix(output_prefix)
        spans = SidecarWriter(tmp[side_out + ".bin"]) if with_sidecar else None
        for shard in shards:
            if shard.num_documents == 0:
                continue  # contributes nothing (and an empty .bin cannot be memory-mapped)
            _append_shard(tokens, shard)
            if spans is not None:
                spans.add_index(sidecar_prefix(shard.prefix), shard.sidecar.num_spans, shard.sidecar.num_span_tokens)
        tokens.finalize(tmp[output_prefix + ".idx"])
        lengths = np.asarray(tokens.sequence_lengths, dtype=np.int32)  # (D,)
        files = {".bin": staged_file_entry(tmp[output_prefix + ".bin"], tokens_hash),
                 ".idx": staged_file_entry(tmp[output_prefix + ".idx"])}
        if spans is not None:
            spans.finalize(tmp[side_out + ".idx"])
            first = shards[0].sidecar
            spans.make_meta(
                lengths, lexicon_sha256=first.lexicon_sha256, tokenizer_fingerprint=first.tokenizer_fingerprint,
                token_bin_size=files[".bin"]["size"], token_bin_sha256=files[".bin"]["sha256"],
            ).write(tmp[side_out + ".json"])
            for suffix in SIDECAR_FILES:
                files[suffix] = staged_file_entry(tmp[output_prefix + suffix],
                                                  spans.bin_hash if suffix.endswith(".bin") else None)
        num_tokens = int(lengths.sum(dtype=np.int64))
        commit([(tmp[final], final) for final in outputs], output_prefix,
               _merged_manifest(shards, len(lengths), num_tokens, files))
    return MergeSummary(output_prefix=output_prefix, inputs=len(shards), documents=len(lengths), tokens=num_tokens,
                        spans=spans.num_spans if spans is not None else None)
