"""Process-group initialization: the only module that calls `init_process_group` and
`parallel_state.initialize_model_parallel`.

The layout (`ParallelConfig`) and where this process sits in the job (`read_launch_env`) are
read in parallel.py; NCCL on GPU, gloo on CPU.
"""
from __future__ import annotations

import datetime
import os
import random
import socket
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from megatron_prealign.log import get_logger, log_rank0
# The layout and the launcher environment are part of this module's interface.
from megatron_prealign.parallel import LaunchEnv, ParallelConfig, read_launch_env  # noqa: F401
from megatron_prealign.platform import activate_cpu_compat, cpu_compat_active, return_freed_memory_to_os

logger = get_logger(__name__)


def set_seeds(seed: int) -> None:
    """Seed every generator as Megatron does: one default stream per pipeline stage, plus
    megatron-core's named model-parallel streams (tensor-parallel rank specific)."""
    from megatron.core import parallel_state, tensor_parallel

    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed % 2**32)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed, force_reset_rng=True)


def _launch_label(launch: LaunchEnv, env) -> str:
    """Who started this world, for the log: RANK/WORLD_SIZE alone may be a tool's own single process."""
    if launch.launcher != "torchrun" or "TORCHELASTIC_RUN_ID" in env:
        return f"{launch.launcher} launch"
    return "one process" if launch.world_size == 1 else "RANK/WORLD_SIZE environment"


def init_distributed(cfg: ParallelConfig, seed: int, environ: dict[str, str] | None = None, *,
                     virtual_pipeline_size: int | None = None):
    """Create the default process group and megatron-core's model-parallel groups
    (`virtual_pipeline_size`: model chunks per pipeline rank of the interleaved schedule).

    Returns megatron-core's `ProcessGroupCollection` for the layout, to be passed explicitly to
    the components that need groups.
    """
    from megatron.core import parallel_state
    from megatron.core.process_groups_config import ProcessGroupCollection

    launch = read_launch_env(environ)
    if not torch.cuda.is_available() and not cpu_compat_active():
        raise RuntimeError("no CUDA device: call megatron_prealign.platform.activate_cpu_compat() at start-up "
                           "to run megatron-core on the CPU")
    if cpu_compat_active():
        return_freed_memory_to_os()  # activations live in host memory: let the resident size follow them
    backend = cfg.distributed_backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(launch.local_rank)
    model_parallel = cfg.tensor_model_parallel_size * cfg.pipeline_model_parallel_size
    if launch.world_size % model_parallel:
        raise ValueError(
            f"world size {launch.world_size} is not divisible by tensor x pipeline parallel size "
            f"{cfg.tensor_model_parallel_size} x {cfg.pipeline_model_parallel_size}"
        )
    if not dist.is_initialized():
        dist.init_process_group(
            # Small bookkeeping collectives (log reductions, the preemption flag) use CPU tensors;
            # on GPU the default group routes those to gloo and device tensors to NCCL.
            backend="cpu:gloo,cuda:nccl" if backend == "nccl" else backend,
            init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=datetime.timedelta(minutes=cfg.distributed_timeout_minutes),
        )
    parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=cfg.tensor_model_parallel_size,
        pipeline_model_parallel_size=cfg.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=virtual_pipeline_size,
        # megatron-core gives its groups 30 minutes of their own otherwise: a rank stuck in a
        # tensor- or pipeline-parallel collective would outlive the world group's timeout.
        distributed_timeout_minutes=cfg.distributed_timeout_minutes,
    )
    set_seeds(seed)
    log_rank0(
        logger,
        "initialized %s world of %d (%s): TP=%d PP=%d DP=%d",
        backend,
        launch.world_size,
        _launch_label(launch, os.environ if environ is None else environ),
        cfg.tensor_model_parallel_size,
        cfg.pipeline_model_parallel_size,
        parallel_state.get_data_parallel_world_size(),
    )
    return ProcessGroupCollection.use_mpu_process_groups()


def destroy_distributed() -> None:
    """Tear down megatron-core's groups and the default group (safe when not initialized)."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A free TCP port on this host (for a rendezvous of local processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def single_process_world(seed: int = 1234) -> Iterator:
    """A world of one process with megatron-core's groups, for tools that build a model outside a
    launcher (evaluation, conversion, benchmarks); torn down afterwards. Switches the CPU layer on
    (an entry point of its own). Inside an already initialized job it yields that job's groups
    and tears nothing down."""
    from megatron.core.process_groups_config import ProcessGroupCollection

    if dist.is_initialized():
        yield ProcessGroupCollection.use_mpu_process_groups()
        return
    activate_cpu_compat()
    environ = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(free_port())}
    pgs = init_distributed(ParallelConfig(), seed, environ=environ)
    try:
        yield pgs
    finally:
        destroy_distributed()
