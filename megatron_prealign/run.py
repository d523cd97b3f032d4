"""One PreAlign run on this rank, assembled from its `RunConfig`.

`Run(cfg, pg_collection)` loads the tokenizer and the lexicon once, builds this rank's model
chunk and restores `--load` / `--pretrained-checkpoint`. Its two stages run in order:

    run.align()      # stage "align": the pre-pass, unless finished; fresh optimizer afterwards
    run.pretrain()   # stage "pretrain": the Trainer over the code-switched data

Each stage trains through its own backend (optim.py): megatron-core's DDP, optimizer
and schedule by default, a DeepSpeed ZeRO engine with `--deepspeed-config`
(megatron_prealign/deepspeed). Every piece receives the run's process groups explicitly.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import torch.distributed as dist

from megatron_prealign.align import AlignReport, PrepassResume, PrepassStop, alignment_gap, evaluation_pairs, \
    gap_words, run_align_prepass, split_entries, steps_for_token_budget, write_gap_plot
from megatron_prealign.checkpointing import CheckpointError, NoCheckpoint, check_save_root, load_checkpoint, \
    load_scheduler_state, new_async_queue, read_checkpoint_state, remove_unfinished_saves, \
    resolve_checkpoint_dir, save_checkpoint, set_aside_newer, start_checkpoint_writer_queue
from megatron_prealign.config import RunConfig
from megatron_prealign.fileio import atomic_path
from megatron_prealign.lexicon import build_tokenizer, load_lexicon
from megatron_prealign.log import get_logger, log_rank0
from megatron_prealign.model import ModelConfig, build_model
from megatron_prealign.optim import MegatronBackend, TrainingBackend
from megatron_prealign.preemption import PreemptionFlag
from megatron_prealign.schedule import model_chunks
from megatron_prealign.training.batches import BatchSchedule
from megatron_prealign.training.data import build_datasets, check_datasets, check_prefixes_exist
from megatron_prealign.training.ddp import wrap_ddp
from megatron_prealign.training.loop import MetricsWriter, Trainer, TrainState, train_state_from_checkpoint

logger = get_logger(__name__)

# Model fields that may differ between a checkpoint and the run that loads it (precision,
# implementation, regularization, initialization, context length): not the weights' meaning.
NON_ARCHITECTURE_FIELDS = {"bf16", "fp16", "transformer_impl", "attention_backend", "recompute_granularity",
                           "recompute_method", "recompute_num_layers", "make_vocab_size_divisible_by",
                           "hidden_dropout", "attention_dropout", "seq_length", "max_position_embeddings",
                           "init_method_std"}


class Run:
    """The run's pieces on this rank; see the module docstring for the stages.

    Args:
        cfg: the validated run config.
        pg_collection: megatron-core ProcessGroupCollection from `init_distributed`.
    """

    def __init__(self, cfg: RunConfig, pg_collection):
        self.cfg, self.pgs = cfg, pg_collection
        data = cfg.data
        self.tokenizer = _run_tokenizer(data)
        self.lexicon = load_lexicon(data.lexicon, self.tokenizer) if data.lexicon else None
        cfg = self.cfg = size_prepass(cfg, self.lexicon)
        if not cfg.training.align_only and (data.data_path or data.train_data_path):
            check_datasets(data, self.tokenizer)  # before hours of pre-pass, not after
        # Installed first, so a signal during start-up is kept for the first step to act on.
        self.preemption = PreemptionFlag(cfg.training.exit_signal_handler)
        self.stopped = False
        """Whether a signal stopped the run in the pre-pass (its checkpoint saved): no pretraining."""
        self._prepass_resume: tuple[Path, dict[str, Any]] | None = None
        self._built_datasets = None
        self._start_dir, self._start_is_load = locate_start(cfg.training)
        start = read_checkpoint_state(self._start_dir)[1] if self._start_dir else None
        self._replaceable: set[Path] = set()
        """Existing checkpoint directories the run's saves may replace: those it wrote, and the
        one it continues from."""
        if cfg.training.save:
            self._prepare_save_root(start)
        self.model_cfg = resolve_model_config(cfg, self.tokenizer, start)
        self.identity: dict[str, Any] = {
            "lexicon_sha256": self.lexicon.sha256 if self.lexicon is not None else None,
            "tokenizer_fingerprint": getattr(self.tokenizer, "fingerprint", None),
        }
        if start and start.get("source"):
            # The provenance of a converted model, so an export keeps its Hugging Face config.
            self.identity["source"] = start["source"]
        self.deepspeed = None
        if cfg.deepspeed.config:
            from megatron_prealign.deepspeed import DeepSpeedStages

            self.deepspeed = DeepSpeedStages(cfg, pg_collection, global_batch_size=self.global_batch_size)
        if cfg.training.save:
            start_checkpoint_writer_queue()  # forked before the model exists (see its docstring)
        module = build_model(self.model_cfg, cfg.parallel, pg_collection)
        # DeepSpeed: the bare module, wrapped by each stage's engine once its weights are loaded.
        optim = cfg.optim
        self.model = module if self.deepspeed else wrap_ddp(
            module, use_distributed_optimizer=optim.use_distributed_optimizer,
            overlap_grad_reduce=optim.overlap_grad_reduce, overlap_param_gather=optim.overlap_param_gather,
            grad_reduce_in_fp32=optim.accumulate_allreduce_grads_in_fp32, pg_collection=pg_collection)
        self._backend: TrainingBackend | None = None
        self._async_saves = new_async_queue() if cfg.training.async_save else None
        self.state = self._restore()

    @property
    def backend_name(self) -> str:
        return "deepspeed" if self.deepspeed else "megatron"

    @property
    def backend(self) -> TrainingBackend:
        """Pretraining's optimizer and LR schedule, built on first use (after the pre-pass, which
        builds its own, and after the weights are loaded)."""
        if self._backend is None:
            cfg = self.cfg
            if self.deepspeed is not None:
                self._backend = self.deepspeed.pretraining_backend(self.model)
            else:
                self._backend = MegatronBackend(self.model, cfg.optim, train_iters=cfg.training.train_iters,
                                                samples_per_step=self.global_batch_size, pg_collection=self.pgs,
                                                train_samples=cfg.training.train_samples)
        return self._backend

    def _close_backend(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    @property
    def global_batch_size(self) -> int:
        training = self.cfg.training
        return training.global_batch_size or training.micro_batch_size * self.pgs.dp.size()

    # -- stages --------------------------------------------------------------------------------

    def align(self) -> AlignReport | None:
        """Stage "align": the pre-pass on the built (and possibly loaded) model, after any
        checkpoint load so it also aligns converted models. Skipped when `--align-steps` is 0 or
        the checkpoint's pre-pass is finished. Pretraining then gets a fresh optimizer and
        schedule from the aligned weights."""
        cfg = self.cfg
        if cfg.align.steps == 0:
            return None
        if self.state.align_finished:
            log_rank0(logger, "alignment pre-pass: already finished in the loaded checkpoint; skipped")
            return None
        metrics = MetricsWriter(cfg.training.metrics_log, cfg.training.tensorboard_dir)

        def log_step(record: dict[str, Any]) -> None:
            # Pre-pass records carry `align_step` (pretraining records carry `iteration`).
            metrics.write({"align_step": record.pop("step"), **{f"align_{k}": v for k, v in record.items()}})

        self._close_backend()  # the pre-pass's own optimizer (and engine) is the only one attached
        new_backend = partial(self.deepspeed.prepass_backend, self.model) if self.deepspeed else None
        stop = PrepassStop(requested=lambda: self.preemption.any_rank()[0], save=self._save_prepass)
        resume = None
        if self._prepass_resume is not None:
            path, meta = self._prepass_resume
            resume = PrepassResume(report=meta["align_partial"], load=partial(self._load_prepass, path))
        try:
            report = run_align_prepass(self.model, self.lexicon, cfg.align, self.pgs, new_backend=new_backend,
                                       pad_id=getattr(self.tokenizer, "pad", 0), on_step=log_step,
                                       stop=stop, resume=resume)
        finally:
            metrics.close()
        if report.stopped:
            self.stopped = True
            return report
        log_rank0(logger, "alignment pre-pass: %d steps in %.0f s", report.steps, report.seconds)
        if cfg.training.save and dist.get_rank() == 0:
            write_gap_plot({"before pre-pass": report.gap_before, "after pre-pass": report.gap_after},
                           Path(cfg.training.save) / "alignment_gap_prepass.png",
                           title=f"Alignment gap by layer ({report.gap_split} words)")
        self.state.align_finished, self.state.align_step = True, 0
        if cfg.training.save:
            self.save()
        return report

    def _save_prepass(self, backend, report: AlignReport) -> None:
        """A resumable checkpoint of a pre-pass stopped after `report.steps_done` steps: the
        weights, the pre-pass's optimizer state, LR schedule and RNG streams, and the report so
        far, as iteration 0 (collective)."""
        save = self.cfg.training.save
        if not save:
            log_rank0(logger, "align: no --save; the stopped pre-pass is not kept", level=logging.WARNING)
            return
        self.state.align_step = report.steps_done
        meta = {**self._meta(), "align_partial": report.to_dict()}
        if self.deepspeed is not None:
            self._replaceable.add(self.deepspeed.save(save, module=self.model, backend=backend, state=meta,
                                                      iteration=0, replaceable=self._replaceable))
        else:
            self._replaceable.add(save_checkpoint(save, model=backend.model, state=meta, iteration=0,
                                                  optimizer=backend.optimizer, scheduler=backend.scheduler,
                                                  pg_collection=self.pgs, replaceable=self._replaceable))

    def _load_prepass(self, path: Path, backend) -> None:
        """Restore a stopped pre-pass's state into its newly built backend (see _save_prepass)."""
        if self.deepspeed is not None:
            # The weights are in place already (_restore); this restores the RNG streams. The
            # engine's own checkpoint brings the optimizer and the LR schedule back.
            load_checkpoint(path, model=self.model, pg_collection=self.pgs, with_rng=True)
            self.deepspeed.load_optimizer(path, backend)
            return
        load_checkpoint(path, model=backend.model, optimizer=backend.optimizer, scheduler=backend.scheduler,
                        pg_collection=self.pgs, with_rng=True)

    def prepare_data(self) -> None:
        """Open pretraining's datasets now, before the pre-pass, so that what pretraining needs
        (the compiled code-switch kernel, the data files, the sidecars matching the lexicon and
        the tokens) fails at start-up rather than after hours of pre-pass. Collective."""
        if self._built_datasets is None and not self.cfg.training.align_only:
            if self.cfg.data.codeswitch_ratio > 0:
                from megatron_prealign.data.codeswitch import _native

                _native()
            self._built_datasets = self._datasets()

    def pretrain(self) -> TrainState:
        """Stage "pretrain": the Trainer from the run's state to `--train-iters`."""
        cfg = self.cfg
        self.prepare_data()
        trainer = Trainer(cfg.training, backend=self.backend, datasets=self._built_datasets, state=self.state,
                          pg_collection=self.pgs,
                          seq_length=cfg.model.seq_length, num_workers=cfg.data.num_workers,
                          save_fn=lambda state: self.save(), eval_hooks=self._eval_hooks(),
                          after_step=(lambda: self.finalize_saves(blocking=False)) if self._async_saves is not None else None,
                          preemption=self.preemption)
        try:
            return trainer.train()
        finally:
            trainer.close()

    def close(self) -> None:
        """Wait for background checkpoint writes, then release the current stage's optimizer
        state (and DeepSpeed engine)."""
        try:
            if self._async_saves is not None:
                self.finalize_saves(blocking=True)
                self._async_saves.close()
                self._async_saves = None
        finally:
            self._close_backend()

    def finalize_saves(self, blocking: bool) -> None:
        """Commit the background checkpoint writes that every rank has finished (all of them,
        waiting, when `blocking`); collective."""
        self._async_saves.maybe_finalize_async_calls(blocking=blocking)

    # -- checkpoints ---------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        """prealign_state.json of a checkpoint of the current state."""
        return {**dataclasses.asdict(self.state), **self.identity, "model": dataclasses.asdict(self.model_cfg),
                "config": self.cfg.to_dict(), "backend": self.backend_name}

    def save(self) -> None:
        """A full training checkpoint of the current state to `--save` (collective)."""
        state = self.state
        # Before the first pretraining step (right after the pre-pass, or --train-iters 0) the
        # optimizer holds no state to save; a resume starts it fresh, as the run would.
        backend = self._backend if state.iteration > 0 else None
        meta = self._meta()
        if self.deepspeed is not None:
            self._replaceable.add(self.deepspeed.save(self.cfg.training.save, module=self.model, backend=backend,
                                                      state=meta, iteration=state.iteration,
                                                      replaceable=self._replaceable))
            return
        chunks = model_chunks(self.model)
        if self.cfg.optim.overlap_param_gather:
            # Finish the parameter all-gather the last step started (it would otherwise complete in
            # the next forward), so the saved weights are the updated ones.
            for chunk in chunks:
                chunk.disable_forward_pre_hook(param_sync=True)
        try:
            self._replaceable.add(save_checkpoint(
                self.cfg.training.save, model=self.model, state=meta, iteration=state.iteration,
                optimizer=backend.optimizer if backend else None, scheduler=backend.scheduler if backend else None,
                pg_collection=self.pgs, async_queue=self._async_saves, replaceable=self._replaceable))
        finally:
            if self.cfg.optim.overlap_param_gather:
                for chunk in chunks:
                    chunk.enable_forward_pre_hook()

    def _restore(self) -> TrainState:
        """Apply --load / --pretrained-checkpoint; returns where the run stands.

        `--load` of a training checkpoint restores everything (exact resume); of a checkpoint
        written before the first pretraining step (after --align-only) the weights and the
        finished pre-pass; of a weights-only (`release`, e.g. converted) checkpoint, and
        `--pretrained-checkpoint`, the weights only, starting at iteration 0 with the pre-pass
        still to run. A `--load` root without a checkpoint yet starts fresh (first submission of
        a requeueable job).
        """
        training = self.cfg.training
        path, is_load = self._start_dir, self._start_is_load
        if path is None:
            return TrainState()
        _, meta = read_checkpoint_state(path)
        check_compatible(path, meta, self.model_cfg, self.identity, training.override_checkpoint_mismatch)
        if is_load and meta.get("align_step") and not meta.get("align_finished"):
            # A pre-pass a signal stopped: the weights now; its optimizer state, LR schedule and
            # RNG streams when the pre-pass resumes (align()).
            load_checkpoint(path, model=self.model, pg_collection=self.pgs)
            self._prepass_resume = (path, meta)
            return TrainState(align_step=int(meta["align_step"]))
        if is_load and meta.get("has_optimizer", False):
            return self._resume(path, meta)
        load_checkpoint(path, model=self.model, pg_collection=self.pgs)
        if is_load and meta.get("iteration") == 0:
            # Our own checkpoint from before the first pretraining step (e.g. --align-only):
            # resume it, so a finished pre-pass is not run again.
            return TrainState(align_finished=bool(meta.get("align_finished")))
        return TrainState()

    def _prepare_save_root(self, start: dict[str, Any] | None) -> None:
        """Make sure no save of this run can write over a checkpoint it did not write: a run
        continuing the checkpoints of `--save` keeps those newer than its start point aside
        (left by a fallback past a broken checkpoint, or a tracker set back by hand); any other
        run refuses a `--save` already holding checkpoints at or after its start."""
        save = Path(self.cfg.training.save)
        save.mkdir(parents=True, exist_ok=True)  # an unusable --save fails now, not at the first save
        if not os.access(save, os.W_OK):
            raise CheckpointError(f"--save {save} is not writable")
        remove_unfinished_saves(save)
        iteration = int((start or {}).get("iteration") or 0)
        continues = (self._start_is_load and self._start_dir.name != "release"
                     and self._start_dir.parent.resolve() == save.resolve())
        if continues:
            set_aside_newer(save, iteration)
            self._replaceable.add(save / self._start_dir.name)
        else:
            check_save_root(save, iteration)

    def _resume(self, path: str, meta: dict[str, Any]) -> TrainState:
        """`--load` of a training checkpoint: weights, optimizer state, LR schedule, RNG streams
        and data position. A checkpoint of the other backend continues from its weights, LR
        schedule and data position with a fresh optimizer state (neither backend reads the
        other's optimizer format)."""
        saved_backend = meta.get("backend", "megatron")
        if saved_backend == self.backend_name == "megatron":
            meta = load_checkpoint(path, model=self.model, optimizer=self.backend.optimizer,
                                   scheduler=self.backend.scheduler, pg_collection=self.pgs)
            return train_state_from_checkpoint(meta)
        if saved_backend == self.backend_name:
            self.deepspeed.check_resumable(path, meta)
        # The weights go into the bare module, before a DeepSpeed engine partitions it.
        meta = load_checkpoint(path, model=self.model, pg_collection=self.pgs, with_rng=True)
        if saved_backend == self.backend_name:
            self.deepspeed.load_optimizer(path, self.backend)
        else:
            log_rank0(logger, "--load %s was written by the %s backend: continuing on the %s backend from its "
                      "weights, LR schedule and data position with a fresh optimizer state", path, saved_backend,
                      self.backend_name, level=logging.WARNING)
            self.backend.scheduler.load_state_dict(load_scheduler_state(path))
        return train_state_from_checkpoint(meta)

    # -- pieces --------------------------------------------------------------------------------

    def _datasets(self):
        """[train, valid, test] sized for the whole run (built on every rank: TP ranks other than
        0 hold them but do not read; megatron-core builds the index cache on rank 0 first)."""
        cfg, gbs = self.cfg, self.global_batch_size
        training = cfg.training
        batches = BatchSchedule(training, self.pgs.dp.size())
        evals = (batches.total_iterations // training.eval_interval + 1) if training.eval_interval else 1
        num_samples = [batches.total_samples, evals * training.eval_iters * gbs, training.eval_iters * gbs]
        # The pre-pass's held-out words stay out of code-switching too, so the held-out gap is
        # about words neither stage trained on (whichever arm runs: the split only needs the lexicon).
        heldout = split_entries(self.lexicon, cfg.align.heldout_fraction, cfg.align.seed)[1] \
            if self.lexicon is not None else ()
        return build_datasets(cfg.data, self.tokenizer, seq_length=cfg.model.seq_length, seed=training.seed,
                              num_samples=num_samples, is_built_on_rank=lambda: True, codeswitch_exclude=heldout,
                              vocab_size=self.model_cfg.vocab_size)

    def _eval_hooks(self) -> list:
        """At every evaluation, the alignment gap per layer when a lexicon is given (for every
        arm, so runs with and without the pre-pass compare), on the words `gap_words` picks from
        the held-out entries (the training entries when nothing is held out), with a plot of all
        evaluations so far next to the checkpoints."""
        cfg, lexicon = self.cfg, self.lexicon
        if lexicon is None:
            return []
        align = cfg.align
        train_ids, heldout_ids = split_entries(lexicon, align.heldout_fraction, align.seed)
        words = gap_words(lexicon, heldout_ids if len(heldout_ids) else train_ids, max_words=align.eval_max_words,
                          seed=align.seed, max_word_tokens=align.max_word_tokens)
        aligned, unrelated = evaluation_pairs(lexicon, words, 1, align.seed)
        if not len(aligned) or not len(unrelated):
            log_rank0(logger, "alignment gap not logged: the %d evaluation words hold %d translation pairs and "
                      "%d unrelated pairs, it needs both (raise --align-heldout-fraction or use a larger lexicon)",
                      len(words), len(aligned), len(unrelated))
            return []
        # With a held-out split, also the words the pre-pass trained on: the held-out gap can stay
        # flat on a real dictionary while these rise, and only both show what the pre-pass did.
        dictionary_words = gap_words(lexicon, train_ids, max_words=align.eval_max_words, seed=align.seed,
                                     max_word_tokens=align.max_word_tokens) if len(heldout_ids) else train_ids[:0]
        if not all(len(p) for p in evaluation_pairs(lexicon, dictionary_words, 1, align.seed)):
            dictionary_words = dictionary_words[:0]
        pad_id = getattr(self.tokenizer, "pad", 0)
        # The curves of earlier evaluations live beside the plot, so a resumed run extends it.
        record = Path(cfg.training.save) / "alignment_gap.json" if cfg.training.save else None
        history: dict[str, dict[str, float]] = {}
        if record is not None and record.is_file():
            history = {k: v for k, v in json.loads(record.read_text()).items()
                       if int(k.split()[-1]) <= self.state.iteration}

        def hook(model) -> dict:
            gaps = alignment_gap(model, lexicon, words, self.pgs, seed=align.seed, pad_id=pad_id)
            history[f"iteration {self.state.iteration}"] = gaps
            if record is not None and dist.get_rank() == 0:
                write_gap_plot(history, record.with_suffix(".png"))
                with atomic_path(record) as tmp:
                    tmp.write_text(json.dumps(history, indent=1))
            out = {"alignment_gap": gaps}
            if len(dictionary_words):
                out["alignment_gap_dictionary"] = alignment_gap(model, lexicon, dictionary_words, self.pgs,
                                                                seed=align.seed, pad_id=pad_id)
            return out

        return [hook]


def _run_tokenizer(data):
    """The run's tokenizer (None without --tokenizer-model); a model file that is missing or a
    directory is a `DataError` naming the flag, which the entry point prints as one line."""
    from megatron_prealign.data.integrity import DataError

    if not data.tokenizer_model:
        return None
    try:
        return build_tokenizer(data.tokenizer_type, data.tokenizer_model)
    except FileNotFoundError as exc:
        what = "is a directory, " if os.path.isdir(data.tokenizer_model) else ""
        raise DataError(f"--tokenizer-model {data.tokenizer_model}: {what}{exc}; give the model file of the "
                        f"--tokenizer-type {data.tokenizer_type} (a directory only for HuggingFaceTokenizer)") from exc


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
                               **{k: v for k, v in saved.items() if k not in NON_ARCHITECTURE_FIELDS}})
    vocab = tokenizer.vocab_size if tokenizer is not None else model.vocab_size
    if saved and saved.get("vocab_size", 0) >= vocab:
        vocab = saved["vocab_size"]
    return dataclasses.replace(model, vocab_size=vocab)


def check_compatible(path: str, meta: dict[str, Any], model_cfg: ModelConfig, identity: dict[str, Any],
                     override: bool) -> None:
    """Refuse a checkpoint of another architecture, lexicon or tokenizer (the latter two can be
    overridden with --override-checkpoint-mismatch)."""
    saved_model = meta.get("model")
    if saved_model:
        # Compared in the JSON form the checkpoint stores (tuples read back as lists).
        ours = json.loads(json.dumps(dataclasses.asdict(model_cfg)))
        diffs = [f"{k}: checkpoint {saved_model.get(k)!r} vs run {ours[k]!r}" for k in ours
                 if k not in NON_ARCHITECTURE_FIELDS and k in saved_model and saved_model[k] != ours[k]]
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


def locate_start(training) -> tuple[Path | None, bool]:
    """(the complete checkpoint directory a run starts from, whether it is --load's), or
    (None, False) for a fresh start. Megatron-LM's rule: --load when it holds a checkpoint, else
    --pretrained-checkpoint; a --load root with nothing in it yet is the first start of a
    requeueable job. A broken --load root falls back to its newest complete checkpoint with a
    warning, or is an error; it never silently starts over."""
    if training.load:
        try:
            return resolve_checkpoint_dir(training.load), True
        except NoCheckpoint:
            if not training.pretrained_checkpoint:
                log_rank0(logger, "--load %s holds no checkpoint yet: starting from scratch", training.load)
                return None, False
            log_rank0(logger, "--load %s holds no checkpoint yet: starting from --pretrained-checkpoint %s",
                      training.load, training.pretrained_checkpoint)
    if training.pretrained_checkpoint:
        return resolve_checkpoint_dir(training.pretrained_checkpoint), False
    return None, False


def size_prepass(cfg: RunConfig, lexicon) -> RunConfig:
    """`cfg` with --align-token-budget turned into --align-steps for `lexicon` (unchanged without
    a budget); the resolved steps are what checkpoints record."""
    align = cfg.align
    if align.token_budget is None:
        return cfg
    steps, per_step = steps_for_token_budget(lexicon, align)
    log_rank0(logger, "align: --align-token-budget %d = %d steps of %d pairs (%.0f padded word tokens per step)",
              align.token_budget, steps, align.pairs_per_batch, per_step)
    return dataclasses.replace(cfg, align=dataclasses.replace(align, steps=steps, token_budget=None))


def resolve_dry_run(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    """What `--dry-run` prints: everything the run resolves before its first step without a
    GPU or process groups, and the same errors the run would stop on (tokenizer, lexicon and
    checkpoint identity, data files, learning-rate schedule, layout)."""
    from megatron_prealign.data.integrity import open_token_dataset, verdict_cache_dir
    from megatron_prealign.data.sidecar import CodeSwitchSidecar
    from megatron_prealign.optim import lr_schedule_lengths

    data, training, parallel = cfg.data, cfg.training, cfg.parallel
    model_parallel = parallel.tensor_model_parallel_size * parallel.pipeline_model_parallel_size
    if world_size % model_parallel:
        raise ValueError(f"WORLD_SIZE {world_size} is not divisible by TP x PP = {model_parallel}")
    dp = world_size // model_parallel
    tokenizer = _run_tokenizer(data)
    lexicon = load_lexicon(data.lexicon, tokenizer) if data.lexicon else None
    budget = cfg.align.token_budget
    cfg = size_prepass(cfg, lexicon)
    start_dir, _ = locate_start(training)
    start = read_checkpoint_state(start_dir)[1] if start_dir else None
    model = resolve_model_config(cfg, tokenizer, start)
    if start is not None:
        check_compatible(str(start_dir), start, model,
                         {"lexicon_sha256": lexicon.sha256 if lexicon is not None else None,
                          "tokenizer_fingerprint": getattr(tokenizer, "fingerprint", None)},
                         training.override_checkpoint_mismatch)

    datasets = []
    if not training.align_only:
        per_split = data.blend_per_split()
        blends = per_split if per_split else [data.blend()]
        for split, blend in zip(("train", "valid", "test") if per_split else ("all",), blends):
            if blend is None:
                continue
            prefixes, weights = blend
            for i, prefix in enumerate(prefixes):
                check_prefixes_exist([prefix])
                # What the trainer's dataset builder checks, the same way.
                cache_dir = verdict_cache_dir(data.data_cache_path, prefix)
                tokens = open_token_dataset(prefix, tokenizer=tokenizer, vocab_size=model.vocab_size,
                                            cache_dir=cache_dir, flag="--data-path")
                row = {"prefix": prefix, "split": split, "weight": weights[i] if weights else 1.0,
                       "documents": int(len(tokens.document_indices) - 1),
                       "tokens": int(tokens.sequence_lengths.sum(dtype="int64"))}
                if data.codeswitch_ratio > 0:
                    CodeSwitchSidecar(prefix, cache_dir=cache_dir).check_matches(tokens, lexicon_sha256=lexicon.sha256)
                datasets.append(row)

    batches = BatchSchedule(training, dp)
    warmup, decay = lr_schedule_lengths(cfg.optim, train_iters=batches.total_iterations,
                                        global_batch_size=batches.final, train_samples=training.train_samples)
    samples = batches.total_samples
    out: dict[str, Any] = {
        "tokenizer": {"type": data.tokenizer_type, "model": data.tokenizer_model,
                      "vocab_size": model.vocab_size, "padded_vocab_size": model.padded_vocab_size(
                          parallel.tensor_model_parallel_size)},
        "layout": {"world_size": world_size, "tensor_parallel": parallel.tensor_model_parallel_size,
                   "pipeline_parallel": parallel.pipeline_model_parallel_size, "data_parallel": dp,
                   "virtual_stages": parallel.virtual_pipeline_size(model.num_layers),
                   "sequence_parallel": parallel.sequence_parallel},
        "schedule": {"iterations": batches.total_iterations, "samples": samples,
                     "tokens": samples * model.seq_length, "global_batch_size": batches.final,
                     "lr_warmup_samples": warmup, "lr_decay_samples": decay},
        "start": {"checkpoint": str(start_dir) if start_dir else None, "iteration": (start or {}).get("iteration")},
    }
    if datasets:
        total_tokens = sum(row["tokens"] for row in datasets if row["split"] in ("all", "train"))
        out["data"] = datasets
        if total_tokens:
            out["schedule"]["epochs_of_the_data"] = round(samples * model.seq_length / total_tokens, 3)
    if cfg.align.steps:
        out["prepass"] = {"steps": cfg.align.steps, "token_budget": budget, "pairs_per_step": cfg.align.pairs_per_batch,
                          "lexicon_entries": lexicon.num_entries if lexicon is not None else None,
                          "finished_in_checkpoint": bool((start or {}).get("align_finished")),
                          "steps_done_in_checkpoint": int((start or {}).get("align_step") or 0)}
    return out
