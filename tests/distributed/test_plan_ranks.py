"""Tier 3 (multi-process gloo): the planner's per-rank parameter counts equal what megatron-core
allocates on each rank of a TP=2 x PP=2 layout (models built on the meta device; one spawn)."""
from __future__ import annotations

from tests._dist import run_on_ranks

MODELS = {
    "tiny": dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=64, vocab_size=400),
    "demo": dict(num_layers=4, hidden_size=160, ffn_hidden_size=640, num_attention_heads=4, seq_length=128,
                 vocab_size=8000),
    "1.2B": dict(num_layers=24, hidden_size=2048, ffn_hidden_size=5632, num_attention_heads=16,
                 num_query_groups=8, seq_length=2048, vocab_size=32000),
    "tied, LayerNorm, biases": dict(num_layers=4, hidden_size=64, num_attention_heads=4, vocab_size=1000,
                                    untie_embeddings_and_output_weights=False, normalization="LayerNorm",
                                    add_bias_linear=True, swiglu=False),
}


def _count_per_rank(rank: int, world_size: int) -> dict:
    import torch
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    from megatron_prealign.distributed import ParallelConfig, destroy_distributed, init_distributed
    from megatron_prealign.model import ModelConfig
    from megatron_prealign.model.builder import transformer_config
    from megatron_prealign.model.specs import get_prealign_block_spec

    parallel = ParallelConfig(tensor_model_parallel_size=2, pipeline_model_parallel_size=2)
    pgs = init_distributed(parallel, seed=1)
    out = {"stage": parallel_state.get_pipeline_model_parallel_rank()}
    try:
        for name, fields in MODELS.items():
            cfg = ModelConfig(**fields)
            with torch.device("meta"):
                config = transformer_config(cfg, parallel)
                model = GPTModel(config=config,
                                 transformer_layer_spec=get_prealign_block_spec(cfg, config, pp_rank=pgs.pp.rank()),
                                 vocab_size=cfg.padded_vocab_size(2), max_sequence_length=cfg.seq_length,
                                 pre_process=parallel_state.is_pipeline_first_stage(),
                                 post_process=parallel_state.is_pipeline_last_stage(),
                                 share_embeddings_and_output_weights=not cfg.untie_embeddings_and_output_weights,
                                 position_embedding_type=cfg.position_embedding_type, pg_collection=pgs)
            out[name] = sum(p.numel() for p in model.parameters())
    finally:
        destroy_distributed()
    return out


def test_parameters_per_rank_match_megatron_core():
    from megatron_prealign.model import ModelConfig
    from megatron_prealign.plan import stage_parameters

    for result in run_on_ranks(_count_per_rank, 4):
        for name, fields in MODELS.items():
            planned = stage_parameters(ModelConfig(**fields), tp=2, pp=2, stage=result["stage"]).total
            assert planned == result[name], (name, result["stage"])
