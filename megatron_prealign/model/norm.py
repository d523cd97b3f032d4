"""Torch LayerNorm / RMSNorm that work under sequence parallelism without Apex or TE.

With `--sequence-parallel` each tensor-parallel rank normalizes only its slice of the positions,
so the norm's weight gradient on a rank is partial; megatron-core's `finalize_model_grads`
all-reduces the gradients of parameters marked `sequence_parallel` across the TP group. Its
stock torch-norm wrapper (`WrappedTorchNorm`) refuses sequence parallelism because it does not
mark them (Apex's and TE's norms do). This factory has the same signature and marks them; it is
injected through the layer and block specs (model/specs.py) only when sequence parallelism is on.
"""
from __future__ import annotations

import torch


class SequenceParallelTorchNorm:
    """`WrappedTorchNorm`'s interface: returns a `torch.nn.LayerNorm` or `torch.nn.RMSNorm`."""

    def __new__(cls, config, hidden_size: int, eps: float = 1e-5, persist_layer_norm: bool = False,
                zero_centered_gamma: bool = False, normalization: str = "LayerNorm"):
        if config.layernorm_zero_centered_gamma or config.memory_efficient_layer_norm:
            raise ValueError("zero-centered gamma and memory-efficient LayerNorm need Apex or TransformerEngine")
        norm_cls = {"LayerNorm": torch.nn.LayerNorm, "RMSNorm": torch.nn.RMSNorm}.get(config.normalization)
        if norm_cls is None:
            raise ValueError(f"--normalization {config.normalization} is not supported")
        norm = norm_cls(normalized_shape=hidden_size, eps=eps)
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm
