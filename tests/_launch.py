"""Launch `python -m megatron_prealign.pretrain` as a real job (single process or torchrun)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests._dist import free_port


def launch(nproc: int, args: list[str], log: Path, launcher: str = "torchrun") -> subprocess.Popen:
    """Start the trainer in its own process group (so a test can signal the whole job), with
    torchrun (`launcher="torchrun"`; one process runs without a launcher) or DeepSpeed's
    (`launcher="deepspeed"`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if launcher == "deepspeed":
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc),
               "--master_port", str(free_port()), "--module", "megatron_prealign.pretrain", *args]
    elif nproc == 1:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        cmd = [sys.executable, "-m", "megatron_prealign.pretrain", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "megatron_prealign.pretrain", *args]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def signal_job(proc: subprocess.Popen, sig: int) -> None:
    """Signal the launcher and every descendant: torchrun starts its workers in sessions of their
    own, so signalling the launcher's process group alone would leave them running."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        members = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            member.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    if sig == signal.SIGKILL:
        psutil.wait_procs(members, timeout=30)


def run(nproc: int, args: list[str], log: Path, timeout: float = 300, launcher: str = "torchrun") -> None:
    """Run the trainer to completion; fail with the log's tail otherwise."""
    proc = launch(nproc, args, log, launcher)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_job(proc, signal.SIGKILL)
        raise AssertionError(f"run timed out; log:\n{log.read_text()[-4000:]}")
    assert rc == 0, f"run failed ({rc}); log:\n{log.read_text()[-4000:]}"


def train_records(path: Path) -> dict[int, dict]:
    """Metrics-log records of training iterations, by iteration."""
    records = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "lm_loss" in record:
            records[record["iteration"]] = record
    return records


def eval_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if "eval_loss" in line]
