"""Optimizer and LR schedule from megatron-core (Adam with decoupled weight decay, or SGD), shared by
both stages: the alignment pre-pass builds its own from an `OptimConfig`, pretraining from the
run's. The DeepSpeed backend takes megatron-core's parameter groups (`param_groups`) and LR
schedule from here too. megatron-core is imported by the builders, so the config can be read
without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from megatron_prealign.schedule import model_chunks


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer + schedule knobs (Megatron-LM flag names)."""

    lr: float = 3e-4
    """Peak learning rate (--lr)."""
    min_lr: float = 3e-5
    """Floor of the decay (--min-lr)."""
    lr_decay_style: str = "cosine"
    """`constant`, `linear` or `cosine` (--lr-decay-style)."""
    lr_warmup_iters: int = 0
    """Linear warmup steps (--lr-warmup-iters)."""
    lr_decay_iters: int | None = None
    """Steps over which to decay; None = all training iterations (--lr-decay-iters)."""
    lr_warmup_samples: int = 0
    """Linear warmup in samples, for runs sized by --train-samples (--lr-warmup-samples)."""
    lr_decay_samples: int | None = None
    """Samples over which to decay; None = --train-samples (--lr-decay-samples)."""
    lr_warmup_fraction: float | None = None
    """Warmup as a fraction of the decay length, instead of --lr-warmup-iters/-samples
    (--lr-warmup-fraction)."""
    optimizer: str = "adam"
    """`adam` (decoupled weight decay) or `sgd` with momentum (--optimizer): SGD keeps one fp32
    moment per parameter instead of Adam's two (4 bytes per parameter less). The pre-pass always
    uses Adam."""
    sgd_momentum: float = 0.9
    """Momentum of --optimizer sgd (--sgd-momentum)."""
    weight_decay: float = 0.1
    """Decoupled weight decay (--weight-decay)."""
    adam_beta1: float = 0.9
    """(--adam-beta1)"""
    adam_beta2: float = 0.95
    """(--adam-beta2)"""
    adam_eps: float = 1e-8
    """(--adam-eps)"""
    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables (--clip-grad)."""
    use_distributed_optimizer: bool = False
    """Shard optimizer state across data-parallel ranks (--use-distributed-optimizer)."""
    overlap_grad_reduce: bool = False
    """Reduce gradient buckets during the backward pass instead of after it (--overlap-grad-reduce)."""
    overlap_param_gather: bool = False
    """All-gather the distributed optimizer's updated parameters during the next forward pass
    (--overlap-param-gather; needs --use-distributed-optimizer)."""
    accumulate_allreduce_grads_in_fp32: bool = True
    """Keep gradient buffers and their data-parallel reduction in fp32 under bf16/fp16
    (--accumulate-allreduce-grads-in-fp32; on by default here, unlike Megatron-LM, so bf16 runs
    sum gradients of many microbatches and ranks without bf16 round-off)."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("--lr must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError("--min-lr must be in [0, --lr]")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        if not 0 <= self.sgd_momentum < 1:
            raise ValueError("--sgd-momentum must be in [0, 1)")
        if self.lr_decay_style not in ("constant", "linear", "cosine"):
            raise ValueError("--lr-decay-style must be constant, linear or cosine")
        if self.lr_warmup_iters < 0:
            raise ValueError("--lr-warmup-iters must be >= 0")
        if self.lr_warmup_samples < 0:
            raise ValueError("--lr-warmup-samples must be >= 0")
        if self.clip_grad < 0:
            raise ValueError("--clip-grad must be >= 0")
        if self.lr_warmup_fraction is not None:
            if not 0 <= self.lr_warmup_fraction < 1:
                raise ValueError(f"--lr-warmup-fraction must be in [0, 1), got {self.lr_warmup_fraction}")
            if self.lr_warmup_iters or self.lr_warmup_samples:
                raise ValueError("--lr-warmup-fraction and --lr-warmup-iters/--lr-warmup-samples are alternatives: "
                                 "give the warmup one way")
        if self.overlap_param_gather and not self.use_distributed_optimizer:
            raise ValueError("--overlap-param-gather needs --use-distributed-optimizer (it overlaps the "
                             "distributed optimizer's parameter all-gather)")


def _mcore_config(cfg: OptimConfig, *, bf16: bool = False, fp16: bool = False):
    from megatron.core.optimizer import OptimizerConfig

    return OptimizerConfig(
        optimizer=cfg.optimizer,
        sgd_momentum=cfg.sgd_momentum,
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_eps=cfg.adam_eps,
        clip_grad=cfg.clip_grad,
        bf16=bf16,
        fp16=fp16,
        use_distributed_optimizer=cfg.use_distributed_optimizer,
    )


def build_optimizer(cfg: OptimConfig, model_chunks: list, *, bf16: bool = False, fp16: bool = False,
                    pg_collection=None):
    """megatron-core optimizer over the (DDP-wrapped) model chunks."""
    from megatron.core.optimizer import get_megatron_optimizer

    mcore_cfg = _mcore_config(cfg, bf16=bf16, fp16=fp16)
    # Gloo side-groups are only for the distributed optimizer's CPU state exchange; with an explicit
    # pg_collection megatron-core takes every group from it instead.
    optimizer = get_megatron_optimizer(mcore_cfg, model_chunks, pg_collection=pg_collection,
                                       use_gloo_process_groups=pg_collection is None)
    for part in getattr(optimizer, "chained_optimizers", [optimizer]):
        # megatron-core allocates optimizer state before loading a checkpoint into it with
        # `init_state_fn`, which it defines for Adam only.
        if getattr(part, "init_state_fn", False) is None and cfg.optimizer == "sgd":
            part.init_state_fn = _init_sgd_state
    return optimizer


def _init_sgd_state(optimizer, config=None) -> None:
    """Torch SGD's momentum buffers, zero, for the parameters that have none yet."""
    import torch

    for group in optimizer.param_groups:
        if not group.get("momentum"):
            continue
        for param in group["params"]:
            if "momentum_buffer" not in optimizer.state[param]:
                optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param.data)


def param_groups(cfg: OptimConfig, model_chunks: list) -> list[dict]:
    """megatron-core's parameter groups for an optimizer built outside megatron-core (the DeepSpeed
    backend's AdamW): no weight decay on biases and 1-D parameters (`wd_mult` 0), each group's
    `max_lr`/`min_lr`, so both backends decay and schedule the same parameters the same way."""
    from megatron.core.optimizer import _get_param_groups

    return _get_param_groups(model_chunks, _mcore_config(cfg), None)


def lr_schedule_lengths(cfg: OptimConfig, *, train_iters: int, global_batch_size: int,
                        train_samples: int | None = None) -> tuple[int, int]:
    """(warmup, decay) in samples: given in iterations (x global batch) for an iteration-based
    run, in samples for a sample-based one (--train-samples), or the warmup as a fraction of the
    decay (--lr-warmup-fraction). A warmup as long as the decay is an error."""
    if train_samples is not None:
        warmup = cfg.lr_warmup_samples
        decay = cfg.lr_decay_samples or train_samples
        if warmup >= max(decay, 1) and train_samples > 0:
            raise ValueError(f"--lr-warmup-samples {warmup} must be smaller than the decay length {decay} "
                             f"(--lr-decay-samples or --train-samples)")
    else:
        decay_iters = cfg.lr_decay_iters or train_iters
        if cfg.lr_warmup_iters >= max(decay_iters, 1) and train_iters > 0:
            raise ValueError(f"--lr-warmup-iters {cfg.lr_warmup_iters} must be smaller than the decay length "
                             f"{decay_iters} (--lr-decay-iters or --train-iters)")
        warmup, decay = cfg.lr_warmup_iters * global_batch_size, decay_iters * global_batch_size
    if cfg.lr_warmup_fraction is not None:
        warmup = int(cfg.lr_warmup_fraction * decay)
    return warmup, decay


def build_scheduler(cfg: OptimConfig, optimizer, *, train_iters: int, global_batch_size: int,
                    train_samples: int | None = None):
    """Megatron's OptimizerParamScheduler counted in samples (`lr_schedule_lengths`)."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    warmup, decay = lr_schedule_lengths(cfg, train_iters=train_iters, global_batch_size=global_batch_size,
                                        train_samples=train_samples)
    # megatron-core needs decay > warmup >= 0 even for a run with no steps (e.g. --train-iters 0
    # to write an initial checkpoint).
    decay = max(decay, warmup + 1)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=decay,
        lr_decay_style=cfg.lr_decay_style,
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=decay,
        wd_incr_style="constant",
    )


class TrainingBackend(Protocol):
    model: Any
    """What the schedule runs forward on (megatron-core DDP, or a DeepSpeed engine)."""

    def zero_grad(self) -> None:
        """Clear the gradients before a step's first microbatch."""

    def step(self, samples: int | None = None) -> tuple[bool, float | None]:
        """Apply the accumulated gradients; returns (update applied, gradient norm). A skipped
        update (fp16 overflow) leaves the LR schedule where it was. `samples`: the step's global
        batch, when it varies."""

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group (after the last `step`)."""

    def close(self) -> None:
        """Release the optimizer's hold on the model (its state is discarded)."""


class MegatronBackend:
    """megatron-core optimizer and OptimizerParamScheduler over a DDP-wrapped model.

    Args:
        model: the model chunk, or the list of this rank's chunks, wrapped by `training.ddp.wrap_ddp`.
        cfg: optimizer and schedule knobs.
        train_iters: steps the schedule spans.
        samples_per_step: samples per optimizer step (the schedule counts samples).
        pg_collection: the run's process groups.
    """

    def __init__(self, model, cfg: OptimConfig, *, train_iters: int, samples_per_step: int, pg_collection,
                 train_samples: int | None = None):
        self.model = model
        self.chunks = model_chunks(model)
        config = self.chunks[0].config
        self.optimizer = build_optimizer(cfg, self.chunks, bf16=config.bf16, fp16=config.fp16,
                                         pg_collection=pg_collection)
        self.scheduler = build_scheduler(cfg, self.optimizer, train_iters=train_iters,
                                         global_batch_size=samples_per_step, train_samples=train_samples)
        self.samples_per_step = samples_per_step
        # megatron-core's schedule multiplies the loss by this (fp16 loss scaling; 1 otherwise).
        self._saved_scale = config.grad_scale_func
        config.grad_scale_func = self.optimizer.scale_loss

    def zero_grad(self) -> None:
        for chunk in self.chunks:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()

    def step(self, samples: int | None = None) -> tuple[bool, float | None]:
        """`samples`: this step's global batch when it varies (--rampup-batch-size)."""
        update_ok, grad_norm, _ = self.optimizer.step()
        if update_ok:
            self.scheduler.step(increment=samples or self.samples_per_step)
        return update_ok, grad_norm

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def close(self) -> None:
        self.chunks[0].config.grad_scale_func = self._saved_scale
        for chunk in self.chunks:
            chunk.zero_grad_buffer()
