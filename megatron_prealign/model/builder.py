"""Model provider: ModelConfig + parallel layout -> megatron-core GPTModel for this rank's stage."""
from __future__ import annotations

import importlib.util

import torch.nn.functional as F
from megatron.core.fusions.fused_layer_norm import HAVE_PERSIST_LAYER_NORM
from megatron.core.models.gpt import GPTModel
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer import TransformerConfig

from megatron_prealign.parallel import ParallelConfig
from megatron_prealign.model.config import ModelConfig
from megatron_prealign.model.specs import get_prealign_block_spec, resolve_transformer_impl
from megatron_prealign.platform import compute_device, cpu_compat_active


def transformer_config(cfg: ModelConfig, parallel: ParallelConfig) -> TransformerConfig:
    """Map our ModelConfig onto megatron-core's TransformerConfig."""
    on_cpu = cpu_compat_active()
    return TransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.ffn_hidden_size or 4 * cfg.hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.num_query_groups,
        kv_channels=cfg.kv_channels,
        add_qkv_bias=cfg.add_qkv_bias,
        qk_layernorm=cfg.qk_layernorm,
        window_size=cfg.window_size,
        normalization=cfg.normalization,
        layernorm_epsilon=cfg.norm_epsilon,
        gated_linear_unit=cfg.swiglu,
        activation_func=F.silu if cfg.swiglu else F.gelu,
        add_bias_linear=cfg.add_bias_linear,
        hidden_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
        init_method_std=cfg.init_method_std,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_size(cfg.num_layers),
        # Interleaving overlaps its p2p instead of batching it, as Megatron-LM's defaults do
        # (batched isend/irecv under the interleaved schedule gave wrong losses on gloo).
        overlap_p2p_comm=parallel.virtual_pipeline_size(cfg.num_layers) is not None,
        batch_p2p_comm=parallel.virtual_pipeline_size(cfg.num_layers) is None,
        sequence_parallel=parallel.sequence_parallel,
        params_dtype=cfg.params_dtype,
        pipeline_dtype=cfg.params_dtype,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        # CPU initialization builds each full weight from the default generator and keeps this
        # rank's shard, so initial weights do not depend on the TP degree. On GPU the faster
        # per-shard init (TP-rank RNG streams) is megatron-core's default.
        use_cpu_initialization=on_cpu,
        # The fused/persisted kernels below exist only on CUDA; the fused softmax of the local
        # attention only with Apex/TE's compiled kernels (megatron-core imports them at call time).
        bias_activation_fusion=False,
        # The fused causal softmax kernel ignores --window-size (megatron-core picks it whenever
        # the shapes allow), so sliding-window models keep the torch softmax that applies it.
        masked_softmax_fusion=(not on_cpu and cfg.window_size is None
                               and importlib.util.find_spec("scaled_masked_softmax_cuda") is not None),
        # Apex's persistent LayerNorm kernel; the torch norms of the local spec refuse the flag.
        persist_layer_norm=not on_cpu and HAVE_PERSIST_LAYER_NORM,
        bias_dropout_fusion=not on_cpu,
        gradient_accumulation_fusion=False,
        apply_rope_fusion=False,
        transformer_impl=resolve_transformer_impl(cfg),
        recompute_granularity=cfg.recompute_granularity,
        recompute_method=cfg.recompute_method,
        recompute_num_layers=cfg.recompute_num_layers,
        # Sum token losses and divide by the global token count (see training/step.py).
        calculate_per_token_loss=True,
    )


def build_model(cfg: ModelConfig, parallel: ParallelConfig, pg_collection=None):
    """Build this rank's pipeline stage of the GPT model, on the compute device: one GPTModel, or
    with `--num-layers-per-virtual-pipeline-stage` the list of this rank's model chunks (the
    interleaved schedule; chunk v holds the layers of virtual stage v).

    A GPTModel's forward takes (input_ids, position_ids, attention_mask, labels=None) and returns
    per-token losses [b, s] when labels are given (last stage), else logits or the hidden states
    passed to the next stage.
    """
    if pg_collection is None:
        pg_collection = ProcessGroupCollection.use_mpu_process_groups()
    vp = parallel.virtual_pipeline_size(cfg.num_layers)
    config = transformer_config(cfg, parallel)  # shared by the chunks: the schedules read its hooks
    if vp is None:
        return _build_chunk(cfg, parallel, config, pg_collection, None)
    return [_build_chunk(cfg, parallel, config, pg_collection, v) for v in range(vp)]


def _build_chunk(cfg: ModelConfig, parallel: ParallelConfig, config, pg_collection, vp_stage: int | None) -> GPTModel:
    stage, stages = pg_collection.pp.rank(), pg_collection.pp.size()
    chunks = parallel.virtual_pipeline_size(cfg.num_layers) or 1
    chunk = vp_stage or 0
    model = GPTModel(
        config=config,
        transformer_layer_spec=get_prealign_block_spec(cfg, config, pp_rank=stage, vp_stage=vp_stage),
        vocab_size=cfg.padded_vocab_size(parallel.tensor_model_parallel_size),
        max_sequence_length=cfg.max_position_embeddings or cfg.seq_length,
        pre_process=stage == 0 and chunk == 0,
        post_process=stage == stages - 1 and chunk == chunks - 1,
        share_embeddings_and_output_weights=not cfg.untie_embeddings_and_output_weights,
        position_embedding_type=cfg.position_embedding_type,
        rotary_base=cfg.rotary_base,
        rope_scaling=cfg.use_rope_scaling,
        rope_scaling_factor=cfg.rope_scaling_factor,
        pg_collection=pg_collection,
        vp_stage=vp_stage,
    )
    return model.to(compute_device())
