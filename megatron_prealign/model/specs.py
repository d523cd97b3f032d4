"""Layer spec selection: stock megatron-core specs only (never a forked TransformerLayer).

The one module we inject is the core attention (`--attention-backend sdpa`, see attention.py),
through the spec's `core_attention` slot.
"""
from __future__ import annotations

import copy
import importlib.util

import torch
from megatron.core.transformer.spec_utils import ModuleSpec

from megatron_prealign.model.config import ModelConfig


def transformer_engine_usable() -> bool:
    """TransformerEngine needs both the package and a CUDA device."""
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def resolve_transformer_impl(cfg: ModelConfig) -> str:
    if cfg.transformer_impl == "auto":
        return "transformer_engine" if transformer_engine_usable() else "local"
    if cfg.transformer_impl == "transformer_engine" and not transformer_engine_usable():
        raise ValueError("--transformer-impl transformer_engine needs TransformerEngine and a CUDA device")
    return cfg.transformer_impl


def resolve_attention_backend(cfg: ModelConfig) -> str:
    """`transformer_engine` (TE's own attention), `sdpa` or `local`.

    `auto` takes TE's attention with the TE layer spec; without TE, torch's fused SDPA on CUDA
    (the local score-materializing attention would cost memory quadratic in the sequence) and
    megatron-core's local attention on CPU, where both cost the same at test sizes and the local
    one is megatron-core's reference path.
    """
    impl = resolve_transformer_impl(cfg)
    if cfg.attention_backend == "auto":
        if impl == "transformer_engine":
            return "transformer_engine"
        # SDPA has no sliding-window mask; megatron-core's local attention applies --window-size.
        return "sdpa" if torch.cuda.is_available() and cfg.window_size is None else "local"
    if impl == "transformer_engine":
        raise ValueError(f"--attention-backend {cfg.attention_backend} applies to --transformer-impl local; "
                         f"the TransformerEngine spec brings its own attention (use --attention-backend auto)")
    return cfg.attention_backend


def get_prealign_layer_spec(cfg: ModelConfig) -> ModuleSpec:
    """megatron-core's GPT layer spec: TransformerEngine when usable, else the local (torch) one,
    with SDPA as core attention when `--attention-backend` resolves to `sdpa`."""
    from megatron.core.models.gpt import gpt_layer_specs

    if resolve_transformer_impl(cfg) == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=cfg.qk_layernorm)
    spec = gpt_layer_specs.get_gpt_layer_local_spec(normalization=cfg.normalization, qk_layernorm=cfg.qk_layernorm)
    if resolve_attention_backend(cfg) == "sdpa":
        from megatron_prealign.model.attention import SDPAttention

        spec = copy.deepcopy(spec)
        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec
