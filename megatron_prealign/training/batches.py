"""The pretraining run's batch schedule: the global batch of every step and the run's length.

Constant (`--global-batch-size`), or ramped up in samples as in Megatron-LM
(`--rampup-batch-size START INCREMENT SAMPLES`: the batch grows from START by INCREMENT in equal
sample intervals until SAMPLES samples are consumed, then stays at `--global-batch-size`; the
arithmetic is megatron-core's `RampupBatchsizeNumMicroBatchesCalculator`). The run ends after
`--train-iters` steps, or once `--train-samples` samples are consumed.
"""
from __future__ import annotations

from megatron_prealign.training.config import TrainingConfig


class BatchSchedule:
    """Global batch per step for one data-parallel size.

    Args:
        cfg: the training config.
        dp_size: data-parallel ranks (a global batch is whole microbatches on every rank).
    """

    def __init__(self, cfg: TrainingConfig, dp_size: int):
        self.micro_batch_size, self.dp_size = cfg.micro_batch_size, dp_size
        self.final = cfg.global_batch_size or cfg.micro_batch_size * dp_size
        self.train_samples = cfg.train_samples
        self.train_iters = cfg.train_iters
        unit = cfg.micro_batch_size * dp_size
        self._rampup = None
        if self.final % unit:
            raise ValueError(f"--global-batch-size {self.final} must be a multiple of --micro-batch-size x "
                             f"data-parallel size = {cfg.micro_batch_size} x {dp_size}")
        if cfg.rampup_batch_size:
            start, increment, samples = cfg.rampup_batch_size
            for name, value in (("START", start), ("INCREMENT", increment)):
                if value % unit:
                    raise ValueError(f"--rampup-batch-size {name} {value} must be a multiple of --micro-batch-size "
                                     f"x data-parallel size = {cfg.micro_batch_size} x {dp_size}")
            from megatron.core.num_microbatches_calculator import RampupBatchsizeNumMicroBatchesCalculator

            self._rampup = RampupBatchsizeNumMicroBatchesCalculator(
                global_batch_size=self.final, micro_batch_size=cfg.micro_batch_size, data_parallel_size=dp_size,
                decrease_batch_size_if_needed=False, rank=-1, start_global_batch_size=start,
                batch_size_increment=increment, ramup_samples=samples)

    def global_batch(self, consumed_samples: int) -> int:
        """Samples of the step that starts after `consumed_samples`."""
        if self._rampup is None:
            return self.final
        self._rampup.update(consumed_samples, consistency_check=False)
        return self._rampup.current_global_batch_size

    def num_microbatches(self, consumed_samples: int) -> int:
        return self.global_batch(consumed_samples) // (self.micro_batch_size * self.dp_size)

    def finished(self, iteration: int, consumed_samples: int) -> bool:
        if self.train_samples is not None:
            return consumed_samples >= self.train_samples
        return iteration >= self.train_iters

    @property
    def total_iterations(self) -> int:
        """Steps of the whole run."""
        if self.train_samples is None:
            return self.train_iters
        iteration = consumed = 0
        while consumed < self.train_samples:
            consumed += self.global_batch(consumed)
            iteration += 1
        return iteration

    @property
    def total_samples(self) -> int:
        """Samples of the whole run (the training dataset's size)."""
        if self.train_samples is not None:
            return self.train_samples
        consumed = 0
        for _ in range(self.train_iters):
            consumed += self.global_batch(consumed)
        return consumed
