"""Tier 1 (pure functions): launcher environment parsing and the CPU layer's activation rule."""
from __future__ import annotations

import pytest

from megatron_prealign.parallel import ParallelConfig, first_slurm_host, read_launch_env


def test_torchrun_environment():
    env = read_launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
                           "MASTER_PORT": "29555"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.launcher) == \
        (3, 8, 1, "node7", 29555, "torchrun")


def test_slurm_environment_uses_first_host_and_job_derived_port():
    env = read_launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
                           "SLURM_NODELIST": "gpu[003-004,010]", "SLURM_JOB_ID": "123456"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr) == (5, 16, 1, "gpu003")
    assert env.master_port == 20000 + 123456 % 20000
    assert env.launcher == "slurm"


def test_torchrun_variables_win_over_slurm():
    env = read_launch_env({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "4", "SLURM_NTASKS": "9",
                           "SLURM_NODELIST": "n1"})
    assert env.launcher == "torchrun" and env.world_size == 2


def test_missing_launcher_is_a_clear_error():
    with pytest.raises(RuntimeError, match="torchrun.*srun"):
        read_launch_env({})


@pytest.mark.parametrize("nodelist,first", [
    ("n1", "n1"), ("n[1-2]", "n1"), ("gpu[07,09]", "gpu07"), ("a-b[010-012],c1", "a-b010"), ("login3,n2", "login3"),
])
def test_first_slurm_host(nodelist, first):
    assert first_slurm_host(nodelist) == first


def test_parallel_config_validation():
    with pytest.raises(ValueError, match="--sequence-parallel"):
        ParallelConfig(sequence_parallel=True)
    with pytest.raises(ValueError, match="--tensor-model-parallel-size"):
        ParallelConfig(tensor_model_parallel_size=0)


def test_cpu_layer_is_inert_when_cuda_is_present(monkeypatch):
    import torch

    from megatron_prealign.platform import cpu_compat

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cpu_compat, "_ACTIVE", False)
    before = torch.cuda.current_device
    assert cpu_compat.activate_cpu_compat() is False
    assert torch.cuda.current_device is before
    assert cpu_compat.cpu_compat_active() is False
