"""Tier 3 (torchrun, 2 processes): a stopped rank ends the job within --distributed-timeout-minutes.

One rank of a TP=2 run is frozen (SIGSTOP) mid-training; the other is then stuck in a
tensor-parallel collective of one of megatron-core's groups. With the timeout reaching every
group, that collective fails after 6 s and the job ends; megatron-core's own default for its
groups (30 minutes) would keep it waiting.
"""
from __future__ import annotations

import signal
import time

import psutil

from tests._launch import launch, signal_job, train_records
from tests.distributed.test_checkpoint_safety import _args

TIMEOUT_MINUTES = 0.1


def test_a_stopped_rank_ends_the_job_within_the_timeout(tmp_path, data_prefixes, data_lexicon_path):
    args = _args(data_prefixes, data_lexicon_path, tmp_path, "stuck", train_iters=100000,
                 tensor_model_parallel_size=2, distributed_timeout_minutes=TIMEOUT_MINUTES)
    proc = launch(2, args, tmp_path / "stuck.log")
    metrics = tmp_path / "stuck.jsonl"
    deadline = time.time() + 180
    try:
        while not (metrics.exists() and train_records(metrics)):
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "stuck.log").read_text()[-3000:]
            time.sleep(0.1)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "megatron_prealign.pretrain" in " ".join(p.cmdline())]
        rank1 = [p for p in workers if p.environ().get("RANK") == "1"]
        assert len(rank1) == 1, [p.cmdline() for p in workers]
        rank1[0].suspend()
        stopped = time.time()
        rc = proc.wait(timeout=150)
        waited = time.time() - stopped
    finally:
        if proc.poll() is None:
            signal_job(proc, signal.SIGKILL)
    assert rc != 0
    # The timeout itself, then torchrun's shutdown of the frozen rank (SIGTERM, 30 s, SIGKILL).
    assert waited < TIMEOUT_MINUTES * 60 + 60, waited
