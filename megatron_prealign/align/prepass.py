"""Stage `align`: the alignment pre-pass (PreAlign stage 1) on a megatron-core GPTModel.

`run_align_prepass` trains the model for `AlignConfig.steps` steps on word pairs from the
lexicon, with its own optimizer and LR schedule, and reports the losses and the alignment gap
before and after. Afterwards the caller builds a fresh optimizer and scheduler for pretraining.

Loss of one step (M microbatches, K selected layer slots, see capture.py for slots):

    total = align_weight   * 1/M sum_j 1/K sum_l InfoNCE_l(pool_j)
          + collapse_weight * 1/M sum_j 1/K sum_l max(0, mean cos_l(pool_j))      (optional)
          + lm_weight      * (sum of word-LM token losses) / (LM tokens in the global batch)

How it maps onto megatron-core (calculate_per_token_loss=True): every microbatch reports its
word count as `num_tokens`, so `finalize_model_grads` divides gradients by B, the words in the
global batch; each microbatch therefore back-propagates B times its share of `total`. The LM share
and the loss terms of the slots on the last stage are part of the loss the last stage returns;
the slots of other stages are injected into their stage's backward at the stage's output
(`InjectAuxLoss`), so no stage needs another stage's activations. Under tensor parallelism the
pooled hidden states are the same on every TP rank (summed over the ranks' position slices under
sequence parallelism) and the vocab-sharded LM-head rows are pooled with a TP all-reduce, so
every TP rank computes the same, unsharded loss. Under full recomputation the representations of
checkpointed layers get their gradient when the layers are recomputed (capture.py).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from megatron_prealign.align.capture import ChunkTaps, slot_names, unwrap_model
from megatron_prealign.align.config import AlignConfig
from megatron_prealign.align.data import (
    WordMicrobatch,
    WordPairSampler,
    _translation_keys,
    build_microbatches,
    split_entries,
)
from megatron_prealign.align.loss import all_gather_with_grad, collapse_penalty, info_nce
from megatron_prealign.align.metrics import alignment_gap, evaluation_pairs, gap_words, sequence_multiple
from megatron_prealign.lexicon import Lexicon
from megatron_prealign.log import get_logger, log_rank0
from megatron_prealign.optim import OptimConfig
from megatron_prealign.platform import compute_device
from megatron_prealign.schedule import model_chunks, run_schedule

__all__ = ["AlignConfig", "AlignReport", "AlignmentObjective", "PrepassResume", "PrepassStop", "run_align_prepass"]

logger = get_logger(__name__)


class AlignmentObjective:
    """The pre-pass loss on this rank's model chunks: hooks, forward_step/loss_func for
    megatron-core's schedule, and the per-step statistics.

    Args:
        model: this rank's DDP-wrapped model chunk, or its list of chunks (interleaved pipeline:
            each chunk injects the terms of the slots it holds, as a pipeline stage does).
        cfg: the pre-pass config (temperature, weights, layers, microbatches).
        pg_collection: megatron-core `ProcessGroupCollection` (uses `.tp`, `.pp`, `.dp`).
    """

    def __init__(self, model, cfg: AlignConfig, pg_collection):
        self.model = model
        self.cfg = cfg
        self.chunks = model_chunks(model)
        self.module = unwrap_model(self.chunks[0])
        self.pgs = pg_collection
        self.dp_group = pg_collection.dp
        self.pp_group = pg_collection.pp
        self.taps = ChunkTaps(model, tp_group=pg_collection.tp)
        self.num_layers = self.taps.num_layers
        self.names = slot_names(self.num_layers)
        self.selected = cfg.layer_slots(self.num_layers)
        self.stage_selected = [s for s in self.taps.stage_slots if s in self.selected]
        for tap in self.taps:
            tap.stage_end = self._stage_end
            tap.grad_scale = self._grad_scale
        self._stats: torch.Tensor | None = None

    # ---------------------------------------------------------------- per-microbatch terms

    def _grad_scale(self) -> float | torch.Tensor:
        # The schedule multiplies the last stage's loss by grad_scale_func(1) (fp16 loss scaling);
        # injected terms must be scaled the same way. A 0-d device tensor: no host sync.
        func = self.module.config.grad_scale_func
        if func is None:
            return 1.0
        return func(torch.ones(1, device=compute_device())).detach().reshape(())

    def _terms(self, forward, slots: list[int]) -> torch.Tensor:
        """B x this rank's share of the step loss from `slots` of one microbatch (scalar), as a
        tensor whose gradient is the terms' gradient.

        Representations captured inside a chunk that full recomputation checkpoints carry no
        graph: the terms are computed on detached copies, their gradient with respect to each
        such representation is stored for the recomputation to inject (capture.py), and the
        returned tensor is the first-order surrogate sum(rep * grad) over the others, whose
        gradient equals the terms' gradient."""
        reps = [forward.reps[s] for s in slots]
        if all(rep.requires_grad for rep in reps) or not torch.is_grad_enabled():
            return self._terms_value(forward.batch, slots, reps)
        leaves = [rep.detach().requires_grad_(True) for rep in reps]
        grads = torch.autograd.grad(self._terms_value(forward.batch, slots, leaves), leaves)
        surrogate = None
        for slot, rep, grad in zip(slots, reps, grads):
            if rep.requires_grad:
                part = (rep * grad).sum()
                surrogate = part if surrogate is None else surrogate + part
            else:
                forward.rep_grads[slot] = grad
        return surrogate if surrogate is not None else torch.zeros((), device=grads[0].device)

    def _terms_value(self, batch: WordMicrobatch, slots: list[int], reps: list[torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        local = torch.stack(reps)  # [Ks, b, h]
        pool = all_gather_with_grad(local.transpose(0, 1).contiguous(), self.dp_group)  # [W, Ks, h]
        pool = pool.transpose(0, 1)  # [Ks, W, h]
        contrastive = info_nce(local, pool, batch.positive_mask, batch.negative_mask,
                               cfg.temperature).sum(dim=1) / batch.num_pool_anchors  # [Ks]
        loss = cfg.align_weight * contrastive.sum()
        index = torch.tensor(slots, device=contrastive.device)
        m = cfg.num_microbatches
        self._stats[index] += contrastive.detach() / m
        if cfg.collapse_weight > 0:
            collapse = collapse_penalty(local, pool, batch.pool_offset)  # [Ks]
            loss = loss + cfg.collapse_weight * collapse.sum()
            self._stats[index + self.num_layers + 2] += collapse.detach() / m
        return loss * (batch.num_words_global / (len(self.selected) * m))

    def _stage_end(self, forward) -> torch.Tensor | None:
        slots = [s for s in self.stage_selected if s in forward.reps]
        return self._terms(forward, slots) if slots else None

    def _loss_func(self, forward, output_tensor: torch.Tensor):
        batch: WordMicrobatch = forward.batch
        token_losses = output_tensor.float()  # [b, s]
        lm_sum = (token_losses * batch.loss_mask).sum()
        lm_tokens = max(batch.num_lm_tokens_global, 1)
        loss = self.cfg.lm_weight * (batch.num_words_global / lm_tokens) * lm_sum
        self._stats[-1] += lm_sum.detach() / lm_tokens
        output_tap = self.taps.output_tap
        if output_tap.output_slot in self.stage_selected:
            forward.reps[output_tap.output_slot] = output_tap.output_embedding_rep(batch)
        slots = [s for s in self.stage_selected if s in forward.reps]
        if slots:
            loss = loss + self._terms(forward, slots)
        num_words = torch.tensor(batch.tokens.shape[0], dtype=torch.int, device=loss.device)
        return loss, num_words, {}

    def _forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        with self.taps.for_model(model).forward(batch, self.selected) as forward:
            output = model(batch.tokens, batch.position_ids, None, labels=batch.labels)
        return output, partial(self._loss_func, forward)

    # ------------------------------------------------------------------------------ step

    @contextmanager
    def attached(self):
        """Hooks registered and fp16 loss scaling wired for the duration of the block."""
        with self.taps.attached():
            yield self

    @property
    def recomputed_injections(self) -> int:
        """Layer outputs that got their gradient at recomputation (full recompute; tests)."""
        return self.taps.recomputed_injections

    def forward_backward(self, microbatches: list[WordMicrobatch]) -> dict[str, Any]:
        """Forward and backward of one step over this rank's microbatches (inside `attached()`);
        gradients end in the DDP grad buffers, finalized (DP-reduced, divided by B).

        Returns:
            Global (all-rank) values: `contrastive`, `collapse`, `word_lm`, `total`, and
            `per_layer` {slot name: InfoNCE}, identical on every rank.
        """
        if len(microbatches) != self.cfg.num_microbatches:
            raise ValueError(f"expected {self.cfg.num_microbatches} microbatches, got {len(microbatches)}")
        device = microbatches[0].tokens.device
        self._stats = torch.zeros(2 * (self.num_layers + 2) + 1, dtype=torch.float64, device=device)
        seq_length, micro_batch_size = microbatches[0].tokens.shape[1], microbatches[0].tokens.shape[0]
        run_schedule(self.model, self._forward_step, [iter(microbatches) for _ in self.chunks],
                     num_microbatches=len(microbatches),
                     seq_length=seq_length, micro_batch_size=micro_batch_size, pg_collection=self.pgs,
                     loss_tokens=_num_words)
        self.taps.check_drained()
        stats = self._stats
        # Shares of the pool's words are summed over DP ranks; stages own disjoint slots (and only
        # the last stage has the LM term), so a sum over the pipeline group assembles them.
        dist.all_reduce(stats, group=self.dp_group)
        dist.all_reduce(stats, group=self.pp_group)
        values = stats.cpu().numpy()
        width = self.num_layers + 2
        contrastive = float(np.mean([values[s] for s in self.selected]))
        collapse = float(np.mean([values[width + s] for s in self.selected]))
        word_lm = float(values[-1])
        cfg = self.cfg
        return {
            "total": cfg.align_weight * contrastive + cfg.collapse_weight * collapse + cfg.lm_weight * word_lm,
            "contrastive": contrastive,
            "collapse": collapse,
            "word_lm": word_lm,
            "per_layer": {self.names[s]: float(values[s]) for s in self.selected},
        }


def _num_words(batch: WordMicrobatch) -> int:
    """The `num_tokens` `_loss_func` reports for a microbatch: its words."""
    return batch.tokens.shape[0]


@dataclass
class AlignReport:
    """What the pre-pass did; `to_dict()` is JSON-serializable (for prealign_state.json)."""

    steps: int
    selected_layers: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per step: total, contrastive, collapse, word_lm, per_layer, lr, grad_norm."""
    gap_before: dict[str, float] = field(default_factory=dict)
    """Alignment gap per layer slot before training (metrics.alignment_gap); empty when the
    evaluation words hold no translation pair."""
    gap_after: dict[str, float] = field(default_factory=dict)
    gap_split: str = "heldout"
    """`heldout` (unseen groups) or `train` (no held-out split configured)."""
    dictionary_gap_before: dict[str, float] = field(default_factory=dict)
    """With a held-out split, the same gap on words the pre-pass trains on (what it aligns
    directly; the held-out gap shows what carries over to unseen words). Empty otherwise."""
    dictionary_gap_after: dict[str, float] = field(default_factory=dict)
    steps_done: int = 0
    """Steps run so far, over every resume; below `steps` when a signal stopped the pre-pass."""
    num_train_entries: int = 0
    num_eval_words: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def stopped(self) -> bool:
        """Whether a signal stopped the pre-pass before its last step."""
        return self.steps_done < self.steps


@dataclass
class PrepassResume:
    """Where a stopped pre-pass continues: the report so far (`AlignReport.to_dict()`, its
    `steps_done` the next step), and `load(backend)` restoring the weights, optimizer state, LR
    schedule and RNG streams saved when it stopped into the newly built backend."""

    report: dict[str, Any]
    load: Callable[[Any], None]


@dataclass
class PrepassStop:
    """How a pre-pass stops mid-way: `requested()` (collective, after each step: e.g. a
    preemption signal on any rank) and `save(backend, report)` writing a resumable checkpoint
    (collective)."""

    requested: Callable[[], bool]
    save: Callable[[Any, "AlignReport"], None]


def _check_model(model, lexicon: Lexicon, *, ddp: bool) -> None:
    from megatron.core.distributed import DistributedDataParallel

    chunks = model_chunks(model)
    if ddp and not all(isinstance(chunk, DistributedDataParallel) for chunk in chunks):
        raise TypeError(
            "run_align_prepass needs the model wrapped in megatron-core DDP "
            "(megatron_prealign.training.ddp.wrap_ddp), the same wrapper pretraining uses, "
            "or a `new_backend` that wraps it (the DeepSpeed backend)"
        )
    vocab = unwrap_model(chunks[0]).vocab_size
    if len(lexicon.entry_flat) and int(lexicon.entry_flat.max()) >= vocab:
        raise ValueError(
            f"lexicon token ids go up to {int(lexicon.entry_flat.max())} but the model's vocabulary has "
            f"{vocab} rows: the lexicon was built for another tokenizer"
        )


def megatron_backend(model, pg_collection, cfg: OptimConfig, train_iters: int):
    """The pre-pass's own megatron-core optimizer and schedule over the DDP-wrapped `model`."""
    from megatron_prealign.optim import MegatronBackend

    cfg = replace(cfg, use_distributed_optimizer=model_chunks(model)[0].ddp_config.use_distributed_optimizer)
    return MegatronBackend(model, cfg, train_iters=train_iters, samples_per_step=1, pg_collection=pg_collection)


def run_align_prepass(model, lexicon: Lexicon, cfg: AlignConfig, pg_collection, *, pad_id: int = 0,
                      on_step: Callable[[dict[str, Any]], None] | None = None,
                      new_backend: Callable[[OptimConfig, int], Any] | None = None,
                      stop: PrepassStop | None = None, resume: PrepassResume | None = None) -> AlignReport:
    """Run the alignment pre-pass on `model` (all ranks call it, after any checkpoint load).

    Args:
        model: this rank's model chunk wrapped with `training.ddp.wrap_ddp` (random or loaded
            weights; they are trained in place); the bare module with `new_backend`.
        lexicon: the compiled lexicon of the model's tokenizer.
        cfg: pre-pass config.
        pg_collection: megatron-core ProcessGroupCollection from `init_distributed`.
        pad_id: token id written into padding slots (masked everywhere; any valid id works).
        on_step: called on every rank with each step's record (`step`, losses, `per_layer`,
            `lr`, `grad_norm`, `step_seconds`), e.g. to write the metrics log.
        new_backend: `new_backend(optim_cfg, steps) -> optim.TrainingBackend` builds
            the pre-pass's own optimizer and LR schedule over `model` (the DeepSpeed backend: its
            own engine); default `megatron_backend` (megatron-core's, `model` DDP-wrapped).
        stop: when `stop.requested()` after a step, `stop.save(backend, report)` and return
            early (`report.stopped`; no "after" gap) — preemption.
        resume: continue a stopped pre-pass at `resume.report["steps_done"]` (the gap before,
            history and sampling continue as if it had not stopped).

    Returns:
        AlignReport (identical on every rank). The pre-pass's backend is closed afterwards (its
        optimizer state discarded, the DDP grad buffers zeroed); build the pretraining optimizer
        afterwards (an optimizer built before would hold stale fp32 master weights under bf16/fp16).
    """

    _check_model(model, lexicon, ddp=new_backend is None)
    if new_backend is None:
        new_backend = partial(megatron_backend, model, pg_collection)
    started = time.perf_counter()
    train_ids, heldout_ids = split_entries(lexicon, cfg.heldout_fraction, cfg.seed)
    gap_split = "heldout" if len(heldout_ids) else "train"
    eval_ids = gap_words(lexicon, heldout_ids if len(heldout_ids) else train_ids, max_words=cfg.eval_max_words,
                         seed=cfg.seed, max_word_tokens=cfg.max_word_tokens)
    aligned, unrelated = evaluation_pairs(lexicon, eval_ids, 1, cfg.seed)
    if len(aligned) and len(unrelated):
        gap = partial(alignment_gap, lexicon=lexicon, entry_ids=eval_ids, pg_collection=pg_collection,
                      pad_id=pad_id, seed=cfg.seed)
    else:
        log_rank0(logger, "align: alignment gap not measured: the %d %s evaluation words hold %d translation "
                  "pairs and %d different-group pairs (it needs both)", len(eval_ids), gap_split, len(aligned),
                  len(unrelated), level=logging.WARNING)

        def gap(model) -> dict[str, float]:
            return {}
    dictionary_ids = gap_words(lexicon, train_ids, max_words=cfg.eval_max_words, seed=cfg.seed,
                               max_word_tokens=cfg.max_word_tokens) if len(heldout_ids) else train_ids[:0]
    if all(len(p) for p in evaluation_pairs(lexicon, dictionary_ids, 1, cfg.seed)):
        dictionary_gap = partial(alignment_gap, lexicon=lexicon, entry_ids=dictionary_ids,
                                 pg_collection=pg_collection, pad_id=pad_id, seed=cfg.seed)
    else:
        def dictionary_gap(model) -> dict[str, float]:
            return {}
    optim_cfg = OptimConfig(lr=cfg.lr, min_lr=cfg.min_lr, lr_decay_style="linear",
                            lr_warmup_iters=int(round(cfg.warmup_fraction * cfg.steps)),
                            weight_decay=cfg.weight_decay, adam_beta1=0.9, adam_beta2=0.999,
                            clip_grad=cfg.clip_grad)
    # Built first: on the DeepSpeed backend the engine is what the forward (and the gap) runs on.
    backend = new_backend(optim_cfg, cfg.steps) if cfg.steps > 0 else None
    model = backend.model if backend is not None else model
    objective = AlignmentObjective(model, cfg, pg_collection)
    report = AlignReport(steps=cfg.steps, selected_layers=[objective.names[s] for s in objective.selected],
                         gap_split=gap_split, num_eval_words=len(eval_ids))
    try:
        if resume is not None:
            report = AlignReport(**resume.report)
            if report.steps != cfg.steps:
                raise ValueError(f"the stopped pre-pass was configured for {report.steps} steps, this run for "
                                 f"{cfg.steps} (--align-steps): keep the same pre-pass to resume it")
            resume.load(backend)
            log_rank0(logger, "align: resuming the pre-pass at step %d/%d", report.steps_done + 1, cfg.steps)
        else:
            report.gap_before = gap(model)
            report.dictionary_gap_before = dictionary_gap(model)
            log_rank0(logger, "align: gap before (%s, %d words): %s", gap_split, len(eval_ids),
                      _format_gaps(report.gap_before))
            if report.dictionary_gap_before:
                log_rank0(logger, "align: gap before (dictionary words it trains on, %d words): %s",
                          len(dictionary_ids), _format_gaps(report.dictionary_gap_before))
        if backend is not None:
            sampler = WordPairSampler(lexicon, train_ids, pairs_per_batch=cfg.pairs_per_batch, seed=cfg.seed,
                                      max_word_tokens=cfg.max_word_tokens)
            report.num_train_entries = len(train_ids)
            dp_rank, dp_size = dist.get_rank(pg_collection.dp), dist.get_world_size(pg_collection.dp)
            keys = _translation_keys(lexicon)
            for chunk in model_chunks(model):
                chunk.train()
            with objective.attached():
                for step in range(report.steps_done, cfg.steps):
                    step_start = time.perf_counter()
                    pairs = sampler.global_pairs(step)
                    microbatches = [mb.to(compute_device()) for mb in build_microbatches(
                        lexicon, pairs, dp_rank=dp_rank, dp_size=dp_size,
                        num_microbatches=cfg.num_microbatches, pad_id=pad_id, translation_keys=keys,
                        seq_multiple=sequence_multiple(unwrap_model(model_chunks(model)[0]).config, pg_collection))]
                    backend.zero_grad()
                    record = objective.forward_backward(microbatches)
                    record["lr"] = backend.lr
                    ok, grad_norm = backend.step()
                    record["grad_norm"] = float(grad_norm) if grad_norm is not None else None
                    record["skipped"] = not ok
                    # float(grad_norm) and the loss statistics' copy to the host synchronize the
                    # device, so this is the step's real duration.
                    record["step_seconds"] = time.perf_counter() - step_start
                    report.history.append(record)
                    if on_step is not None:
                        on_step({"step": step + 1, **record})
                    if step % cfg.log_interval == 0 or step == cfg.steps - 1:
                        log_rank0(logger, "align step %d/%d: total %.4f contrastive %.4f word_lm %.4f "
                                  "collapse %.4f lr %.2e grad_norm %s", step + 1, cfg.steps, record["total"],
                                  record["contrastive"], record["word_lm"], record["collapse"], record["lr"],
                                  "n/a" if record["grad_norm"] is None else f"{record['grad_norm']:.4g}")
                    report.steps_done = step + 1
                    if stop is not None and report.steps_done < cfg.steps and stop.requested():
                        report.seconds += time.perf_counter() - started
                        log_rank0(logger, "align: stopping after step %d/%d (exit signal); saving a resumable "
                                  "checkpoint", report.steps_done, cfg.steps)
                        stop.save(backend, report)
                        return report
        report.steps_done = cfg.steps
        report.gap_after = gap(model)
        report.dictionary_gap_after = dictionary_gap(model)
    finally:
        if backend is not None:
            backend.close()
    report.seconds += time.perf_counter() - started
    log_rank0(logger, "align: gap after (%s): %s (%.1f s)", gap_split, _format_gaps(report.gap_after), report.seconds)
    if report.dictionary_gap_after:
        log_rank0(logger, "align: gap after (dictionary words): %s", _format_gaps(report.dictionary_gap_after))
    return report


def _format_gaps(gaps: dict[str, float]) -> str:
    return " ".join(f"{name}={value:+.3f}" for name, value in gaps.items())
