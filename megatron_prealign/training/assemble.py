"""Assembling a run from its config: tokenizer, model, optimizer, checkpoint restore, datasets.

Kept apart from `pretrain.py` so the entry point reads as an orchestrator and each piece is
testable on its own.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from megatron.core import parallel_state

from megatron_prealign.checkpointing import (
    CheckpointError, load_checkpoint, read_checkpoint_state, save_checkpoint)
from megatron_prealign.config import RunConfig
from megatron_prealign.log import get_logger, log_rank0
from megatron_prealign.model import ModelConfig, build_model
from megatron_prealign.training.data import build_datasets
from megatron_prealign.training.ddp import wrap_ddp
from megatron_prealign.training.loop import MetricsWriter, TrainState, train_state_from_checkpoint
from megatron_prealign.training.optim import build_optimizer, build_scheduler

logger = get_logger(__name__)

# Model fields that may differ between a checkpoint and the run that loads it (precision,
# implementation, regularization, initialization, context length): not the weights' meaning.
_NON_ARCHITECTURE_FIELDS = {"bf16", "fp16", "transformer_impl", "attention_backend", "recompute_granularity",
                            "recompute_method", "recompute_num_layers", "make_vocab_size_divisible_by",
                            "hidden_dropout", "attention_dropout", "seq_length", "max_position_embeddings",
                            "init_method_std"}


def build_run_tokenizer(cfg: RunConfig):
    if not cfg.data.tokenizer_model:
        return None
    from megatron_prealign.lexicon import build_tokenizer

    return build_tokenizer(cfg.data.tokenizer_type, cfg.data.tokenizer_model)


def read_start_checkpoint(cfg: RunConfig) -> dict[str, Any] | None:
    """prealign_state.json of the checkpoint this run starts from (None when there is none yet)."""
    path = cfg.training.load or cfg.training.pretrained_checkpoint
    if not path:
        return None
    try:
        return read_checkpoint_state(path)[1]
    except CheckpointError:
        if cfg.training.pretrained_checkpoint:
            raise
        return None  # an empty --load root: first start of a requeueable job


def resolve_model_config(cfg: RunConfig, tokenizer, start_meta: dict[str, Any] | None) -> ModelConfig:
    """The architecture to build.

    From the flags, or from the checkpoint with --use-checkpoint-args. The vocabulary comes from
    the tokenizer (as in Megatron-LM), unless the checkpoint's embedding is larger (models often
    ship embedding rows beyond the tokenizer's ids): then the checkpoint's size is kept.
    """
    model = cfg.model
    saved = (start_meta or {}).get("model")
    if cfg.training.use_checkpoint_args:
        if not saved:
            raise CheckpointError("--use-checkpoint-args needs --load or --pretrained-checkpoint with a model config")
        model = ModelConfig(**{**dataclasses.asdict(model),
                               **{k: v for k, v in saved.items() if k not in _NON_ARCHITECTURE_FIELDS}})
    vocab = tokenizer.vocab_size if tokenizer is not None else model.vocab_size
    if saved and saved.get("vocab_size", 0) >= vocab:
        vocab = saved["vocab_size"]
    return dataclasses.replace(model, vocab_size=vocab)


def build_model_and_optimizer(cfg: RunConfig, model_cfg: ModelConfig, pgs):
    model = wrap_ddp(build_model(model_cfg, cfg.parallel, pgs),
                     use_distributed_optimizer=cfg.optim.use_distributed_optimizer, pg_collection=pgs)
    optimizer, scheduler = build_optimizer_and_scheduler(cfg, model, pgs)
    return model, optimizer, scheduler


def build_optimizer_and_scheduler(cfg: RunConfig, model, pgs):
    optimizer = build_optimizer(cfg.optim, [model], bf16=cfg.model.bf16, fp16=cfg.model.fp16, pg_collection=pgs)
    scheduler = build_scheduler(cfg.optim, optimizer, train_iters=cfg.training.train_iters,
                                global_batch_size=global_batch_size(cfg))
    return optimizer, scheduler


def global_batch_size(cfg: RunConfig) -> int:
    return cfg.training.global_batch_size or cfg.training.micro_batch_size * parallel_state.get_data_parallel_world_size()


def run_identity(cfg: RunConfig, tokenizer, start_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed by this run (plus the provenance of a
    converted model, carried into every later checkpoint so an export keeps its HF config)."""
    lexicon_sha = None
    if cfg.data.lexicon:
        from megatron_prealign.lexicon import load_lexicon

        lexicon_sha = load_lexicon(cfg.data.lexicon, tokenizer).sha256
    identity = {
        "lexicon_sha256": lexicon_sha,
        "tokenizer_fingerprint": getattr(tokenizer, "fingerprint", None),
    }
    if start_meta and start_meta.get("source"):
        identity["source"] = start_meta["source"]
    return identity


def _check_compatible(path: str, meta: dict[str, Any], model_cfg: ModelConfig, identity: dict[str, Any],
                      override: bool) -> None:
    saved_model = meta.get("model")
    if saved_model:
        # Compared in the JSON form the checkpoint stores (tuples read back as lists).
        ours = json.loads(json.dumps(dataclasses.asdict(model_cfg)))
        diffs = [f"{k}: checkpoint {saved_model.get(k)!r} vs run {ours[k]!r}" for k in ours
                 if k not in _NON_ARCHITECTURE_FIELDS and k in saved_model and saved_model[k] != ours[k]]
        if diffs:
            raise CheckpointError(f"{path} holds a different architecture: " + "; ".join(diffs))
    for key, flag in (("lexicon_sha256", "--lexicon"), ("tokenizer_fingerprint", "--tokenizer-model")):
        saved, current = meta.get(key), identity.get(key)
        if saved and current and saved != current:
            message = (f"{path} was trained with another {flag} ({key} {saved[:12]}... vs {current[:12]}...); "
                       f"pass the original file, or --override-checkpoint-mismatch to continue anyway")
            if not override:
                raise CheckpointError(message)
            log_rank0(logger, "WARNING: %s", message)


def restore(cfg: RunConfig, model, optimizer, scheduler, model_cfg: ModelConfig,
            identity: dict[str, Any]) -> TrainState:
    """Apply --load / --pretrained-checkpoint. Returns where the run stands.

    `--load` of a training checkpoint restores everything (exact resume); of a checkpoint written
    before the first pretraining step (after --align-only) the weights and the finished pre-pass;
    of a weights-only (`release`, e.g. converted) checkpoint, and `--pretrained-checkpoint`, the
    weights only, starting at iteration 0 with the alignment pre-pass still to run. A `--load` root without a checkpoint
    yet starts fresh (first submission of a requeueable job).
    """
    training = cfg.training
    path = training.load or training.pretrained_checkpoint
    if not path:
        return TrainState()
    try:
        _, meta = read_checkpoint_state(path)
    except CheckpointError:
        if training.load and not training.pretrained_checkpoint:
            log_rank0(logger, "--load %s holds no checkpoint yet: starting from scratch", path)
            return TrainState()
        raise
    _check_compatible(path, meta, model_cfg, identity, training.override_checkpoint_mismatch)
    if training.load and meta.get("has_optimizer", False):
        meta = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
        return train_state_from_checkpoint(meta)
    load_checkpoint(path, model=model)
    if training.load and meta.get("iteration") == 0:
        # Our own checkpoint from before the first pretraining step (e.g. --align-only): resume
        # it, so a finished pre-pass is not run again.
        return TrainState(align_finished=bool(meta.get("align_finished")))
    return TrainState()


def make_save_fn(cfg: RunConfig, model, model_cfg: ModelConfig, identity: dict[str, Any], get_optimizer):
    """`save(state)` writing a full training checkpoint to --save (collective)."""

    def save(state: TrainState) -> None:
        optimizer, scheduler = get_optimizer()
        if state.iteration == 0:
            # Before the first pretraining step (right after the pre-pass, or --train-iters 0) the
            # optimizer holds no state to save; a resume starts it fresh, as the run would.
            optimizer = scheduler = None
        meta = {**dataclasses.asdict(state), **identity, "model": dataclasses.asdict(model_cfg),
                "config": cfg.to_dict()}
        save_checkpoint(cfg.training.save, model=model, state=meta, iteration=state.iteration,
                        optimizer=optimizer, scheduler=scheduler)

    return save


def build_train_datasets(cfg: RunConfig, tokenizer):
    """[train, valid, test] datasets sized for the whole run (built on every rank: TP ranks
    other than 0 hold them but do not read; megatron-core builds the index cache on rank 0 first)."""
    gbs = global_batch_size(cfg)
    evals = (cfg.training.train_iters // cfg.training.eval_interval + 1) if cfg.training.eval_interval else 1
    num_samples = [cfg.training.train_iters * gbs, evals * cfg.training.eval_iters * gbs,
                   cfg.training.eval_iters * gbs]
    return build_datasets(cfg.data, tokenizer, seq_length=cfg.model.seq_length, seed=cfg.training.seed,
                          num_samples=num_samples, is_built_on_rank=lambda: True)



def run_align_stage(cfg: RunConfig, model, tokenizer, pgs):
    """Stage `align`: the pre-pass on the built (and possibly loaded) model; writes the
    before/after alignment-gap plot next to the checkpoints. Returns the AlignReport."""
    from megatron_prealign.align import run_align_prepass, write_gap_plot
    from megatron_prealign.lexicon import load_lexicon

    lexicon = load_lexicon(cfg.data.lexicon, tokenizer)
    metrics = MetricsWriter(cfg.training.metrics_log, cfg.training.tensorboard_dir)

    def log_step(record: dict[str, Any]) -> None:
        # Pre-pass records carry `align_step` (pretraining records carry `iteration`).
        metrics.write({"align_step": record.pop("step"), **{f"align_{k}": v for k, v in record.items()}})

    try:
        report = run_align_prepass(model, lexicon, cfg.align, pgs, pad_id=getattr(tokenizer, "pad", 0),
                                   on_step=log_step)
    finally:
        metrics.close()
    if cfg.training.save and _is_rank0():
        write_gap_plot({"before pre-pass": report.gap_before, "after pre-pass": report.gap_after},
                       Path(cfg.training.save) / "alignment_gap_prepass.png",
                       title=f"Alignment gap by layer ({report.gap_split} words)")
    return report


def eval_hooks(cfg: RunConfig, model_cfg: ModelConfig, tokenizer, pgs) -> list:
    """Extra metrics at every evaluation: the held-out alignment gap per layer when a lexicon is
    given (for every arm, so runs with and without the pre-pass compare), with a plot of all
    evaluations so far written next to the checkpoints."""
    if not cfg.data.lexicon:
        return []
    if cfg.parallel.sequence_parallel:
        log_rank0(logger, "alignment gap not logged: its word forward does not support --sequence-parallel")
        return []
    from megatron_prealign.align import alignment_gap, evaluation_pairs, split_entries, write_gap_plot
    from megatron_prealign.lexicon import load_lexicon

    lexicon = load_lexicon(cfg.data.lexicon, tokenizer)
    train_ids, heldout_ids = split_entries(lexicon, cfg.align.heldout_fraction, cfg.align.seed)
    words = heldout_ids if len(heldout_ids) else train_ids
    words = words[: cfg.align.eval_max_words]
    aligned, unrelated = evaluation_pairs(lexicon, words, 16, cfg.align.seed)
    if not len(aligned) or not len(unrelated):
        log_rank0(logger, "alignment gap not logged: the %d evaluation words hold %d translation pairs and "
                  "%d unrelated pairs, it needs both (raise --align-heldout-fraction or use a larger lexicon)",
                  len(words), len(aligned), len(unrelated))
        return []
    history: dict[str, dict[str, float]] = {}

    def hook(model) -> dict:
        gaps = alignment_gap(model, lexicon, words, pgs, seed=cfg.align.seed, pad_id=getattr(tokenizer, "pad", 0))
        history[f"eval {len(history) + 1}"] = gaps
        if cfg.training.save and _is_rank0():
            write_gap_plot(history, Path(cfg.training.save) / "alignment_gap.png")
        return {"alignment_gap": gaps}

    return [hook]


def _is_rank0() -> bool:
    import torch.distributed as dist

    return dist.get_rank() == 0
