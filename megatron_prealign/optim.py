"""Optimizer and LR schedule from megatron-core (Adam with decoupled weight decay), shared by
both stages: the alignment pre-pass builds its own from an `OptimConfig`, pretraining from the
run's. The DeepSpeed backend takes megatron-core's parameter groups (`param_groups`) and LR
schedule from here too. megatron-core is imported by the builders, so the config can be read
without it.
"""
from __future__ import annotations

from dataclasses import dataclass


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

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError("--lr must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError("--min-lr must be in [0, --lr]")
        if self.lr_decay_style not in ("constant", "linear", "cosine"):
            raise ValueError("--lr-decay-style must be constant, linear or cosine")
        if self.lr_warmup_iters < 0:
            raise ValueError("--lr-warmup-iters must be >= 0")
        if self.clip_grad < 0:
            raise ValueError("--clip-grad must be >= 0")


def _mcore_config(cfg: OptimConfig, *, bf16: bool = False, fp16: bool = False):
    from megatron.core.optimizer import OptimizerConfig

    return OptimizerConfig(
        optimizer="adam",
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
    return get_megatron_optimizer(mcore_cfg, model_chunks, pg_collection=pg_collection,
                                  use_gloo_process_groups=pg_collection is None)


def param_groups(cfg: OptimConfig, model_chunks: list) -> list[dict]:
    """megatron-core's parameter groups for an optimizer built outside megatron-core (the DeepSpeed
    backend's AdamW): no weight decay on biases and 1-D parameters (`wd_mult` 0), each group's
    `max_lr`/`min_lr`, so both backends decay and schedule the same parameters the same way."""
    from megatron.core.optimizer import _get_param_groups

    return _get_param_groups(model_chunks, _mcore_config(cfg), None)


def build_scheduler(cfg: OptimConfig, optimizer, *, train_iters: int, global_batch_size: int):
    """Megatron's OptimizerParamScheduler counted in samples (iterations x global batch)."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    decay_iters = cfg.lr_decay_iters or train_iters
    if cfg.lr_warmup_iters >= max(decay_iters, 1) and train_iters > 0:
        raise ValueError(f"--lr-warmup-iters {cfg.lr_warmup_iters} must be smaller than the decay length "
                         f"{decay_iters} (--lr-decay-iters or --train-iters)")
    # megatron-core needs decay > warmup >= 0 even for a run with no steps (e.g. --train-iters 0
    # to write an initial checkpoint).
    decay_iters = max(decay_iters, cfg.lr_warmup_iters + 1)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=cfg.lr_warmup_iters * global_batch_size,
        lr_decay_steps=decay_iters * global_batch_size,
        lr_decay_style=cfg.lr_decay_style,
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=decay_iters * global_batch_size,
        wd_incr_style="constant",
    )
