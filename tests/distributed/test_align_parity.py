"""Tier 3 (multi-process gloo): the alignment pre-pass at TP=2 (with and without sequence
parallelism), PP=2 (plain and interleaved) and DP=2, and with full and selective activation recomputation, matches one
process without any of them.

One module fixture runs the process groups, each once:
  1. reference (1 rank): random init -> checkpoints `init_tied`, `init_untied`; one step's loss
     and gradients of each model; then, on the untied one, the alignment gap and a 3-step
     `run_align_prepass` (step losses, gradient norms, gaps before/after).
  2. TP=2, 3. TP=2 with sequence parallelism (words pooled from each rank's slice of the
     positions), 4. PP=2 (1F1B over 2 microbatches; stage 0's loss terms injected into its
     backward) and PP=2 with 2 virtual stages (interleaved; every chunk's terms injected), 5. DP=2 (negatives all-gathered with gradient), 6./7. one process with full
     (uniform, 1 layer per chunk: every layer tap fires twice) and selective recomputation: the
     same, starting from the `init_*` weights.
The lexicon has 3-way groups whose clones are not translations of each other, so the
pair-level negatives inside a group are exercised; the collapse penalty is on. Gradients are compared as full
tensors through layout-independent checkpoints. (Weights after the Adam steps are not compared
element-wise: for entries whose gradient is ~0, Adam's m/sqrt(v) turns fp32 reassociation noise
into O(lr) differences; the step losses and gradient norms are compared instead.)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from megatron_prealign.checkpointing import read_full_checkpoint
from tests._dist import run_on_ranks

RTOL = 1e-5
VARIANTS = ("tied", "untied")  # the untied model is also used for the gap and the short pre-pass
# Absolute floor, relative to a tensor's largest entry: summing across ranks reassociates fp32
# sums (measured: errors up to ~1.7e-7 of the largest entry under TP and DP, 0 under PP).
ATOL_OF_MAX = 1e-6
BASE_VOCAB = 40


def _setup(tp: int, pp: int, sp: bool = False, recompute: str | None = None, per_chunk: int | None = None):
    from megatron_prealign.align import AlignConfig
    from megatron_prealign.align.data import clone_lexicon
    from megatron_prealign.distributed import init_distributed
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import ModelConfig

    parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, sequence_parallel=sp,
                              num_layers_per_virtual_pipeline_stage=per_chunk)
    pgs = init_distributed(parallel, seed=4321, virtual_pipeline_size=parallel.virtual_pipeline_size(4))
    # 12 groups of 3 (word, clone 1, clone 2; the clones are not each other's translations). With
    # 16 pairs per step from the 9 training groups, groups repeat within a pool.
    lexicon = clone_lexicon(12, BASE_VOCAB, num_clones=2, max_word_tokens=3, seed=3)
    model_cfg = ModelConfig(num_layers=4, hidden_size=32, num_attention_heads=4, num_query_groups=2,
                            ffn_hidden_size=64, seq_length=8, vocab_size=lexicon.vocab_size,
                            make_vocab_size_divisible_by=8, **RECOMPUTE[recompute])
    cfg = AlignConfig(steps=3, pairs_per_batch=16, num_microbatches=2, collapse_weight=0.3, align_weight=0.5,
                      lr=2e-3, warmup_fraction=0.0, heldout_fraction=0.25, eval_max_words=60, seed=11)
    return parallel, pgs, lexicon, model_cfg, cfg


def _gather_check(group) -> bool:
    """all_gather_with_grad: each rank's loss weighs every gathered row; a shard's gradient must
    be the sum over ranks of the weights on its rows."""
    import torch.distributed as dist

    from megatron_prealign.align.loss import all_gather_with_grad

    rank, size = dist.get_rank(group), dist.get_world_size(group)
    shard = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = all_gather_with_grad(shard, group)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape) * (rank + 1)
    (gathered * weights).sum().backward()
    base = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    expected = base[2 * rank:2 * rank + 2] * sum(r + 1 for r in range(size))
    values_ok = torch.equal(gathered.detach(), torch.cat([torch.full((2, 3), float(r + 1)) for r in range(size)]))
    return values_ok and torch.equal(shard.grad, expected)


RECOMPUTE = {
    None: {},
    "full": dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1),
    "selective": dict(recompute_granularity="selective"),
}


def _run_layout(rank, world_size, tp, pp, workdir, role, sp=False, recompute=None, per_chunk=None):
    import torch.distributed as dist

    from megatron_prealign.align import AlignmentObjective, alignment_gap, run_align_prepass
    from megatron_prealign.align.data import WordPairSampler, build_microbatches, split_entries
    from megatron_prealign.checkpointing import load_model_weights, params_holding_grads, save_model_weights
    from megatron_prealign.distributed import destroy_distributed
    from megatron_prealign.model import build_model
    from megatron_prealign.schedule import model_chunks
    from megatron_prealign.training.ddp import wrap_ddp

    work = Path(workdir)
    parallel, pgs, lexicon, model_cfg, cfg = _setup(tp, pp, sp, recompute, per_chunk)
    out = {}
    train_ids, heldout_ids = split_entries(lexicon, cfg.heldout_fraction, cfg.seed)
    sampler = WordPairSampler(lexicon, train_ids, pairs_per_batch=cfg.pairs_per_batch, seed=cfg.seed,
                              max_word_tokens=cfg.max_word_tokens)
    dp_rank, dp_size = dist.get_rank(pgs.dp), dist.get_world_size(pgs.dp)
    microbatches = build_microbatches(lexicon, sampler.global_pairs(0), dp_rank=dp_rank, dp_size=dp_size,
                                      num_microbatches=cfg.num_microbatches, pad_id=0, seq_multiple=tp if sp else 1)
    # Pair-level negatives: words of one translation group that are not each other's translations.
    groups = torch.as_tensor(lexicon.group_ids, dtype=torch.int64)
    out["same_group_negatives"] = 0
    for mb in microbatches if dp_size == 1 else []:  # one rank: its words are the whole pool
        same = groups[mb.entry_ids][:, None] == groups[mb.entry_ids][None, :]
        out["same_group_negatives"] += int((mb.negative_mask & same).sum())

    # One step's loss and gradients, for an untied LM head (Llama) and a tied one (GPT; under PP
    # the last stage's copy of the embedding gets its gradient synced through the embedding group).
    for variant in VARIANTS:
        variant_cfg = dataclasses.replace(model_cfg, untie_embeddings_and_output_weights=variant == "untied")
        model = build_model(variant_cfg, parallel, pgs)
        if role == "reference":
            save_model_weights(model, work / f"init_{variant}")
        else:
            load_model_weights(model, work / f"init_{variant}")
        ddp = wrap_ddp(model, pg_collection=pgs)
        objective = AlignmentObjective(ddp, cfg, pgs)
        for chunk in model_chunks(ddp):
            chunk.zero_grad_buffer()
        with objective.attached():
            out[f"stats_{variant}"] = objective.forward_backward(microbatches)
        # Under full recomputation every layer's first capture is matched by one injection.
        out[f"recomputed_{variant}"] = objective.recomputed_injections
        with params_holding_grads(ddp):
            save_model_weights(ddp, work / f"grads_{variant}_{role}")
        for chunk in model_chunks(ddp):
            chunk.zero_grad_buffer()

    # The metric (forward-only schedule) and a short full pre-pass with its own optimizer.
    out["gap"] = alignment_gap(ddp, lexicon, heldout_ids, pgs, num_random_pairs=256, micro_batch_size=4)
    report = run_align_prepass(ddp, lexicon, cfg, pgs)
    out["history"] = [(r["total"], r["grad_norm"]) for r in report.history]
    out["report_gaps"] = (report.gap_before, report.gap_after)
    if role == "dp2":
        out["gather_check"] = _gather_check(pgs.dp)
    destroy_distributed()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("align_parity")
    return {
        "reference": run_on_ranks(_run_layout, 1, 1, 1, str(work), "reference"),
        "tp2": run_on_ranks(_run_layout, 2, 2, 1, str(work), "tp2"),
        "pp2": run_on_ranks(_run_layout, 2, 1, 2, str(work), "pp2"),
        # interleaved 1F1B: 2 chunks of 1 layer per rank, the loss terms injected into every chunk
        "pp2vpp2": run_on_ranks(_run_layout, 2, 1, 2, str(work), "pp2vpp2", False, None, 1),
        "dp2": run_on_ranks(_run_layout, 2, 1, 1, str(work), "dp2"),
        "tp2sp": run_on_ranks(_run_layout, 2, 2, 1, str(work), "tp2sp", True),
        "full": run_on_ranks(_run_layout, 1, 1, 1, str(work), "full", False, "full"),
        "selective": run_on_ranks(_run_layout, 1, 1, 1, str(work), "selective", False, "selective"),
        "work": work,
    }


LAYOUTS = ["tp2", "tp2sp", "pp2", "pp2vpp2", "dp2", "full", "selective"]


def test_reference_batch_exercises_every_term(runs):
    ref = runs["reference"][0]
    assert ref["same_group_negatives"] > 0, "the batch must contain same-group non-translations"
    stats = ref["stats_untied"]
    assert stats["contrastive"] > 0 and stats["word_lm"] > 0 and stats["collapse"] >= 0
    assert len(stats["per_layer"]) == 6  # embedding, 4 layers, output embedding


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_matches_single_process(runs, layout, variant):
    ref = runs["reference"][0][f"stats_{variant}"]
    for result in runs[layout]:
        got = result[f"stats_{variant}"]
        for key in ("total", "contrastive", "collapse", "word_lm"):
            assert got[key] == pytest.approx(ref[key], rel=RTOL, abs=1e-9), key
        for name, value in ref["per_layer"].items():
            assert got["per_layer"][name] == pytest.approx(value, rel=RTOL), name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_match_single_process(runs, layout, variant):
    reference = read_full_checkpoint(runs["work"] / f"grads_{variant}_reference")
    parallel = read_full_checkpoint(runs["work"] / f"grads_{variant}_{layout}")
    assert reference.keys() == parallel.keys()
    for key in reference:
        if "extra_state" in key:
            continue
        scale = reference[key].abs().max().item()
        assert scale > 0, f"no gradient reaches {key}"
        torch.testing.assert_close(parallel[key], reference[key], rtol=RTOL, atol=ATOL_OF_MAX * scale, msg=key)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_alignment_gap_matches_single_process(runs, layout):
    ref = runs["reference"][0]
    for result in runs[layout]:
        for got, expected in zip((result["gap"], *result["report_gaps"]), (ref["gap"], *ref["report_gaps"])):
            assert got.keys() == expected.keys()
            for name in expected:
                assert got[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prepass_run_matches_single_process(runs, layout):
    ref = runs["reference"][0]
    for result in runs[layout]:
        assert len(result["history"]) == 3
        for (total, norm), (ref_total, ref_norm) in zip(result["history"], ref["history"]):
            assert total == pytest.approx(ref_total, rel=RTOL)
            assert norm == pytest.approx(ref_norm, rel=RTOL)


def test_all_gather_with_grad_sums_shard_gradients_across_ranks(runs):
    assert all(result["gather_check"] for result in runs["dp2"])


def test_full_recomputation_taps_each_layer_once_per_microbatch(runs):
    """4 layers x 2 microbatches: each recomputed layer output gets exactly its first capture's
    gradient (a second capture or a missing injection breaks the counts or the parity above)."""
    for variant in VARIANTS:
        assert runs["full"][0][f"recomputed_{variant}"] == 4 * 2
        assert runs["selective"][0][f"recomputed_{variant}"] == 0
        assert runs["reference"][0][f"recomputed_{variant}"] == 0
