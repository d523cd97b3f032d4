"""Layer spec selection: stock megatron-core specs only (never a forked TransformerLayer)."""
from __future__ import annotations

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


def get_prealign_layer_spec(cfg: ModelConfig) -> ModuleSpec:
    """megatron-core's GPT layer spec: TransformerEngine when usable, else the local (torch) one."""
    from megatron.core.models.gpt import gpt_layer_specs

    if resolve_transformer_impl(cfg) == "transformer_engine":
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec()
    return gpt_layer_specs.get_gpt_layer_local_spec(normalization=cfg.normalization)
