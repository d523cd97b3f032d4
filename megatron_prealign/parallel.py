"""The job's parallel layout and where this process sits in it (no torch: the config and the
launcher environment are read before anything heavy is imported).

Launch information comes from torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
`MASTER_PORT`) or, for one-task-per-GPU `srun` launches, from Slurm (`SLURM_PROCID`,
`SLURM_NTASKS`, `SLURM_LOCALID`, first host of `SLURM_NODELIST`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelConfig:
    """Model-parallel layout; data parallelism is whatever remains of the world size."""

    tensor_model_parallel_size: int = 1
    """Ranks a layer's weights are split across (--tensor-model-parallel-size)."""
    pipeline_model_parallel_size: int = 1
    """Pipeline stages the layers are split into (--pipeline-model-parallel-size)."""
    sequence_parallel: bool = False
    """Shard LayerNorm/dropout activations along the sequence under TP (--sequence-parallel)."""
    num_layers_per_virtual_pipeline_stage: int | None = None
    """Layers per model chunk of the interleaved 1F1B schedule: each pipeline rank holds
    num_layers / (PP x this) chunks (--num-layers-per-virtual-pipeline-stage)."""
    context_parallel_size: int = 1
    """Ranks a sequence is split across in attention (--context-parallel-size); needs
    TransformerEngine's attention in megatron-core 0.16, so only 1 is supported."""
    distributed_backend: str = "auto"
    """`nccl`, `gloo`, or `auto` (nccl when CUDA is present, else gloo)."""
    distributed_timeout_minutes: float = 10
    """Collective timeout of every process group, megatron-core's included
    (--distributed-timeout-minutes; fractions allowed): a collective stuck on a stopped rank ends
    the job within it."""

    def __post_init__(self) -> None:
        if self.tensor_model_parallel_size < 1:
            raise ValueError("--tensor-model-parallel-size must be >= 1")
        if self.pipeline_model_parallel_size < 1:
            raise ValueError("--pipeline-model-parallel-size must be >= 1")
        if not self.distributed_timeout_minutes > 0:
            raise ValueError("--distributed-timeout-minutes must be > 0")
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ValueError("--sequence-parallel needs --tensor-model-parallel-size > 1")
        if self.num_layers_per_virtual_pipeline_stage is not None:
            if self.num_layers_per_virtual_pipeline_stage < 1:
                raise ValueError("--num-layers-per-virtual-pipeline-stage must be >= 1")
            if self.pipeline_model_parallel_size == 1:
                raise ValueError("--num-layers-per-virtual-pipeline-stage (the interleaved schedule) needs "
                                 "--pipeline-model-parallel-size > 1")
        if self.context_parallel_size != 1:
            raise ValueError("--context-parallel-size > 1 needs TransformerEngine's attention, which megatron-core "
                             "0.16 requires for context parallelism; use --sequence-parallel with tensor "
                             "parallelism for long sequences instead")
        if self.distributed_backend not in ("auto", "nccl", "gloo"):
            raise ValueError("--distributed-backend must be one of auto, nccl, gloo")


    def virtual_pipeline_size(self, num_layers: int) -> int | None:
        """Model chunks per pipeline rank under the interleaved schedule (None without it)."""
        per_chunk = self.num_layers_per_virtual_pipeline_stage
        if per_chunk is None:
            return None
        return num_layers // (self.pipeline_model_parallel_size * per_chunk)


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
