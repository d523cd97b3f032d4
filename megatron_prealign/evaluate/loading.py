"""Loading any checkpoint for evaluation: a one-process world and a bare model at TP=PP=1.

Checkpoints are layout-independent (checkpointing.py), so a model trained at any TP/PP layout
is evaluated here as a single unsplit GPTModel.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_prealign.distributed import free_port, single_process_world
from megatron_prealign.log import get_logger

__all__ = ["LoadedModel", "free_port", "load_model", "single_process_group"]

logger = get_logger(__name__)


# A world of one for evaluation tools; the one definition lives with the other process-group code.
single_process_group = single_process_world


@dataclass
class LoadedModel:
    model: Any
    """Bare megatron-core GPTModel in eval mode."""
    config: Any
    """Its ModelConfig."""
    meta: dict[str, Any]
    """The checkpoint's prealign_state.json."""
    path: Path
    """The checkpoint directory that was read."""

    @property
    def iteration(self) -> int:
        return int(self.meta.get("iteration") or 0)


def load_model(checkpoint: str | os.PathLike, pg_collection) -> LoadedModel:
    """Build the checkpoint's architecture (from its ``prealign_state.json``) and load its weights.

    Args:
        checkpoint: a checkpoint root (with ``latest_checkpointed_iteration.txt``) or one
            checkpoint directory.
        pg_collection: from `single_process_group`.
    """
    from megatron_prealign.checkpointing import CheckpointError, load_checkpoint, read_checkpoint_state
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import ModelConfig, build_model

    path, meta = read_checkpoint_state(checkpoint)
    saved = meta.get("model")
    if not saved:
        raise CheckpointError(f"{path}: prealign_state.json has no 'model' section; cannot rebuild the architecture")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    config = ModelConfig(**{k: v for k, v in saved.items() if k in names})
    model = build_model(config, ParallelConfig(), pg_collection)
    load_checkpoint(path, model=model)
    model.eval()
    return LoadedModel(model=model, config=config, meta=meta, path=path)
