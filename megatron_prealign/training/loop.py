"""The pretraining loop: train steps, evaluation, checkpoint cadence, metrics, preemption.

`Trainer` owns one explicit, checkpointable `TrainState`; everything else (model, optimizer,
data iterators, process groups) is built from the run config and passed in, never read from
globals.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from megatron_prealign.log import get_logger, log_rank0
from megatron_prealign.preemption import PreemptionFlag
from megatron_prealign.training.data import SwitchCounter, build_loader, counting, dataset_name
from megatron_prealign.training.step import forward_backward
from megatron_prealign.schedule import model_chunks
from megatron_prealign.training.batches import BatchSchedule
from megatron_prealign.training.config import TrainingConfig

logger = get_logger(__name__)


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    iteration: int = 0
    consumed_samples: int = 0
    align_finished: bool = False
    align_step: int = 0
    """Pre-pass steps done when a signal stopped the pre-pass mid-way (0 otherwise)."""


class MetricsWriter:
    """Rank-0 JSON-lines log and optional TensorBoard, one interface."""

    def __init__(self, path: str | None, tensorboard_dir: str | None):
        self._file = None
        self._tb = None
        if dist.get_rank() != 0:
            return
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", buffering=1)
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(tensorboard_dir)

    def write(self, record: dict[str, Any]) -> None:
        if self._file:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb:
            step = record.get("iteration", record.get("align_step", 0))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "iteration":
                    self._tb.add_scalar(key, value, step)
                elif isinstance(value, dict):
                    for sub, v in value.items():
                        if isinstance(v, (int, float)):
                            self._tb.add_scalar(f"{key}/{sub}", v, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb:
            self._tb.close()


def memory_report() -> dict[str, float]:
    """This rank's memory in GiB, as Megatron-LM's memory report: the CUDA caching allocator's
    current and peak allocation and reservation on GPU, the process's peak RSS on CPU."""
    if torch.cuda.is_available():
        gib = 2.0**30
        return {"mem_allocated_gib": torch.cuda.memory_allocated() / gib,
                "mem_max_allocated_gib": torch.cuda.max_memory_allocated() / gib,
                "mem_max_reserved_gib": torch.cuda.max_memory_reserved() / gib}
    import resource

    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2.0**20}  # KiB on Linux


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
    """Runs pretraining on an already built (and possibly loaded/aligned) model.

    Args:
        cfg: the training section of the run config.
        backend: the model with its optimizer and LR schedule (optim.py: megatron-core's
            DDP and optimizer, or a DeepSpeed engine).
        datasets: [train, valid, test] from `build_datasets` (None on ranks that read no data).
        state: where the run stands (restored from a checkpoint when resuming).
        pg_collection: megatron-core ProcessGroupCollection of the run (`.tp`, `.pp`, `.dp`, ...).
        seq_length: tokens per sample.
        save_fn: `save_fn(state)` writes a checkpoint (collective).
        after_step: called after every step on every rank (collective), e.g. to finalize
            background checkpoint writes.
        eval_hooks: callables `hook(model) -> dict` adding metrics at every evaluation
            (e.g. the alignment gap per layer).
        preemption: the process's signal flag (default: one installed here per
            `cfg.exit_signal_handler`).
    """

    def __init__(self, cfg: TrainingConfig, *, backend, datasets, state: TrainState,
                 pg_collection, seq_length: int, num_workers: int, save_fn, eval_hooks=(), after_step=None,
                 preemption: PreemptionFlag | None = None):
        self.cfg = cfg
        self.backend, self.model = backend, backend.model
        self.chunks = model_chunks(backend.model)
        self.train_ds, self.valid_ds, _ = datasets
        self.state = state
        self.seq_length = seq_length
        self.num_workers = num_workers
        self.save_fn = save_fn
        self.after_step = after_step
        self.eval_hooks = list(eval_hooks)
        self.pgs = pg_collection
        self.dp_rank, self.dp_size = pg_collection.dp.rank(), pg_collection.dp.size()
        self.first_stage = pg_collection.pp.rank() == 0
        self.last_stage = pg_collection.pp.rank() == pg_collection.pp.size() - 1
        self.batches = BatchSchedule(cfg, self.dp_size)
        # Evaluation always uses the final global batch, so evaluations compare across a ramp-up.
        self.global_batch = self.batches.final
        self.num_microbatches = self.global_batch // (cfg.micro_batch_size * self.dp_size)
        self.metrics = MetricsWriter(cfg.metrics_log, cfg.tensorboard_dir)
        self.preemption = preemption if preemption is not None else PreemptionFlag(cfg.exit_signal_handler)
        self.switches = SwitchCounter()
        self._loaders: list = []

    # -- helpers ---------------------------------------------------------------------------
    def _reads_data(self) -> bool:
        return self.pgs.tp.rank() == 0

    def _train_iterator(self):
        if not self._reads_data():
            return None
        loader = build_loader(self.train_ds, consumed_samples=self.state.consumed_samples,
                              micro_batch_size=self.cfg.micro_batch_size, dp_rank=self.dp_rank,
                              dp_size=self.dp_size, num_workers=self.num_workers)
        self._loaders.append(loader)
        return counting(loader, self.switches)

    def _reduce_for_logging(self, lm_loss: float | None) -> tuple[float, torch.Tensor]:
        """One all-reduce: the global loss (from one last-stage rank) and switch totals (from
        each data-reading rank of the first stage)."""
        loss_owner = self.last_stage and self._reads_data() and self.dp_rank == 0
        stats_owner = self.first_stage and self._reads_data()
        values = torch.zeros(6, dtype=torch.float64)
        if loss_owner and lm_loss is not None:
            values[0] = lm_loss
        if stats_owner:
            values[1:] = self.switches.as_tensor()
        dist.all_reduce(values, group=dist.group.WORLD)  # owners sit on different stages and DP ranks
        return float(values[0]), values[1:]

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Per-token loss on the first --eval-iters global batches of each validation dataset
        (the same batches every time, so evaluations are comparable across a run and resumes)."""
        if self.valid_ds is None:  # datasets are built on every rank, so all ranks agree
            return {}
        components = getattr(self.valid_ds, "datasets", None) or [self.valid_ds]
        results: dict[str, float] = {}
        for chunk in self.chunks:
            chunk.eval()
        for index, dataset in enumerate(components):
            # A blend gives each component only its share of the validation samples.
            num_batches = min(self.cfg.eval_iters, len(dataset) // self.global_batch) if dataset is not None else 0
            name = dataset_name(dataset) if dataset is not None else f"valid{index}"
            if num_batches == 0:
                log_rank0(logger, "eval: %s has fewer than one global batch of validation samples; skipped", name)
                continue
            iterator = None
            if self._reads_data():
                iterator = build_loader(dataset, consumed_samples=0, micro_batch_size=self.cfg.micro_batch_size,
                                        dp_rank=self.dp_rank, dp_size=self.dp_size, num_workers=0)
            total, count = 0.0, 0
            for _ in range(num_batches):
                result = forward_backward(self.model, iterator, num_microbatches=self.num_microbatches,
                                          pg_collection=self.pgs,
                                          seq_length=self.seq_length, micro_batch_size=self.cfg.micro_batch_size,
                                          forward_only=True)
                if result.lm_loss is not None:
                    total += result.lm_loss
                    count += 1
            loss, _ = self._reduce_for_logging(total / count if count else None)
            results[name] = loss
        for chunk in self.chunks:
            chunk.train()
        record: dict[str, Any] = {"eval_loss": results}
        for hook in self.eval_hooks:
            record.update(hook(self.model))
        return record

    # -- training --------------------------------------------------------------------------
    def train_step(self, data_iterator, num_microbatches: int, global_batch: int) -> tuple[float | None, float, bool]:
        self.backend.zero_grad()
        result = forward_backward(self.model, data_iterator, num_microbatches=num_microbatches, pg_collection=self.pgs,
                                  seq_length=self.seq_length, micro_batch_size=self.cfg.micro_batch_size)
        update_ok, grad_norm = self.backend.step(samples=global_batch)
        return result.lm_loss, float(grad_norm or 0.0), update_ok

    def train(self) -> TrainState:
        """Run until --train-iters (or --train-samples), saving, evaluating and logging on their
        intervals.

        Returns the final state; on SIGTERM/SIGUSR1, --exit-interval or --exit-duration-in-mins
        saves and returns early.
        """
        cfg, state, batches = self.cfg, self.state, self.batches
        total = batches.total_iterations
        data_iterator = self._train_iterator() if not batches.finished(state.iteration, state.consumed_samples) else None
        log_rank0(logger, "pretraining: iterations %d -> %d, global batch %d (%d microbatches x %d x DP %d)%s",
                  state.iteration, total, batches.global_batch(state.consumed_samples),
                  batches.num_microbatches(state.consumed_samples), cfg.micro_batch_size, self.dp_size,
                  " ramping up to %d" % batches.final if cfg.rampup_batch_size else "")
        start_iteration, loop_start = state.iteration, time.perf_counter()
        window_seconds, window_iters, window_tokens = 0.0, 0, 0  # step time only: no evaluation or saving
        while not batches.finished(state.iteration, state.consumed_samples):
            global_batch = batches.global_batch(state.consumed_samples)
            step_start = time.perf_counter()
            lm_loss, grad_norm, update_ok = self.train_step(data_iterator, batches.num_microbatches(state.consumed_samples),
                                                            global_batch)
            window_seconds += time.perf_counter() - step_start
            state.iteration += 1
            state.consumed_samples += global_batch
            window_iters += 1
            window_tokens += global_batch * self.seq_length
            last = batches.finished(state.iteration, state.consumed_samples)
            if state.iteration % cfg.log_interval == 0 or last:
                loss, switches = self._reduce_for_logging(lm_loss)
                done = state.iteration - start_iteration
                eta = (time.perf_counter() - loop_start) / done * (total - state.iteration)
                switched, eligible, switched_tokens, tokens, checksum = switches.tolist()
                record = {
                    "iteration": state.iteration,
                    "consumed_samples": state.consumed_samples,
                    "global_batch_size": global_batch,
                    "lm_loss": loss,
                    "lr": self.backend.lr,
                    "grad_norm": grad_norm,
                    "skipped_update": not update_ok,
                    "tokens_per_sec": window_tokens / max(window_seconds, 1e-9),
                    "data_checksum": int(checksum),
                    "switch_rate": switched / eligible if eligible else 0.0,
                    "switched_token_share": switched_tokens / tokens if tokens else 0.0,
                    "data_wait_ms": 1e3 * self.switches.data_wait_seconds / window_iters,
                    **memory_report(),
                }
                self.metrics.write(record)
                log_rank0(logger, "iter %d/%d | lm loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | "
                          "switch %.2f%% | ETA %s", state.iteration, total, loss, record["lr"],
                          grad_norm, record["tokens_per_sec"], 100 * record["switch_rate"], _format_eta(eta))
                self.switches.reset()
                window_seconds, window_iters, window_tokens = 0.0, 0, 0
                if not math.isfinite(loss):
                    raise FloatingPointError(f"lm loss is {loss} at iteration {state.iteration}")
            if cfg.eval_interval and state.iteration % cfg.eval_interval == 0 and not last:
                self._log_eval()
            saved = bool(cfg.save and cfg.save_interval and state.iteration % cfg.save_interval == 0)
            if saved:
                self.save_fn(state)
            if self.after_step is not None:
                self.after_step()
            reason = self._exit_reason(loop_start)
            if reason and not last:
                log_rank0(logger, "%s: saving at iteration %d and stopping", reason, state.iteration)
                if cfg.save and not saved:
                    self.save_fn(state)
                return state
        self._log_eval()
        if cfg.save and not (cfg.save_interval and state.iteration % cfg.save_interval == 0):
            self.save_fn(state)
        return state

    def _exit_reason(self, loop_start: float) -> str | None:
        """Why to stop after this step, agreed by every rank (one all-reduce per step)."""
        cfg = self.cfg
        interval = bool(cfg.exit_interval and self.state.iteration % cfg.exit_interval == 0)
        duration = bool(cfg.exit_duration_in_mins and time.perf_counter() - loop_start >= 60 * cfg.exit_duration_in_mins)
        signal_received, interval, duration = self.preemption.any_rank(interval, duration)
        if signal_received:
            return "exit signal received"
        if interval:
            return f"--exit-interval {cfg.exit_interval} reached"
        if duration:
            return f"--exit-duration-in-mins {cfg.exit_duration_in_mins} reached"
        return None

    def _log_eval(self) -> None:
        record = self.evaluate()
        if record:
            record["iteration"] = self.state.iteration
            self.metrics.write(record)
            log_rank0(logger, "%s", format_eval(record))

    def close(self) -> None:
        """Stop DataLoader workers explicitly: they block the preemption signals (see
        preemption.py), so multiprocessing's exit-time terminate() would not end them."""
        for loader in self._loaders:
            shutdown = getattr(loader, "_shutdown_workers", None)  # multi-process iterators only
            if shutdown is not None:
                shutdown()
        self._loaders.clear()
        self.metrics.close()


def train_state_from_checkpoint(meta: dict[str, Any]) -> TrainState:
    fields = TrainState.__dataclass_fields__
    return TrainState(**{k: meta[k] for k in fields if k in meta})


def train_state_dict(state: TrainState) -> dict[str, Any]:
    return asdict(state)


def format_eval(record: dict[str, Any]) -> str:
    """One log line per evaluation, 4 significant digits (the metrics log keeps them exact):
    `eval iter 100 | loss a_text_document 4.123 (ppl 61.74) | gap held-out embedding +0.031 layer_1 ...
    | gap dictionary embedding +0.210 ...` (held-out words, then the words the pre-pass trains on)."""
    parts = [f"eval iter {record['iteration']}"]
    losses = record.get("eval_loss") or {}
    if losses:
        parts.append("loss " + ", ".join(f"{name} {loss:.4g} (ppl {math.exp(min(loss, 50)):.4g})"
                                         for name, loss in losses.items()))
    gaps = record.get("alignment_gap") or {}
    dictionary_gaps = record.get("alignment_gap_dictionary") or {}
    if gaps:
        label = "gap held-out" if dictionary_gaps else "gap"
        parts.append(f"{label} " + " ".join(f"{name} {gap:+.3f}" for name, gap in gaps.items()))
    if dictionary_gaps:
        parts.append("gap dictionary " + " ".join(f"{name} {gap:+.3f}" for name, gap in dictionary_gaps.items()))
    parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
              if k not in ("iteration", "eval_loss", "alignment_gap", "alignment_gap_dictionary")]
    return " | ".join(parts)
