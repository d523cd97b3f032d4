"""Platform layer: lets megatron-core 0.16.x run on CPU (gloo) when no CUDA device is present.

`activate_cpu_compat()`, called once by each entry point, is a no-op on machines with CUDA, so the same code path serves GPU
clusters (untouched megatron-core) and CPU-only CI (the compatibility layer below).
`return_freed_memory_to_os()` (called for CPU runs) keeps the resident size at the live tensors.
"""
from megatron_prealign.platform.cpu_compat import (
    activate_cpu_compat,
    compute_device,
    cpu_compat_active,
    deactivate_cpu_compat,
)
from megatron_prealign.platform.host_memory import return_freed_memory_to_os
from megatron_prealign.platform.rng import CpuRNGStatesTracker

__all__ = ["activate_cpu_compat", "compute_device", "cpu_compat_active", "deactivate_cpu_compat",
           "CpuRNGStatesTracker", "return_freed_memory_to_os"]
