"""CPU stands in for the CUDA device inside megatron-core 0.16.x.

megatron-core assumes CUDA in ~80 places: factory calls with `device="cuda"` or
`device=torch.cuda.current_device()`, `.cuda()` moves, `Tensor.type() == 'torch.cuda.FloatTensor'`
asserts in grad clipping and the optimizers, CUDA events/streams/synchronize, and a CUDA RNG
tracker. Rather than patch each call site, this layer makes the CPU *be* "the current CUDA
device" for megatron-core:

* a `TorchFunctionMode` maps every CUDA device argument (string, `torch.device`, bare index) to
  the CPU, turns `.cuda()` into a no-op and reports CPU tensors' legacy type names with the
  `torch.cuda.` prefix that megatron-core's dtype asserts expect;
* the `torch.cuda` entry points megatron-core calls for bookkeeping (current_device, synchronize,
  events, streams, RNG state) get CPU equivalents;
* the model-parallel RNG tracker becomes `CpuRNGStatesTracker` (see rng.py for why its streams
  must be separate states).

Activation happens once per process and only when `torch.cuda.is_available()` is False; on a
GPU machine nothing is touched. The function mode is thread-local (a PyTorch property): code that
runs megatron-core in another thread must call `activate_cpu_compat()` there too.
"""
from __future__ import annotations

import contextlib
import threading
import time

import torch
from torch.overrides import TorchFunctionMode

from megatron_prealign.log import get_logger

logger = get_logger(__name__)

_ACTIVE = False
_LOCK = threading.Lock()
_THREAD_STATE = threading.local()
_CPU = torch.device("cpu")


def _is_cuda_device(value) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, str):
        return value.startswith("cuda")
    # A bare int device means "CUDA device index" to torch factory functions.
    return isinstance(value, int) and not isinstance(value, bool)


class _CudaAsCpuMode(TorchFunctionMode):
    """Redirects megatron-core's CUDA placements to the CPU (see module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and _is_cuda_device(device):
            kwargs = {**kwargs, "device": _CPU}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and args[1:] and _is_cuda_device(args[1]):
            args = (args[0], _CPU, *args[2:])
        elif func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        return func(*args, **kwargs)


class _CpuEvent:
    """`torch.cuda.Event` with wall-clock timing; CPU ops are synchronous so record == done."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self._t: float | None = None

    def record(self, stream=None) -> None:
        self._t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def wait(self, stream=None) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: "_CpuEvent") -> float:
        return (end._t - self._t) * 1000.0


class _CpuStream:
    """`torch.cuda.Stream` stand-in: one in-order CPU stream."""

    def __init__(self, device=None, priority: int = 0):
        pass

    def wait_stream(self, stream) -> None:
        pass

    def wait_event(self, event) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def record_event(self, event=None):
        event = event or _CpuEvent()
        event.record()
        return event


_DEFAULT_STREAM = _CpuStream()


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: 0
    cuda.set_device = lambda device: None
    cuda.synchronize = lambda device=None: None
    cuda.empty_cache = lambda: None
    cuda.Event = _CpuEvent
    cuda.Stream = _CpuStream
    cuda.current_stream = lambda device=None: _DEFAULT_STREAM
    cuda.default_stream = lambda device=None: _DEFAULT_STREAM
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    # Not torch.manual_seed: that calls torch.cuda.manual_seed_all, which must stay untouched.
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.memory_allocated = lambda device=None: 0
    cuda.max_memory_allocated = lambda device=None: 0


def _patch_megatron_rng() -> None:
    from megatron.core.tensor_parallel import random as mcore_random

    from megatron_prealign.platform.rng import CpuRNGStatesTracker

    # initialize_rng_tracker() and get_all_rng_states() look this name up at call time.
    mcore_random.CudaRNGStatesTracker = CpuRNGStatesTracker
    mcore_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mcore_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)
    mcore_random.initialize_rng_tracker(force_reset=True)


def cpu_compat_active() -> bool:
    """True when this process runs megatron-core on the CPU through this layer."""
    return _ACTIVE


def compute_device() -> torch.device:
    """The device model tensors live on: the current CUDA device, or the CPU under this layer."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return _CPU


def activate_cpu_compat() -> bool:
    """Enable the layer for this process (and this thread) if no CUDA device is present.

    Returns True when the layer is active. Idempotent; inert (returns False) with CUDA.
    """
    global _ACTIVE
    if torch.cuda.is_available():
        return False
    with _LOCK:
        if not _ACTIVE:
            _patch_torch_cuda()
            _patch_megatron_rng()
            _ACTIVE = True
            logger.debug("megatron-core CPU compatibility layer active")
    if not getattr(_THREAD_STATE, "mode", None):
        mode = _CudaAsCpuMode()
        mode.__enter__()  # stays on this thread's function-mode stack for the process lifetime
        _THREAD_STATE.mode = mode
    return True
