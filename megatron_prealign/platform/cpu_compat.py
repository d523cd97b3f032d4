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

Entry points switch it on explicitly, once, with `activate_cpu_compat()` (a no-op when
`torch.cuda.is_available()`: on a GPU machine nothing is touched); `deactivate_cpu_compat()`
restores everything (tests use it to keep the layer from leaking between test modules). The
function mode is thread-local (a PyTorch property): code that runs megatron-core in another
thread must call `activate_cpu_compat()` there too.
"""
from __future__ import annotations

import contextlib
import threading
import time

import torch
from torch.overrides import TorchFunctionMode

from megatron_prealign.log import get_logger
from megatron_prealign.platform.rng import CpuRNGStatesTracker

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

# (object, attribute name) -> original value, for every attribute this layer replaces; restored
# by deactivate_cpu_compat().
_ORIGINALS: dict[tuple[object, str], object] = {}


def _replace(owner: object, name: str, value: object) -> None:
    # From a class's __dict__, so a staticmethod is restored as a staticmethod.
    raw = vars(owner)[name] if isinstance(owner, type) and name in vars(owner) else getattr(owner, name)
    _ORIGINALS.setdefault((owner, name), raw)
    setattr(owner, name, value)


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    for name, value in {
        "current_device": lambda: 0,
        "set_device": lambda device: None,
        "synchronize": lambda device=None: None,
        "empty_cache": lambda: None,
        "Event": _CpuEvent,
        "Stream": _CpuStream,
        "current_stream": lambda device=None: _DEFAULT_STREAM,
        "default_stream": lambda device=None: _DEFAULT_STREAM,
        "stream": lambda stream=None: contextlib.nullcontext(),
        "get_rng_state": lambda device="cuda": torch.get_rng_state(),
        "set_rng_state": lambda new_state, device="cuda": torch.set_rng_state(new_state),
        # Not torch.manual_seed: that calls torch.cuda.manual_seed_all, which must stay untouched.
        "manual_seed": lambda seed: torch.default_generator.manual_seed(int(seed)),
        "memory_allocated": lambda device=None: 0,
        "max_memory_allocated": lambda device=None: 0,
    }.items():
        _replace(cuda, name, value)


def _under_function_mode(function):
    """Run `function` with the CUDA-as-CPU mode on this thread's stack.

    Autograd's engine is entered from our mode's own handler (`Tensor.backward` and
    `torch.autograd.backward` dispatch to it), where PyTorch has popped the mode. megatron-core's
    autograd Functions allocate on `torch.cuda.current_device()` in their backward (the
    sequence-parallel all-gather buffers, for one), and activation recomputation runs whole
    forward passes there; without this they would ask for a CUDA device that does not exist."""

    def wrapped(*args, **kwargs):
        with _CudaAsCpuMode():
            return function(*args, **kwargs)

    return wrapped


def _patch_megatron() -> None:
    from megatron.core.tensor_parallel import random as mcore_random


    # initialize_rng_tracker() and get_all_rng_states() look these names up at call time.
    _replace(mcore_random, "CudaRNGStatesTracker", CpuRNGStatesTracker)
    _replace(mcore_random, "_get_cuda_rng_state",
             lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state())
    _replace(mcore_random, "_set_cuda_rng_state",
             lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state))
    # Code megatron-core runs inside autograd's backward: its Functions' backward methods (the
    # tensor-parallel mappings and layers, cross entropy, activation checkpointing) and the
    # recompute hook of CheckpointWithoutOutput.
    for function in _megatron_autograd_functions():
        if "backward" in vars(function):
            _replace(function, "backward", staticmethod(_under_function_mode(function.backward)))
    _replace(mcore_random.CheckpointWithoutOutput, "_recompute",
             _under_function_mode(mcore_random.CheckpointWithoutOutput._recompute))
    mcore_random.initialize_rng_tracker(force_reset=True)


def _megatron_autograd_functions() -> list[type]:
    """Every `torch.autograd.Function` subclass defined by megatron-core's modules that a GPT
    model uses (imported here so they exist before the model is built)."""
    import megatron.core.fusions.fused_bias_dropout  # noqa: F401
    import megatron.core.tensor_parallel  # noqa: F401
    import megatron.core.transformer.transformer_block  # noqa: F401

    found, stack = [], list(torch.autograd.Function.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("megatron.core."):
            found.append(cls)
    return found


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

    Entry points call this once at start-up, before building process groups or models (
    `init_distributed` refuses to run on a CPU machine without it). Returns True when the layer
    is active. Idempotent; inert (returns False) with CUDA.
    """
    global _ACTIVE
    if torch.cuda.is_available():
        return False
    with _LOCK:
        if not _ACTIVE:
            _patch_torch_cuda()
            _patch_megatron()
            _ACTIVE = True
            logger.debug("megatron-core CPU compatibility layer active")
    if not getattr(_THREAD_STATE, "mode", None):
        mode = _CudaAsCpuMode()
        mode.__enter__()  # stays on this thread's function-mode stack until deactivation
        _THREAD_STATE.mode = mode
    return True


def deactivate_cpu_compat() -> None:
    """Undo `activate_cpu_compat` (for tests that need a process without it): restore every
    replaced attribute and leave this thread's function mode. Process groups and models built
    under the layer must be destroyed first."""
    global _ACTIVE
    mode = getattr(_THREAD_STATE, "mode", None)
    if mode is not None:
        mode.__exit__(None, None, None)
        _THREAD_STATE.mode = None
    with _LOCK:
        if not _ACTIVE:
            return
        for (owner, name), value in reversed(list(_ORIGINALS.items())):
            setattr(owner, name, value)
        _ORIGINALS.clear()
        from megatron.core.tensor_parallel import random as mcore_random

        mcore_random.initialize_rng_tracker(force_reset=True)
        _ACTIVE = False
