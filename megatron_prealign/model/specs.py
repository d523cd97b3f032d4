"""Layer spec selection: stock megatron-core specs only (never a forked TransformerLayer).

What we inject, through the spec's slots: the core attention (`--attention-backend sdpa`, see
attention.py) and, under sequence parallelism without Apex/TE, the norms (norm.py).
"""
from __future__ import annotations

import copy
import importlib.util

import torch

from megatron_prealign.model.attention import SDPAttention
from megatron_prealign.model.config import ModelConfig
from megatron_prealign.model.norm import SequenceParallelTorchNorm


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
    """`transformer_engine` (TE's own attention: `te`, or `auto` with TE), `sdpa` or `local`.

    `auto` takes TE's attention with the TE layer spec; without TE, torch's fused SDPA on CUDA
    (the local score-materializing attention would cost memory quadratic in the sequence) and
    megatron-core's local attention on CPU, where both cost the same at test sizes and the local
    one is megatron-core's reference path.
    """
    impl = resolve_transformer_impl(cfg)
    if cfg.attention_backend == "te":
        if impl != "transformer_engine":
            raise ValueError("--attention-backend te needs TransformerEngine and a CUDA device; "
                             "without them use --attention-backend sdpa (torch's fused kernels) or local")
        return "transformer_engine"
    if cfg.attention_backend == "auto":
        if impl == "transformer_engine":
            return "transformer_engine"
        # SDPA has no sliding-window mask; megatron-core's local attention applies --window-size.
        return "sdpa" if torch.cuda.is_available() and cfg.window_size is None else "local"
    if impl == "transformer_engine":
        raise ValueError(f"--attention-backend {cfg.attention_backend} applies to --transformer-impl local; "
                         f"the TransformerEngine spec brings its own attention (use --attention-backend auto)")
    return cfg.attention_backend


def get_prealign_block_spec(cfg: ModelConfig, config, *, pp_rank: int, vp_stage: int | None = None):
    """megatron-core's GPT decoder block spec for this pipeline stage (and virtual stage):
    TransformerEngine's when usable, else the local (torch) one, with SDPA as core attention when
    `--attention-backend` resolves to `sdpa` and sequence-parallel-capable torch norms under
    `--sequence-parallel` without Apex/TE (model/norm.py)."""
    from megatron.core.fusions.fused_layer_norm import HAVE_FUSED_LAYER_NORM
    from megatron.core.models.gpt import gpt_layer_specs

    use_te = resolve_transformer_impl(cfg) == "transformer_engine"
    block = gpt_layer_specs.get_gpt_decoder_block_spec(config, use_transformer_engine=use_te,
                                                       normalization=cfg.normalization, vp_stage=vp_stage,
                                                       pp_rank=pp_rank)
    if use_te:
        return block
    sdpa = resolve_attention_backend(cfg) == "sdpa"
    torch_norms = config.sequence_parallel and not HAVE_FUSED_LAYER_NORM
    if not (sdpa or torch_norms):
        return block
    block = copy.deepcopy(block)
    for layer in block.layer_specs:
        if sdpa:
            layer.submodules.self_attention.submodules.core_attention = SDPAttention
        if torch_norms:
            layer.submodules.input_layernorm = SequenceParallelTorchNorm
            layer.submodules.pre_mlp_layernorm = SequenceParallelTorchNorm
    if torch_norms:
        block.layer_norm = SequenceParallelTorchNorm
    return block
