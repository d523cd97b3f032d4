"""The DeepSpeed backend: a ZeRO engine around the model provider's megatron-core GPTModel.

Per stage (pre-pass, pretraining) `DeepSpeedBackend` wraps the same module with
`deepspeed.initialize`: torch's AdamW over megatron-core's parameter groups, the run's
`mpu` adapter (mpu.py) for tensor-parallel groups, and megatron-core's OptimizerParamScheduler
stepping the engine's parameter groups. `run_microbatches` is the schedule on this backend:

    count the step's loss tokens N (all microbatches, all data-parallel ranks)
    for each of the M microbatches (DeepSpeed's gradient accumulation = M):
        output = engine(...)                     # forward_step_func, megatron-core's contract
        loss, num_tokens, report = loss_func(output)
        engine.backward(loss * D * M / N)        # DeepSpeed divides by M and averages over D ranks
    engine.step()                                # backend.step(): update, then the LR schedule

so the gradient is the sum of token losses over the global batch divided by N: the per-token
mean of the default backend (`calculate_per_token_loss`), whatever the loss mask drops.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from megatron_prealign.deepspeed.config import offloads_optimizer
from megatron_prealign.deepspeed.mpu import ModelParallelGroups
from megatron_prealign.log import get_logger, log_rank0
from megatron_prealign.optim import OptimConfig, build_scheduler, param_groups
from megatron_prealign.platform import compute_device

logger = get_logger(__name__)

CHECKPOINT_TAG = "deepspeed"
"""Subdirectory of a checkpoint directory holding DeepSpeed's own files (`engine.save_checkpoint`
with this tag): the ZeRO optimizer partitions and DeepSpeed's model-states file."""


def prepare_runtime() -> None:
    """What DeepSpeed needs here before its first engine (idempotent).

    The default process group exists already (gloo on CPU), so DeepSpeed adopts it instead of
    creating its own. Without CUDA, DeepSpeed would JIT-compile a shared-memory all-reduce at
    start-up, used only by its inference kernels; it is marked unavailable so a run starts
    without a compiler and never waits for one.
    """
    import deepspeed.ops

    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _adamw(groups: list[dict], cfg: OptimConfig, offload: bool) -> torch.optim.Optimizer:
    """AdamW with the run's hyperparameters. On GPU with the optimizer state offloaded to the
    CPU, DeepSpeed's vectorized CPU Adam (compiled on first use); torch's AdamW otherwise, the
    same update the default backend's megatron-core optimizer runs without TransformerEngine."""
    kwargs = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                  weight_decay=cfg.weight_decay)
    if offload and torch.cuda.is_available():
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


class DeepSpeedBackend:
    """One stage's DeepSpeed engine over `module`, with megatron-core's LR schedule.

    Args:
        module: the (bare) megatron-core GPTModel; ZeRO-3 partitions its parameters in place.
        cfg: optimizer and schedule knobs of the stage.
        ds_config: the stage's DeepSpeed settings (`config.stage_deepspeed_json`).
        train_iters: steps the schedule spans.
        samples_per_step: samples per optimizer step (the schedule counts samples).
        pg_collection: the run's process groups (PP size 1).
    """

    def __init__(self, module, cfg: OptimConfig, ds_config: dict[str, Any], *, train_iters: int,
                 samples_per_step: int, pg_collection):
        import deepspeed

        prepare_runtime()
        groups = [group for group in param_groups(cfg, [module]) if group["params"]]
        optimizer = _adamw(groups, cfg, offloads_optimizer(ds_config))
        self.engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config,
                                               mpu=ModelParallelGroups(pg_collection), dist_init_required=False)
        self.model = self.engine
        self.scheduler = build_scheduler(cfg, self.engine.optimizer, train_iters=train_iters,
                                         global_batch_size=samples_per_step)
        self.samples_per_step = samples_per_step
        self.pgs = pg_collection
        self.zero_stage = int(self.engine.zero_optimization_stage())

    def zero_grad(self) -> None:
        """Nothing to do: the ZeRO optimizer clears its gradients at the end of each step."""

    def step(self, samples: int | None = None) -> tuple[bool, float | None]:
        # The batch is constant on this backend (--rampup-batch-size is refused with it).
        self.engine.step()
        update_ok = bool(self.engine.was_step_applied())
        if update_ok:
            self.scheduler.step(increment=self.samples_per_step)
        grad_norm = self.engine.get_global_grad_norm()
        return update_ok, (float(grad_norm) if grad_norm is not None else None)

    @property
    def lr(self) -> float:
        return float(self.engine.optimizer.param_groups[0]["lr"])

    def close(self) -> None:
        """Destroy the engine: its gradient hooks and ZeRO-3's module hooks are removed, and so
        are the forward hooks the engine put on the module (`destroy()` leaves those), so the
        next stage's engine is the only one attached. ZeRO-3 parameters stay partitioned."""
        engine = self.engine
        engine.destroy()
        for name in ("module_forward_pre_hook", "module_forward_post_hook"):
            handle = getattr(engine, name, None)
            if handle is not None:
                handle.remove()
                setattr(engine, name, None)

    # -- the optimizer half of a checkpoint ----------------------------------------------------

    def save_optimizer(self, checkpoint_dir: Path) -> None:
        """DeepSpeed's own checkpoint of the engine (ZeRO optimizer partitions per data-parallel
        rank, DeepSpeed's model-states file) under `checkpoint_dir/deepspeed` (collective)."""
        self.engine.save_checkpoint(str(checkpoint_dir), tag=CHECKPOINT_TAG, client_state={}, save_latest=False)

    def load_optimizer(self, checkpoint_dir: Path, scheduler_state: dict[str, Any]) -> None:
        """Restore the optimizer state saved by `save_optimizer` and the LR schedule (collective).
        The weights are not read from DeepSpeed's copy: they were loaded from the checkpoint's own
        model tensors before this engine was built."""
        path, _ = self.engine.load_checkpoint(str(checkpoint_dir), tag=CHECKPOINT_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=False,
                                              custom_load_fn=lambda src, dst: None)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {checkpoint_dir}/{CHECKPOINT_TAG}")
        self.scheduler.load_state_dict(scheduler_state)


def is_engine(model) -> bool:
    """Whether `model` is a DeepSpeed engine (False without importing DeepSpeed when no code did)."""
    import sys

    deepspeed = sys.modules.get("deepspeed")
    return deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine)


def run_microbatches(engine, forward_step_func: Callable, data_iterator: Iterator | None, *, num_microbatches: int,
                     pg_collection, forward_only: bool = False,
                     loss_tokens: Callable[[Any], int] | None = None) -> list[Any]:
    """megatron-core's schedule contract on a DeepSpeed engine (one pipeline stage).

    `forward_step_func(iterator, model) -> (output, loss_func)` and `loss_func(output) -> (loss,
    num_tokens, report)` are the ones the default backend passes to megatron-core; the reports are
    returned in order. Training needs `loss_tokens(microbatch)`, the `num_tokens` its loss function
    will report, to know the normalizer before the first backward (module docstring). Ranks that
    read no data (tensor-parallel ranks other than 0) hold `data_iterator=None` and count nothing.
    """
    if forward_only:
        reports = []
        for _ in range(num_microbatches):
            output, loss_func = forward_step_func(data_iterator, engine)
            reports.append(loss_func(output)[2])
        return reports
    if loss_tokens is None:
        raise ValueError("the DeepSpeed backend needs loss_tokens(microbatch) to normalize the step's gradient")
    accumulation = engine.gradient_accumulation_steps()
    if accumulation != num_microbatches:
        raise ValueError(f"the DeepSpeed engine accumulates {accumulation} microbatches per step, "
                         f"the schedule was given {num_microbatches}")
    batches = [next(data_iterator) if data_iterator is not None else None for _ in range(num_microbatches)]
    expected = sum(int(loss_tokens(batch)) for batch in batches if batch is not None)
    total = torch.tensor([expected], dtype=torch.float64, device=compute_device())
    dist.all_reduce(total, group=pg_collection.dp)
    # Tensor-parallel ranks without data counted 0; those with data agree.
    dist.all_reduce(total, op=dist.ReduceOp.MAX, group=pg_collection.tp)
    scale = pg_collection.dp.size() * num_microbatches / max(float(total.item()), 1.0)
    iterator = iter(batches)
    reports, reported = [], []
    for index in range(num_microbatches):
        engine.set_gradient_accumulation_boundary(index == num_microbatches - 1)
        output, loss_func = forward_step_func(iterator, engine)
        loss, num_tokens, report = loss_func(output)
        engine.backward(loss * scale)
        reports.append(report)
        reported.append(num_tokens)
    if all(batch is not None for batch in batches):
        counted = int(sum(int(n) for n in reported))
        if counted != expected:
            raise RuntimeError(f"loss functions reported {counted} tokens, loss_tokens counted {expected}")
    return reports


@contextmanager
def full_parameters(params) -> Iterator[None]:
    """Inside the block, ZeRO-3 partitioned parameters among `params` hold their full tensors
    (read-only; gathered over the data-parallel group); other parameters are left alone."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def log_engine(backend: DeepSpeedBackend, stage: str) -> None:
    engine = backend.engine
    log_rank0(logger, "%s: DeepSpeed ZeRO-%d engine, %s, %d microbatch(es) of %d per step and rank, "
              "gradient clipping %s", stage, backend.zero_stage, type(engine.optimizer.optimizer).__name__,
              engine.gradient_accumulation_steps(), engine.train_micro_batch_size_per_gpu(),
              engine.gradient_clipping() or "off", level=logging.INFO)
