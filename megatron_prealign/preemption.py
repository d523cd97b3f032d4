"""Preemption signals (SIGTERM, SIGUSR1): the trainer finishes its step, saves and exits 0.

Slurm delivers a job's signal to *every* process of the step, not only the trainer: DataLoader
workers and the helper processes megatron-core's checkpointing starts would die of it mid-save.
Children forked inside `deferred_preemption_signals()` inherit a signal mask that blocks these
signals, so they survive; in the trainer itself a blocked signal stays pending and is handled as
soon as the block ends, so nothing is lost. (Spawned children start with a clean mask, and an
"ignore" disposition would drop signals that other threads take delivery of: helper processes
must therefore be forked — see checkpointing.py for megatron-core's one spawned helper.) The flip side: such children also ignore the
SIGTERM that multiprocessing sends at interpreter exit, so their owner must stop them
explicitly (the trainer shuts its DataLoader workers down in `Trainer.close`).
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator

import torch
import torch.distributed as dist

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def deferred_preemption_signals() -> Iterator[None]:
    """Block SIGTERM/SIGUSR1 in this thread (and every child started meanwhile) for the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPTION_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class PreemptionFlag:
    """Remembers SIGTERM/SIGUSR1 (when `enabled`: --exit-signal-handler); the pre-pass and the
    pretraining loop check it, agreed across ranks, after each step. One per process, installed
    before the model is built, so a signal during start-up is kept for the first step."""

    def __init__(self, enabled: bool):
        self.received = False
        if enabled:
            for sig in PREEMPTION_SIGNALS:
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True

    def any_rank(self, *conditions: bool) -> tuple[bool, ...]:
        """(signal received, *conditions), each true if it is on any rank of the job: every rank
        must stop at the same step."""
        flags = torch.tensor([self.received, *conditions], dtype=torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=dist.group.WORLD)
        return tuple(bool(flag) for flag in flags.tolist())
