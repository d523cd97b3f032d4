"""Process-group initialization: the only module that calls `init_process_group` and
`parallel_state.initialize_model_parallel`.

Launch information comes from torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
`MASTER_PORT`) or, for one-task-per-GPU `srun` launches, from Slurm (`SLURM_PROCID`,
`SLURM_NTASKS`, `SLURM_LOCALID`, first host of `SLURM_NODELIST`). NCCL on GPU, gloo on CPU.
"""
from __future__ import annotations

import datetime
import os
import random
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from megatron_prealign.log import get_logger, log_rank0
from megatron_prealign.platform import activate_cpu_compat, return_freed_memory_to_os

logger = get_logger(__name__)


@dataclass(frozen=True)
class ParallelConfig:
    """Model-parallel layout; data parallelism is whatever remains of the world size."""

    tensor_model_parallel_size: int = 1
    """Ranks a layer's weights are split across (--tensor-model-parallel-size)."""
    pipeline_model_parallel_size: int = 1
    """Pipeline stages the layers are split into (--pipeline-model-parallel-size)."""
    sequence_parallel: bool = False
    """Shard LayerNorm/dropout activations along the sequence under TP (--sequence-parallel)."""
    distributed_backend: str = "auto"
    """`nccl`, `gloo`, or `auto` (nccl when CUDA is present, else gloo)."""
    distributed_timeout_minutes: int = 10
    """Collective timeout (--distributed-timeout-minutes)."""

    def __post_init__(self) -> None:
        if self.tensor_model_parallel_size < 1:
            raise ValueError("--tensor-model-parallel-size must be >= 1")
        if self.pipeline_model_parallel_size < 1:
            raise ValueError("--pipeline-model-parallel-size must be >= 1")
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ValueError("--sequence-parallel needs --tensor-model-parallel-size > 1")
        if self.distributed_backend not in ("auto", "nccl", "gloo"):
            raise ValueError("--distributed-backend must be one of auto, nccl, gloo")


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job, as told by the launcher."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str


def first_slurm_host(nodelist: str) -> str:
    """First hostname of a Slurm node list such as `gpu[003-005,010],login1` -> `gpu003`."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot parse SLURM_NODELIST={nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}"


def read_launch_env(environ: dict[str, str] | None = None) -> LaunchEnv:
    """Read the launcher's environment; torchrun's variables win over Slurm's.

    Raises RuntimeError naming both conventions when neither is present.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise RuntimeError("Slurm launch without SLURM_NODELIST: cannot find the master host")
        # Every task of a job derives the same port from the job id unless MASTER_PORT is set.
        default_port = 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000
        return LaunchEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT", default_port)),
            launcher="slurm",
        )
    raise RuntimeError(
        "No launcher environment found: start with `torchrun --nproc-per-node N -m "
        "megatron_prealign.pretrain ...` (sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT) "
        "or with `srun` inside a Slurm allocation (sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID/"
        "SLURM_NODELIST). For a single process set RANK=0 WORLD_SIZE=1."
    )


def set_seeds(seed: int) -> None:
    """Seed every generator as Megatron does: one default stream per pipeline stage, plus
    megatron-core's named model-parallel streams (tensor-parallel rank specific)."""
    from megatron.core import parallel_state, tensor_parallel

    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed % 2**32)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed, force_reset_rng=True)


def init_distributed(cfg: ParallelConfig, seed: int, environ: dict[str, str] | None = None):
    """Create the default process group and megatron-core's model-parallel groups.

    Returns megatron-core's `ProcessGroupCollection` for the layout, to be passed explicitly to
    the components that need groups.
    """
    from megatron.core import parallel_state
    from megatron.core.process_groups_config import ProcessGroupCollection

    launch = read_launch_env(environ)
    if activate_cpu_compat():
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
    )
    set_seeds(seed)
    log_rank0(
        logger,
        "initialized %s world of %d (%s launch): TP=%d PP=%d DP=%d",
        backend,
        launch.world_size,
        launch.launcher,
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
