"""The optimizer half of a training backend, as the two stages' loops see it.

Both loops (`training.loop.Trainer` and `align.prepass.run_align_prepass`) run one step as

    backend.zero_grad()
    schedule.run_schedule(backend.model, ...)    # forward + backward of every microbatch
    update_ok, grad_norm = backend.step()        # optimizer update, then the LR schedule
    backend.lr                                   # the learning rate of the next step

`MegatronBackend` (the default) is megatron-core's DDP-wrapped model with its optimizer and
`OptimizerParamScheduler`; `megatron_prealign.deepspeed.DeepSpeedBackend` is a DeepSpeed ZeRO
engine with the same scheduler. Each stage builds its own backend (the pre-pass's optimizer is
discarded afterwards) and `close()`s it when done.
"""
from __future__ import annotations

from typing import Any, Protocol

from megatron_prealign.optim import OptimConfig, build_optimizer, build_scheduler


class TrainingBackend(Protocol):
    model: Any
    """What the schedule runs forward on (megatron-core DDP, or a DeepSpeed engine)."""

    def zero_grad(self) -> None:
        """Clear the gradients before a step's first microbatch."""

    def step(self) -> tuple[bool, float | None]:
        """Apply the accumulated gradients; returns (update applied, gradient norm). A skipped
        update (fp16 overflow) leaves the LR schedule where it was."""

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group (after the last `step`)."""

    def close(self) -> None:
        """Release the optimizer's hold on the model (its state is discarded)."""


class MegatronBackend:
    """megatron-core optimizer and OptimizerParamScheduler over a DDP-wrapped model.

    Args:
        model: the model chunk wrapped by `training.ddp.wrap_ddp`.
        cfg: optimizer and schedule knobs.
        train_iters: steps the schedule spans.
        samples_per_step: samples per optimizer step (the schedule counts samples).
        pg_collection: the run's process groups.
    """

    def __init__(self, model, cfg: OptimConfig, *, train_iters: int, samples_per_step: int, pg_collection):
        self.model = model
        config = model.config
        self.optimizer = build_optimizer(cfg, [model], bf16=config.bf16, fp16=config.fp16, pg_collection=pg_collection)
        self.scheduler = build_scheduler(cfg, self.optimizer, train_iters=train_iters,
                                         global_batch_size=samples_per_step)
        self.samples_per_step = samples_per_step
        # megatron-core's schedule multiplies the loss by this (fp16 loss scaling; 1 otherwise).
        self._saved_scale = config.grad_scale_func
        config.grad_scale_func = self.optimizer.scale_loss

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()

    def step(self) -> tuple[bool, float | None]:
        update_ok, grad_norm, _ = self.optimizer.step()
        if update_ok:
            self.scheduler.step(increment=self.samples_per_step)
        return update_ok, grad_norm

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def close(self) -> None:
        self.model.config.grad_scale_func = self._saved_scale
        self.model.zero_grad_buffer()
