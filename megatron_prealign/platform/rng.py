"""Model-parallel RNG streams on CPU.

megatron-core keeps named RNG streams (data-parallel, tensor-model-parallel, expert-parallel) as
CUDA generator states and swaps them into the current CUDA generator inside `fork()`. On CPU all
random ops draw from the default CPU generator, so each named stream here is a state of its own,
created from a fresh `torch.Generator` (never from the default one, which would leak per-TP-rank
draws into parameters that must be identical on every TP rank) and swapped into the default
generator only for the duration of `fork()`.
"""
from __future__ import annotations

import contextlib

import torch
from megatron.core.tensor_parallel import random as mcore_random


class CpuRNGStatesTracker(mcore_random.CudaRNGStatesTracker):
    """Drop-in for megatron-core's `CudaRNGStatesTracker` whose streams live on the CPU."""

    def __init__(self, use_cudagraphable_rng: bool = False, is_inference_rng_tracker: bool = False):
        # CUDA graphs do not exist on CPU; the flag is accepted for signature compatibility.
        super().__init__(use_cudagraphable_rng=False, is_inference_rng_tracker=is_inference_rng_tracker)

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_:
            raise ValueError(f"RNG seed {seed} is already used by another stream")
        if name in self.states_:
            raise ValueError(f"RNG stream {name!r} already exists")
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator(device="cpu").manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = mcore_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise KeyError(f"RNG stream {name!r} was never added (call model_parallel_cuda_manual_seed)")
        outer_state = torch.get_rng_state()
        outer_name = self._current_state_name
        if outer_name != "default-rng":
            self.states_[outer_name] = outer_state
        torch.set_rng_state(self.states_[name])
        self._current_state_name = name
        try:
            yield
        finally:
            if self._current_state_name != name:
                raise RuntimeError(
                    f"RNG stream {self._current_state_name!r} still active when leaving {name!r}"
                )
            self.states_[name] = torch.get_rng_state()
            if outer_name != "default-rng":
                outer_state = self.states_[outer_name]
            torch.set_rng_state(outer_state)
            self._current_state_name = outer_name
