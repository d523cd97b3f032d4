"""Which documents of a token dataset a checkpoint's run trained on, and which ones an
evaluation measures.

Pretraining's `--data-path` blend is split per prefix by megatron-core's builder: with `--split
969,30,1` documents ``[0, round(.969 n))`` train, the next ``round(.999 n) - ...`` validate and the
rest test, in file order (`split_documents` asks megatron-core for the split's bounds and cuts
them the way its builder does). With `--train-data-path` a prefix is wholly training data and
`--valid-data-path` / `--test-data-path` prefixes wholly not. `heldout_status` compares the
documents an evaluation measures with that, from the run config the checkpoint stores
(``prealign_state.json``'s ``config.data``), and answers yes, no or unknown, with why.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

__all__ = ["PARTS", "heldout_status", "parse_document_range", "split_documents"]

PARTS = ("train", "valid", "test")


def split_documents(num_documents: int, split: str, part: str) -> range:
    """Document indices of `part` (train, valid or test) of a prefix with `num_documents`
    documents under pretraining's `--split` string, exactly as megatron-core's dataset builder
    cuts them.

    Raises:
        ValueError: a malformed `--split` or an unknown part.
    """
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix, parse_and_normalize_split)

    from megatron_prealign.training.config import split_proportions

    if part not in PARTS:
        raise ValueError(f"unknown split part {part!r}: expected one of {', '.join(PARTS)}")
    split_proportions(split)  # the one-line error for a malformed --split
    bounds = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))[PARTS.index(part)]
    if bounds is None:
        return range(0)
    # megatron-core's BlendedMegatronDatasetBuilder._build_megatron_dataset_splits cuts this way.
    return range(int(round(bounds[0] * float(num_documents))), int(round(bounds[1] * float(num_documents))))


def parse_document_range(text: str, flag: str = "--documents") -> range:
    """``A:B`` -> ``range(A, B)`` (document indices, B exclusive, A < B)."""
    start, sep, stop = text.partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        first = last = -1
    if not sep or first < 0 or last <= first:
        raise ValueError(f"{flag} {text!r}: expected FIRST:END document indices, 0 <= FIRST < END (END exclusive)")
    return range(first, last)


def _same_prefix(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _prefixes(items: Sequence[str] | None) -> list[str]:
    """Prefixes of a `--data-path`-style list (pretraining's ``W1 P1 W2 P2 ...`` or plain)."""
    from megatron_prealign.evaluate.perplexity import parse_data_paths

    return [prefix for _, prefix in parse_data_paths(list(items or []))]


def trained_documents(prefix: str, num_documents: int, run_data: dict[str, Any] | None) -> range | None:
    """The documents of `prefix` the run with data config `run_data` trained on (a range,
    possibly empty), or None when that cannot be told (no run config, or `prefix` is not one
    of the run's datasets)."""
    if not run_data:
        return None
    if run_data.get("data_path"):
        if any(_same_prefix(prefix, p) for p in _prefixes(run_data["data_path"])):
            return split_documents(num_documents, run_data.get("split") or "969,30,1", "train")
        return None
    if any(_same_prefix(prefix, p) for p in _prefixes(run_data.get("train_data_path"))):
        return range(num_documents)
    for key in ("valid_data_path", "test_data_path"):
        if any(_same_prefix(prefix, p) for p in _prefixes(run_data.get(key))):
            return range(0)
    return None


def heldout_status(prefix: str, documents: range, num_documents: int,
                   run_data: dict[str, Any] | None) -> tuple[str, str]:
    """("yes" | "no" | "unknown", why) for measuring `documents` of `prefix` on a checkpoint
    whose run config's data section is `run_data`."""
    if not run_data:
        return "unknown", "the checkpoint records no run config"
    trained = trained_documents(prefix, num_documents, run_data)
    if trained is None:
        return "unknown", "not one of the run's datasets; its text may still overlap the training data"
    overlap = max(0, min(documents.stop, trained.stop) - max(documents.start, trained.start))
    if overlap == 0:
        return "yes", (f"documents {documents.start}:{documents.stop} of {num_documents}; the run trained on "
                       + (f"{trained.start}:{trained.stop}" if len(trained) else "none of them"))
    return "no", (f"{overlap} of the {len(documents)} documents measured are in the run's training part "
                  f"{trained.start}:{trained.stop}")
