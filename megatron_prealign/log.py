"""Rank-aware logging: one voice (rank 0) by default, every rank on request."""
from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    """Return a package logger. The first call for a top-level package (``megatron_prealign``, or
    an application built on it) gives that package a stderr handler unless the application already
    configured logging (root handlers); records always propagate, so an application's or pytest's
    handlers see them too."""
    package = logging.getLogger(name.partition(".")[0])
    if not getattr(package, "_prealign_configured", False):
        package._prealign_configured = True
        package.setLevel(os.environ.get("PREALIGN_LOG_LEVEL", "INFO"))
        if not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
            package.addHandler(handler)
    return logging.getLogger(name)


def global_rank() -> int:
    """Rank in the default process group, or the launcher's RANK before init; 0 when single."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def log_rank0(logger: logging.Logger, msg: str, *args, level: int = logging.INFO) -> None:
    """Log only on global rank 0 so a 512-rank job prints each line once."""
    if global_rank() == 0:
        logger.log(level, msg, *args)


def quiet_optional_accelerator_warnings() -> None:
    """Silence megatron-core's import-time notices that TransformerEngine/Apex are absent (it
    falls back to torch, which is what a CPU or TE-less machine wants), the deprecation notices
    torch's checkpoint reader prints on every load, and megatron-core's note that a blend's
    small index is not cached, so a run's log starts with our own lines and a real warning
    stands out. Entry points call this before importing megatron-core; library code does not."""
    import warnings

    for message in (r"Transformer Engine and Apex are not installed", r"Apex is not installed",
                    r"The following imports from `dynamic_context.py`", r"`torch.jit.script_method` is deprecated",
                    r"full scope is deprecated"):  # megatron-core's own default for cuda_graph_scope
        warnings.filterwarnings("ignore", message=message)
    for message in (r"`load_state_dict` is deprecated", r"Please use DTensor instead and we are deprecating "
                    r"ShardedTensor"):
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    logging.getLogger("megatron.core.datasets.blended_dataset").addFilter(_DropUncachedBlendNotice())


class _DropUncachedBlendNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "indexes because path_to_cache is None" not in record.getMessage()
