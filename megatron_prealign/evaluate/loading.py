"""Loading any checkpoint for evaluation: a one-process world and a bare model at TP=PP=1.

Checkpoints are layout-independent (checkpointing.py), so a model trained at any TP/PP layout
is evaluated here as a single unsplit GPTModel.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch.distributed as dist

from megatron_prealign.log import get_logger

__all__ = ["LoadedModel", "free_port", "load_model", "single_process_group"]

logger = get_logger(__name__)


def free_port() -> int:
    """A TCP port that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def single_process_group(seed: int = 1234) -> Iterator[Any]:
    """Yield megatron-core's ProcessGroupCollection of a world of one (gloo on CPU).

    If a process group already exists (e.g. inside a test or a trainer), its model-parallel
    groups are reused and nothing is torn down afterwards.
    """
    from megatron.core.process_groups_config import ProcessGroupCollection

    from megatron_prealign.distributed import ParallelConfig, destroy_distributed, init_distributed

    if dist.is_initialized():
        yield ProcessGroupCollection.use_mpu_process_groups()
        return
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    pgs = init_distributed(ParallelConfig(), seed, environ=env)
    try:
        yield pgs
    finally:
        destroy_distributed()


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
    from megatron_prealign.distributed import ParallelConfig
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
