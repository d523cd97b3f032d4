"""Tier 2 (single process, megatron-core on CPU): the compatibility layer's semantics."""
from __future__ import annotations

import pytest
import torch

from megatron_prealign.platform import activate_cpu_compat

# With CUDA the layer is inert (tests/unit/test_launch_env.py checks that); nothing here applies.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU layer is inert when CUDA is present")


def test_cuda_placements_land_on_cpu():
    assert activate_cpu_compat() is True  # this machine has no CUDA
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.empty(3, device=torch.cuda.current_device()).device.type == "cpu"
    assert torch.ones(1).cuda().device.type == "cpu"
    assert torch.ones(1).to("cuda").device.type == "cpu"
    # megatron-core's dtype asserts read legacy type names with the CUDA prefix.
    assert torch.ones(1).type() == "torch.cuda.FloatTensor"
    assert torch.ones(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(), end.record()
    assert end.elapsed_time(start) <= 0 <= start.elapsed_time(end)


def test_rng_streams_are_separate_from_the_default_generator():
    from megatron.core.tensor_parallel import random as mcore_random

    from megatron_prealign.platform import CpuRNGStatesTracker

    activate_cpu_compat()
    tracker = CpuRNGStatesTracker()
    tracker.add("model-parallel-rng", 100)
    tracker.add("other", 200)
    torch.manual_seed(0)
    outside_before = torch.rand(3)
    torch.manual_seed(0)
    with tracker.fork("model-parallel-rng"):
        a1 = torch.rand(3)
    # The default stream continues as if the fork never drew anything.
    assert torch.equal(torch.rand(3), outside_before)
    with tracker.fork("model-parallel-rng"):
        a2 = torch.rand(3)
    with tracker.fork("other"):
        b = torch.rand(3)
    assert not torch.equal(a1, a2)  # a stream advances across forks
    assert not torch.equal(a1, b)
    expected = torch.Generator().manual_seed(100)
    assert torch.equal(a1, torch.rand(3, generator=expected))
    # megatron-core builds its tracker from the patched class name.
    mcore_random.initialize_rng_tracker(force_reset=True)
    assert isinstance(mcore_random.get_cuda_rng_tracker(), CpuRNGStatesTracker)


def test_grad_clipping_scales_cpu_grads():
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32, get_grad_norm_fp32

    activate_cpu_compat()
    if not torch.distributed.is_initialized():
        import os

        from tests._dist import free_port

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}",
                                             rank=0, world_size=1)
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    norm = get_grad_norm_fp32([p.grad], grad_stats_parallel_group=torch.distributed.group.WORLD)
    assert abs(norm - 5.0) < 1e-6
    clip_grad_by_total_norm_fp32([p], max_norm=1.0, total_norm=norm)
    assert torch.allclose(p.grad, torch.tensor([0.6, 0.8, 0.0, 0.0]), atol=1e-6)
    torch.distributed.destroy_process_group()
