"""Tier 3 (multi-process gloo): megatron-core TP=2 (also with sequence parallelism), PP=2 (also
interleaved: 2 chunks per rank), DP=2 (also with gradient-reduction and parameter-gather overlap)
and full/selective activation recomputation on CPU match TP=PP=DP=1 without any of them.

One fixture runs the process groups in order (LAYOUTS) and every test reads its results:
  1. reference (1 rank): random init -> checkpoint `init`; loss + grads; one clipped Adam step.
  2. TP=2: load `init`; same batch; grads/step saved as checkpoints; replicated-parameter and
     save/load-back checks.
  3. every other layout the same way; the DP=2 ranks also load the TP=2 step checkpoint (a TP=1
     layout) and the plain PP=2 ranks the interleaved one, and re-save them.
Gradients and weights are compared as full tensors read from layout-independent checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from megatron_prealign.checkpointing import read_full_checkpoint
from tests._dist import run_on_ranks

SEQ, MICRO, GLOBAL = 16, 2, 8
RTOL, ATOL = 1e-5, 1e-7


def _model_config(**overrides):
    from megatron_prealign.model import ModelConfig

    base = dict(num_layers=4, hidden_size=32, num_attention_heads=4, num_query_groups=2,
                ffn_hidden_size=64, seq_length=SEQ, vocab_size=256, swiglu=True,
                position_embedding_type="rope", normalization="RMSNorm")
    base.update(overrides)
    return ModelConfig(**base)


def _global_batch(seed: int = 7) -> list[dict[str, torch.Tensor]]:
    """GLOBAL samples; the loss mask drops ~20% of tokens so per-token normalization matters."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (GLOBAL, SEQ + 1), generator=g)
    mask = (torch.rand(GLOBAL, SEQ, generator=g) > 0.2).float()
    return [dict(tokens=tokens[i, :-1], labels=tokens[i, 1:], loss_mask=mask[i],
                 position_ids=torch.arange(SEQ)) for i in range(GLOBAL)]


def _microbatches(dp_rank: int, dp_size: int) -> list[dict[str, torch.Tensor]]:
    """Megatron's split: each DP rank takes its contiguous share, cut into microbatches."""
    samples = _global_batch()
    share = GLOBAL // dp_size
    mine = samples[dp_rank * share:(dp_rank + 1) * share]
    return [{k: torch.stack([s[k] for s in mine[i:i + MICRO]]) for k in mine[0]}
            for i in range(0, share, MICRO)]


def _replicated_params_identical(model, group) -> bool:
    """True when every parameter that is not TP-sharded is bit-identical on all ranks of `group`."""
    flat = torch.cat([p.detach().reshape(-1) for p in _params(model)
                      if not getattr(p, "tensor_model_parallel", False)])
    gathered = [torch.empty_like(flat) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(gathered, flat, group=group)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


# role -> (ranks, layout and knobs); every role starts from the reference's initial weights.
LAYOUTS = {
    "tp2": (2, dict(tp=2)),
    "tp2sp": (2, dict(tp=2, sp=True)),  # sequence parallelism: torch norms marked, positions sharded
    "pp2": (2, dict(pp=2)),  # 1F1B over 4 microbatches
    "pp2vpp2": (2, dict(pp=2, per_chunk=1)),  # interleaved 1F1B, 2 chunks of 1 layer per rank
    "dp2": (2, dict(distributed_optimizer=True)),
    # bucketed reduction during backward, parameter all-gather during the next forward
    "dp2overlap": (2, dict(distributed_optimizer=True, overlap=True)),
    "full": (1, dict(recompute=dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1))),
    "selective": (1, dict(recompute=dict(recompute_granularity="selective"))),
}


def _chunks(model):
    return model if isinstance(model, list) else [model]


def _params(model):
    return [p for chunk in _chunks(model) for p in chunk.parameters()]


def _run_layout(rank, world_size, workdir, role, tp=1, pp=1, sp=False, per_chunk=None, distributed_optimizer=False,
                overlap=False, recompute=None):
    from megatron.core import parallel_state

    from megatron_prealign.checkpointing import (
        load_model_weights, params_holding_grads, save_model_weights)
    from megatron_prealign.distributed import destroy_distributed, init_distributed
    from megatron_prealign.model import build_model
    from megatron_prealign.optim import OptimConfig, build_optimizer
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.training.ddp import wrap_ddp
    from megatron_prealign.training.step import forward_backward

    work = Path(workdir)
    parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, sequence_parallel=sp,
                              num_layers_per_virtual_pipeline_stage=per_chunk)
    pgs = init_distributed(parallel, seed=1234, virtual_pipeline_size=parallel.virtual_pipeline_size(4))
    out = {}
    tp_group = parallel_state.get_tensor_model_parallel_group()
    model_cfg = _model_config(**(recompute or {}))

    if tp > 1 and not sp:
        # Learned positions + LayerNorm biases: replicated parameters drawn from RNG at init.
        other = build_model(_model_config(position_embedding_type="learned_absolute",
                                          normalization="LayerNorm", add_bias_linear=True), parallel, pgs)
        out["replicated_identical_learned_pos"] = _replicated_params_identical(other, tp_group)

    model = build_model(model_cfg, parallel, pgs)
    if role == "reference":
        save_model_weights(model, work / "init")
    else:
        out["replicated_identical_at_init"] = _replicated_params_identical(model, tp_group)
        load_model_weights(model, work / "init")

    # DP=2 shards the optimizer state (megatron-core's distributed optimizer); the step must still
    # equal the single-process one.
    ddp = wrap_ddp(model, use_distributed_optimizer=distributed_optimizer, overlap_grad_reduce=overlap,
                   overlap_param_gather=overlap, pg_collection=pgs)
    optimizer = build_optimizer(OptimConfig(lr=1e-3, clip_grad=0.05, weight_decay=0.1,
                                            use_distributed_optimizer=distributed_optimizer), _chunks(ddp),
                                pg_collection=pgs)
    dp_rank, dp_size = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    for chunk in _chunks(ddp):
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    microbatches = _microbatches(dp_rank, dp_size)
    result = forward_backward(ddp, microbatches, num_microbatches=len(microbatches), pg_collection=pgs,
                              seq_length=SEQ, micro_batch_size=MICRO)
    out["loss"] = result.lm_loss
    if distributed_optimizer:
        for chunk in _chunks(ddp):
            _gather_reduce_scattered_grads(chunk, parallel_state.get_data_parallel_group())
    with params_holding_grads(ddp):
        save_model_weights(ddp, work / f"grads_{role}")
    ok, grad_norm, _ = optimizer.step()
    out["step_ok"], out["grad_norm"] = ok, grad_norm
    if overlap:
        # The updated parameters' all-gather was only dispatched; the next forward would wait for it.
        for chunk in _chunks(ddp):
            chunk.disable_forward_pre_hook(param_sync=True)
    save_model_weights(ddp, work / f"step_{role}")
    if tp > 1 and not sp:
        out["replicated_identical_after_step"] = _replicated_params_identical(
            model, parallel_state.get_model_parallel_group())
    if dp_size > 1:
        out["dp_replicas_identical_after_step"] = _replicated_params_identical_all(
            model, parallel_state.get_data_parallel_group())

    # Save -> load back into a fresh model of the same layout must be bit-identical.
    fresh = build_model(model_cfg, parallel, pgs)
    load_model_weights(fresh, work / f"step_{role}")
    out["reload_bit_identical"] = all(torch.equal(a, b) for a, b in zip(_params(model), _params(fresh)))

    if role == "dp2":
        # A checkpoint written at TP=2 loaded into this TP=1 layout, then re-saved.
        tp1 = build_model(model_cfg, parallel, pgs)
        load_model_weights(tp1, work / "step_tp2")
        save_model_weights(tp1, work / "tp2_loaded_at_tp1")
    if role == "pp2":
        # The interleaved layout's checkpoint (model0/model1 chunks) loaded at plain PP=2.
        plain = build_model(model_cfg, parallel, pgs)
        load_model_weights(plain, work / "step_pp2vpp2")
        save_model_weights(plain, work / "vpp_loaded_at_pp2")
    destroy_distributed()
    return out


def _gather_reduce_scattered_grads(ddp, group) -> None:
    """With the distributed optimizer each DP rank holds only its reduced shard of every grad
    bucket; gather the shards so the full reduced gradients can be saved and compared."""
    rank, size = torch.distributed.get_rank(group), torch.distributed.get_world_size(group)
    for buffer in ddp.buffers:
        for bucket in buffer.buckets:
            shards = list(bucket.grad_data.chunk(size))
            torch.distributed.all_gather(shards, shards[rank].clone(), group=group)


def _replicated_params_identical_all(model, group) -> bool:
    flat = torch.cat([p.detach().reshape(-1) for p in _params(model)])
    gathered = [torch.empty_like(flat) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(gathered, flat, group=group)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("parity")
    out = {"reference": run_on_ranks(_run_layout, 1, str(work), "reference"), "work": work}
    # pp2vpp2 before pp2: the plain pipeline also loads the interleaved layout's checkpoint.
    for role in ("tp2", "tp2sp", "pp2vpp2", "pp2", "dp2", "dp2overlap", "full", "selective"):
        ranks, options = LAYOUTS[role]
        out[role] = run_on_ranks(_run_layout, ranks, str(work), role, *_options(options))
    return out


def _options(options: dict) -> tuple:
    """_run_layout's keyword options as positional arguments (run_on_ranks passes positionals)."""
    names = ("tp", "pp", "sp", "per_chunk", "distributed_optimizer", "overlap", "recompute")
    defaults = dict(tp=1, pp=1, sp=False, per_chunk=None, distributed_optimizer=False, overlap=False, recompute=None)
    return tuple({**defaults, **options}[name] for name in names)


def _last_stage_loss(results):
    losses = [r["loss"] for r in results if r["loss"] is not None]
    assert losses, "no rank reported a loss"
    assert all(loss == losses[0] for loss in losses)
    return losses[0]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_loss_matches_single_process(runs, layout):
    reference = runs["reference"][0]["loss"]
    assert reference > 0
    assert _last_stage_loss(runs[layout]) == pytest.approx(reference, rel=RTOL)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_gradients_match_single_process(runs, layout):
    reference = read_full_checkpoint(runs["work"] / "grads_reference")
    parallel = read_full_checkpoint(runs["work"] / f"grads_{layout}")
    assert reference.keys() == parallel.keys()
    assert any(t.abs().sum() > 0 for t in reference.values())
    for key in reference:
        torch.testing.assert_close(parallel[key], reference[key], rtol=RTOL, atol=ATOL, msg=key)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_clipped_optimizer_step_matches_single_process(runs, layout):
    ref = runs["reference"][0]
    assert ref["step_ok"]
    assert ref["grad_norm"] > 0.05, "clipping must be active for this test to mean anything"
    for result in runs[layout]:
        assert result["grad_norm"] == pytest.approx(ref["grad_norm"], rel=RTOL)
    reference = read_full_checkpoint(runs["work"] / "step_reference")
    parallel = read_full_checkpoint(runs["work"] / f"step_{layout}")
    for key in reference:
        torch.testing.assert_close(parallel[key], reference[key], rtol=RTOL, atol=1e-6, msg=key)


def test_replicated_parameters_bit_identical_across_tp_ranks(runs):
    for result in runs["tp2"]:
        assert result["replicated_identical_learned_pos"]
        assert result["replicated_identical_at_init"]
        assert result["replicated_identical_after_step"]
    for result in runs["dp2"]:
        assert result["dp_replicas_identical_after_step"]


def test_checkpoint_reloads_bit_identical_and_across_layouts(runs):
    for layout in LAYOUTS:
        assert all(r["reload_bit_identical"] for r in runs[layout]), layout
    saved_at_tp2 = read_full_checkpoint(runs["work"] / "step_tp2")
    loaded_at_tp1 = read_full_checkpoint(runs["work"] / "tp2_loaded_at_tp1")
    assert saved_at_tp2.keys() == loaded_at_tp1.keys()
    for key in saved_at_tp2:
        assert torch.equal(saved_at_tp2[key], loaded_at_tp1[key]), key


def test_interleaved_checkpoint_loads_at_plain_pipeline(runs):
    saved = read_full_checkpoint(runs["work"] / "step_pp2vpp2")
    loaded = read_full_checkpoint(runs["work"] / "vpp_loaded_at_pp2")
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key], loaded[key]), key
