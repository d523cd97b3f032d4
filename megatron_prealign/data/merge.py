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

Code-switch sidecars (``<prefix>_codeswitch.{bin,idx,json}``): either every input has one or none
does. All of them must come from the same lexicon and tokenizer (their metadata records both),
and each must belong to its token dataset; the merged sidecar is written next to the merged
tokens. Every output is written under a temporary name and renamed when the whole merge
succeeded.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data.sidecar import (
    CodeSwitchSidecar,
    SidecarMeta,
    SidecarWriter,
    sidecar_prefix,
)
from megatron_prealign.fileio import atomic_path
from megatron_prealign.log import get_logger

__all__ = ["MergeError", "MergeSummary", "inspect_inputs", "merge_datasets", "resolve_inputs"]

logger = get_logger(__name__)

_SIDECAR_FILES = (".bin", ".idx", ".json")


class MergeError(ValueError):
    """The inputs cannot be merged (missing files, mixed dtypes, lexicons or tokenizers)."""


@dataclass(frozen=True)
class _Shard:
    prefix: str
    dtype: type
    num_documents: int
    sidecar: Optional[SidecarMeta]


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
        MergeError: different token dtypes; sidecars on some inputs only or incomplete; sidecars
            from different lexicons or tokenizers.
        SidecarError: a sidecar that does not belong to its token dataset.
    """
    shards = []
    for prefix in prefixes:
        # mmap=False: an empty shard has an empty .bin, which cannot be memory-mapped.
        tokens = IndexedDataset(prefix, mmap=False)
        present = _has_sidecar_files(prefix)
        meta = None
        if all(present):
            side = CodeSwitchSidecar(prefix, mmap=False)
            side.check_matches(tokens)
            meta = side.meta
        elif any(present):
            missing = [sidecar_prefix(prefix) + s for s, p in zip(_SIDECAR_FILES, present) if not p]
            raise MergeError(f"incomplete code-switch sidecar for {prefix}: missing {', '.join(missing)}")
        shards.append(_Shard(prefix, tokens.index.dtype, len(tokens.sequence_lengths), meta))

    first = shards[0]
    for shard in shards[1:]:
        if shard.dtype != first.dtype:
            raise MergeError(
                f"{shard.prefix} holds {np.dtype(shard.dtype).name} tokens but {first.prefix} holds "
                f"{np.dtype(first.dtype).name}: they were written for vocabularies of different sizes"
            )
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


def merge_datasets(inputs: Sequence[str], output_prefix: str) -> MergeSummary:
    """Merge the datasets ``inputs`` (prefixes or directories) into ``output_prefix``.

    Raises:
        MergeError: see `inspect_inputs`; also an output that is one of the inputs.
        SidecarError: a sidecar that does not belong to its token dataset.
    """
    prefixes = resolve_inputs(inputs)
    outputs = [output_prefix + ".bin", output_prefix + ".idx"]
    for prefix in prefixes:
        if os.path.realpath(prefix) == os.path.realpath(output_prefix):
            raise MergeError(f"--output-prefix {output_prefix} is also an input")
    shards = inspect_inputs(prefixes)
    with_sidecar = shards[0].sidecar is not None
    if with_sidecar:
        outputs += [sidecar_prefix(output_prefix) + s for s in _SIDECAR_FILES]

    with contextlib.ExitStack() as stack:
        tmp = {final: str(stack.enter_context(atomic_path(final))) for final in outputs}
        tokens = IndexedDatasetBuilder(tmp[output_prefix + ".bin"], dtype=shards[0].dtype)
        side_out = sidecar_prefix(output_prefix)
        spans = SidecarWriter(tmp[side_out + ".bin"]) if with_sidecar else None
        for shard in shards:
            if shard.num_documents == 0:
                continue  # contributes nothing (and an empty .bin cannot be memory-mapped)
            tokens.add_index(shard.prefix)
            if spans is not None:
                spans.add_index(sidecar_prefix(shard.prefix), shard.sidecar.num_spans, shard.sidecar.num_span_tokens)
        tokens.finalize(tmp[output_prefix + ".idx"])
        lengths = np.asarray(tokens.sequence_lengths, dtype=np.int32)  # (D,)
        if spans is not None:
            spans.finalize(tmp[side_out + ".idx"])
            first = shards[0].sidecar
            spans.make_meta(
                lengths, lexicon_sha256=first.lexicon_sha256, tokenizer_fingerprint=first.tokenizer_fingerprint
            ).write(tmp[side_out + ".json"])
    summary = MergeSummary(
        output_prefix=output_prefix,
        inputs=len(shards),
        documents=len(lengths),
        tokens=int(lengths.sum(dtype=np.int64)),
        spans=spans.num_spans if spans is not None else None,
    )
    logger.info(
        "merged %d datasets: %d documents, %d tokens%s -> %s.{bin,idx}%s",
        summary.inputs, summary.documents, summary.tokens,
        f", {summary.spans} switch spans" if with_sidecar else "", output_prefix,
        f" + {side_out}.{{bin,idx,json}}" if with_sidecar else "",
    )
    return summary

