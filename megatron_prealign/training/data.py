"""Pretraining data for the trainer: blended CodeSwitchGPTDatasets, a resumable sampler, and
the per-rank microbatch iterators.

Stages: `--data-path` prefixes (.bin/.idx [+ code-switch sidecar]) -> megatron-core's
BlendedMegatronDatasetBuilder(CodeSwitchGPTDataset), which opens each prefix through
`megatron_prealign.data.integrity.open_token_dataset` -> `ResumableBatchSampler` (starts at
`consumed_samples`, this data-parallel rank's share of each global batch) -> DataLoader ->
microbatch dicts {tokens, labels (int64 [b, s]), loss_mask (float32 [b, s]), position_ids,
cs_* switch statistics (int64 [b])}.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from megatron_prealign.log import get_logger
from megatron_prealign.preemption import deferred_preemption_signals
from megatron_prealign.training.config import DataConfig, split_proportions

SPLIT_PARTS = ("train", "valid", "test")

logger = get_logger(__name__)


def check_prefixes_exist(prefixes: list[str], flag: str = "--data-path") -> None:
    """Each prefix's .bin and .idx exist and are files.

    Raises:
        DataError: naming the flag, the file and what to do.
    """
    from megatron_prealign.data.integrity import check_dataset_files

    for prefix in prefixes:
        check_dataset_files(prefix, flag=flag)


def check_datasets(cfg: DataConfig, tokenizer) -> None:
    """What can be told about every prefix of the run from headers and sizes alone (files
    present and complete, not an interrupted write, the run's tokenizer, documents in it), so a
    bad --data-path stops the run before the model is built or the pre-pass runs, on every rank
    alike. The checks that read whole files run when the datasets are built.

    Raises:
        DataError: the first problem, naming the file and the fix.
    """
    from megatron_prealign.data.integrity import open_token_dataset

    for prefix in dict.fromkeys(cfg.prefixes()):
        open_token_dataset(prefix, tokenizer=tokenizer, verify=False, flag="--data-path")


def build_datasets(cfg: DataConfig, tokenizer, *, seq_length: int, seed: int, num_samples: list[int],
                   is_built_on_rank, codeswitch_exclude=(), vocab_size: int | None = None) -> list:
    """[train, valid, test] CodeSwitchGPTDatasets (blended when several prefixes);
    `codeswitch_exclude`: lexicon entries never switched (the pre-pass's held-out words);
    `vocab_size`: the model's vocabulary, which every token id must be below (None: the
    tokenizer's)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    from megatron_prealign.data import CodeSwitchGPTDataset, CodeSwitchGPTDatasetConfig

    per_split = cfg.blend_per_split()
    check_prefixes_exist(cfg.prefixes())
    if not per_split:
        check_split_documents(cfg.blend()[0], cfg.split, num_samples)
    ds_cfg = CodeSwitchGPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        **({"blend_per_split": per_split} if per_split else {"blend": cfg.blend(), "split": cfg.split}),
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
        path_to_cache=cfg.data_cache_path,
        mmap_bin_files=True,
        codeswitch_ratio=cfg.codeswitch_ratio,
        codeswitch_seed=cfg.codeswitch_seed,  # None: random_seed, i.e. --seed
        lexicon_path=cfg.lexicon,
        codeswitch_exclude=tuple(int(e) for e in codeswitch_exclude),
        model_vocab_size=vocab_size,
    )
    return BlendedMegatronDatasetBuilder(CodeSwitchGPTDataset, num_samples, is_built_on_rank, ds_cfg).build()


def split_documents(num_documents: int, split: str, part: str) -> range:
    """Document indices of `part` (train, valid or test) of a prefix with `num_documents`
    documents under pretraining's `--split` string, exactly as megatron-core's dataset builder
    cuts them.

    Raises:
        ValueError: a malformed `--split` or an unknown part.
    """
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix, parse_and_normalize_split)

    if part not in SPLIT_PARTS:
        raise ValueError(f"unknown split part {part!r}: expected one of {', '.join(SPLIT_PARTS)}")
    split_proportions(split)  # the one-line error for a malformed --split
    bounds = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))[SPLIT_PARTS.index(part)]
    if bounds is None:
        return range(0)
    # megatron-core's BlendedMegatronDatasetBuilder._build_megatron_dataset_splits cuts this way.
    return range(int(round(bounds[0] * float(num_documents))), int(round(bounds[1] * float(num_documents))))


def check_split_documents(prefixes: list[str], split: str, num_samples: list[int]) -> None:
    """Refuse a `--split` that leaves a requested split of some prefix without documents.

    megatron-core would build that split anyway and count epochs of zero tokens until it has the
    requested samples, i.e. forever; a small corpus with the default 969,30,1 gets there (its
    test share rounds to no document).

    Raises:
        DataError: naming the prefix, its document count, the split and the fix.
    """
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_prealign.data.integrity import DataError
    for prefix in dict.fromkeys(prefixes):
        documents = None
        for part, samples, share in zip(SPLIT_PARTS, num_samples, split_proportions(split)):
            if not samples or share <= 0:
                continue
            if documents is None:
                if os.path.getsize(prefix + ".bin") == 0:
                    break  # an empty dataset: opening it names that problem
                documents = len(IndexedDataset(prefix, mmap=True).document_indices) - 1
            if not len(split_documents(documents, split, part)):
                raise DataError(f"--split {split} leaves the {part} split of {prefix} ({documents} documents) "
                                f"without a document: give it a larger {part} share (e.g. --split 90,5,5), more "
                                f"documents, or --eval-iters 0 when no evaluation is wanted")


class ResumableBatchSampler:
    """Megatron's pretraining order: global batches of consecutive sample indices starting at
    `consumed_samples`; each data-parallel rank takes its `micro_batch_size` slice of every
    `micro_batch_size * dp_size` chunk. A pure function of (consumed_samples, layout), so a
    resumed run reads exactly the samples the uninterrupted run would have read."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 dp_rank: int, dp_size: int):
        if total_samples <= 0:
            raise ValueError("dataset has no samples")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size

    def __iter__(self) -> Iterator[list[int]]:
        chunk = self.micro_batch_size * self.dp_size
        start = self.consumed_samples
        while start + chunk <= self.total_samples:
            first = start + self.dp_rank * self.micro_batch_size
            yield list(range(first, first + self.micro_batch_size))
            start += chunk

    def __len__(self) -> int:
        return (self.total_samples - self.consumed_samples) // (self.micro_batch_size * self.dp_size)


def build_loader(dataset, *, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int,
                 num_workers: int) -> Iterator[dict]:
    """An iterator of this rank's microbatches (None dataset -> None, for ranks that read no data)."""
    if dataset is None:
        return None
    sampler = ResumableBatchSampler(len(dataset), consumed_samples, micro_batch_size, dp_rank, dp_size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         pin_memory=False)
    with deferred_preemption_signals():  # workers must survive Slurm's SIGTERM to the whole step
        return iter(loader)


@dataclass
class SwitchCounter:
    """Running totals of the code-switch statistics of the batches a rank consumed."""

    switched_words: int = 0
    eligible_words: int = 0
    switched_tokens: int = 0
    tokens: int = 0
    checksum: int = 0
    """Position-weighted sum of the input tokens (mod 2^31), to check two runs read the same samples."""
    data_wait_seconds: float = 0.0
    """Time this rank's training loop waited for microbatches (the data pipeline's share of
    the critical path, like Megatron-LM's batch-generator timer); local, never all-reduced."""

    def observe(self, batch: dict) -> None:
        self.switched_words += int(batch.get("cs_switched_words", torch.zeros(1)).sum())
        self.eligible_words += int(batch.get("cs_eligible_words", torch.zeros(1)).sum())
        self.switched_tokens += int(batch.get("cs_switched_tokens", torch.zeros(1)).sum())
        tokens = batch["tokens"].long()
        self.tokens += int(tokens.numel())
        weights = torch.arange(1, tokens.shape[-1] + 1, dtype=torch.long)
        self.checksum = (self.checksum + int((tokens * weights).sum())) % 2**31

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.switched_words, self.eligible_words, self.switched_tokens, self.tokens,
                             self.checksum], dtype=torch.float64)

    def reset(self) -> None:
        self.switched_words = self.eligible_words = self.switched_tokens = self.tokens = self.checksum = 0
        self.data_wait_seconds = 0.0


def counting(iterator: Iterator[dict] | None, counter: SwitchCounter) -> Iterator[dict] | None:
    """Pass microbatches through while adding their switch statistics, and the time spent
    waiting for them, to `counter`."""
    if iterator is None:
        return None

    def gen():
        source = iter(iterator)
        while True:
            start = time.perf_counter()
            try:
                batch = next(source)
            except StopIteration:
                return
            counter.data_wait_seconds += time.perf_counter() - start
            counter.observe(batch)
            yield batch

    return gen()


def dataset_name(dataset) -> str:
    """Short display name of a (component) dataset: its prefix's file name."""
    prefix = getattr(dataset, "dataset_path", None) or getattr(getattr(dataset, "dataset", None), "path_prefix", "")
    return Path(str(prefix)).name or type(dataset).__name__
