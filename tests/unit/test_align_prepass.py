"""Tier 2 (one process, megatron-core on CPU): the pre-pass on a real GPTModel.

One spawned process (megatron-core's CPU layer patches torch process-wide, so it stays out of the
pytest process) runs every check and returns numbers; the tests assert on them:
  1. one step of `AlignmentObjective` equals a slow reference that feeds each word as its own
     unpadded sequence, pools with `.mean(0)`, and spells InfoNCE / collapse / LM out in loops
     (loss value and every gradient);
  2. the alignment term is on: positive per layer, and its gradient reaches the embedding and the
     output layer with exactly the configured weight (grad(0.5 align + LM) - grad(LM) =
     0.5 grad(align));
  3. a few hundred pre-pass steps on a tiny model raise the held-out alignment gap at every layer
     while the word-LM loss falls (English-Clone style lexicon: clone tokens are disjoint, so only
     training can align them).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._dist import run_on_ranks

TRAIN_STEPS = 300


def _reference_step_loss(module, lexicon, pools, cfg, slots):
    """Slow, differentiable reference of one step's loss (module docstring of align/prepass.py)."""
    import torch
    import torch.nn.functional as F

    from megatron_prealign.platform import compute_device

    device = compute_device()
    num_layers = module.config.num_layers
    captured = {}
    handles = [module.embedding.register_forward_hook(lambda m, a, out: captured.__setitem__(0, out))]
    for layer in module.decoder.layers:
        handles.append(layer.register_forward_hook(
            lambda m, a, out, n=layer.layer_number: captured.__setitem__(n, out[0])))
    output_weight = module.output_layer.weight
    lm_sum, lm_tokens = 0.0, 0
    per_pool = []
    try:
        for pool in pools:
            reps = {slot: [] for slot in range(num_layers + 2)}
            for entry in pool:
                word = torch.tensor(lexicon.entry_tokens(int(entry)), dtype=torch.int64, device=device)
                n = len(word)
                labels = torch.cat([word[1:], torch.zeros(1, dtype=torch.int64, device=device)])
                token_losses = module(word[None], torch.arange(n, device=device)[None], None, labels=labels[None])
                lm_sum = lm_sum + token_losses[0, : n - 1].sum()
                lm_tokens += n - 1
                for slot in range(num_layers + 1):
                    reps[slot].append(captured[slot][:, 0].float().mean(dim=0))  # [n, 1, h] -> [h]
                reps[num_layers + 1].append(output_weight[word].float().mean(dim=0))
            per_pool.append(reps)
    finally:
        for handle in handles:
            handle.remove()

    total_contrastive, total_collapse = 0.0, 0.0
    for pool, reps in zip(pools, per_pool):
        groups = [lexicon.group_id(int(e)) for e in pool]
        for slot in slots:
            vectors = reps[slot]
            word_losses = []
            for i, e_i in enumerate(pool):
                translations = set(int(t) for t in lexicon.translations(int(e_i)))
                positives = [k for k, e_k in enumerate(pool) if int(e_k) in translations]
                negatives = [k for k in range(len(pool)) if groups[k] != groups[i]]
                if not positives:
                    continue
                sim = [F.cosine_similarity(vectors[i], vectors[k], dim=0) / cfg.temperature for k in range(len(pool))]
                terms = []
                for p in positives:
                    denominator = torch.exp(sim[p]) + sum(torch.exp(sim[n]) for n in negatives)
                    terms.append(-torch.log(torch.exp(sim[p]) / denominator))
                word_losses.append(sum(terms) / len(terms))
            total_contrastive = total_contrastive + sum(word_losses) / len(word_losses)
            cosines = [F.cosine_similarity(vectors[i], vectors[k], dim=0)
                       for i in range(len(pool)) for k in range(len(pool)) if i != k]
            total_collapse = total_collapse + torch.clamp(sum(cosines) / len(cosines), min=0.0)
    scale = 1.0 / (len(pools) * len(slots))
    return (cfg.align_weight * scale * total_contrastive + cfg.collapse_weight * scale * total_collapse
            + cfg.lm_weight * lm_sum / max(lm_tokens, 1))


def _main_grads(module):
    return {name: param.main_grad.detach().clone() for name, param in module.named_parameters()}


def _single_process(rank, world_size, workdir):
    import dataclasses

    from megatron_prealign.align import AlignConfig, AlignmentObjective, run_align_prepass, write_gap_plot
    from megatron_prealign.align.data import WordPairSampler, build_microbatches, clone_lexicon, split_entries
    from megatron_prealign.distributed import destroy_distributed, init_distributed
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import ModelConfig, build_model
    from megatron_prealign.platform import compute_device
    from megatron_prealign.training.ddp import wrap_ddp

    parallel = ParallelConfig()
    pgs = init_distributed(parallel, seed=7)
    lexicon = clone_lexicon(400, 48, num_clones=1, max_word_tokens=3, seed=0)
    model_cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128,
                            seq_length=8, vocab_size=lexicon.vocab_size, make_vocab_size_divisible_by=4)
    module = build_model(model_cfg, parallel, pgs)
    ddp = wrap_ddp(module, pg_collection=pgs)
    out = {}

    # 1. One step against the slow reference (two microbatches, collapse term on).
    cfg = AlignConfig(pairs_per_batch=8, num_microbatches=2, collapse_weight=0.7, align_weight=0.5)
    train_ids, _ = split_entries(lexicon, 0.2, cfg.seed)
    pairs = WordPairSampler(lexicon, train_ids, pairs_per_batch=8, seed=cfg.seed, max_word_tokens=3).global_pairs(0)
    microbatches = [mb.to(compute_device())  # the model's device (CUDA on a GPU machine)
                    for mb in build_microbatches(lexicon, pairs, dp_rank=0, dp_size=1, num_microbatches=2, pad_id=0)]
    slots = cfg.layer_slots(2)

    def objective_grads(step_cfg):
        ddp.zero_grad_buffer()
        objective = AlignmentObjective(ddp, step_cfg, pgs)
        with objective.attached():
            stats = objective.forward_backward(microbatches)
        return stats, _main_grads(module)

    stats, grads = objective_grads(cfg)
    ddp.zero_grad_buffer()
    reference = _reference_step_loss(module, lexicon, [pairs[:4].reshape(-1), pairs[4:].reshape(-1)], cfg, slots)
    reference.backward()
    reference_grads = _main_grads(module)
    out["reference_total"], out["total"] = float(reference.detach()), stats["total"]
    out["grad_max_error"] = {name: float((grads[name] - reference_grads[name]).abs().max() /
                                         reference_grads[name].abs().max()) for name in grads}
    out["reference_grad_scale"] = {name: float(g.abs().max()) for name, g in reference_grads.items()}

    # 2. The alignment term alone, and its exact share of the combined gradient.
    align_only, align_grads = objective_grads(dataclasses.replace(cfg, lm_weight=0.0, collapse_weight=0.0,
                                                                  align_weight=1.0))
    _, lm_grads = objective_grads(dataclasses.replace(cfg, align_weight=0.0, collapse_weight=0.0))
    _, mixed_grads = objective_grads(dataclasses.replace(cfg, align_weight=0.5, collapse_weight=0.0))
    out["align_only_stats"] = align_only
    out["align_grad_norm"] = {name: float(align_grads[name].norm()) for name in align_grads}
    out["linearity_error"] = {
        name: float((mixed_grads[name] - lm_grads[name] - 0.5 * align_grads[name]).abs().max() /
                    max(float(align_grads[name].abs().max()), 1e-30)) for name in align_grads}
    ddp.zero_grad_buffer()

    # 3. A short pre-pass from random init.
    train_cfg = AlignConfig(steps=TRAIN_STEPS, pairs_per_batch=32, heldout_fraction=0.2, eval_max_words=400,
                            log_interval=100, seed=5)
    report = run_align_prepass(ddp, lexicon, train_cfg, pgs)
    out["report"] = json.loads(json.dumps(report.to_dict()))
    out["hooks_left"] = sum(len(layer._forward_hooks) for layer in module.decoder.layers) + len(
        module.embedding._forward_hooks)
    out["grad_buffer_zero"] = all(float(p.main_grad.abs().max()) == 0 for p in module.parameters())
    write_gap_plot({"before": report.gap_before, "after": report.gap_after}, Path(workdir) / "gap.png")
    destroy_distributed()
    return out


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    work = tmp_path_factory.mktemp("align_prepass")
    return run_on_ranks(_single_process, 1, str(work))[0] | {"work": work}


def test_step_loss_equals_slow_reference(result):
    assert result["total"] == pytest.approx(result["reference_total"], rel=1e-5)


def test_step_gradients_equal_slow_reference(result):
    for name, error in result["grad_max_error"].items():
        assert result["reference_grad_scale"][name] > 0, f"no gradient reaches {name}"
        assert error < 1e-5, f"{name}: max error {error:.2e} of the largest entry"


def test_alignment_term_is_on_and_reaches_embedding_and_output_layer(result):
    stats = result["align_only_stats"]
    assert stats["word_lm"] > 0  # reported even when its weight is 0
    assert stats["contrastive"] > 0.5
    assert set(stats["per_layer"]) == {"embedding", "layer_1", "layer_2", "output_embedding"}
    assert all(value > 0.5 for value in stats["per_layer"].values())
    norms = result["align_grad_norm"]
    assert norms["embedding.word_embeddings.weight"] > 1e-3
    assert norms["output_layer.weight"] > 1e-3
    assert norms["decoder.layers.0.self_attention.linear_qkv.weight"] > 1e-4
    for name, error in result["linearity_error"].items():
        assert error < 1e-4, f"{name}: alignment share of the gradient off by {error:.2e}"


def test_prepass_raises_heldout_gap_at_every_layer_while_word_lm_falls(result):
    report = result["report"]
    assert report["gap_split"] == "heldout" and report["num_eval_words"] == 160
    before, after = report["gap_before"], report["gap_after"]
    assert set(before) == {"embedding", "layer_1", "layer_2", "output_embedding"}
    for name in before:
        assert abs(before[name]) < 0.15, f"{name}: random init should start near 0, got {before[name]:.3f}"
        assert after[name] > 0.5 and after[name] > before[name] + 0.4, (name, before[name], after[name])
    # The words it trains on are measured too, and end at least as aligned as unseen ones.
    dictionary_before, dictionary_after = report["dictionary_gap_before"], report["dictionary_gap_after"]
    assert set(dictionary_after) == set(before)
    for name in before:
        assert dictionary_after[name] > dictionary_before[name] + 0.4, (name, dictionary_before[name],
                                                                        dictionary_after[name])
    history = report["history"]
    assert len(history) == TRAIN_STEPS and not any(step["skipped"] for step in history)
    first_lm = history[0]["word_lm"]
    last_lm = sum(step["word_lm"] for step in history[-20:]) / 20
    assert last_lm < first_lm - 0.5
    first_c = history[0]["contrastive"]
    assert sum(step["contrastive"] for step in history[-20:]) / 20 < 0.25 * first_c


def test_prepass_leaves_no_hooks_and_zeroed_gradients_and_writes_plot(result):
    assert result["hooks_left"] == 0
    assert result["grad_buffer_zero"]
    assert (result["work"] / "gap.png").read_bytes()[:4] == b"\x89PNG"
