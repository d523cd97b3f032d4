"""Tier 1: the checkpoint writers' Manager process (forked once, early) dies with its trainer,
even when the trainer is SIGKILLed (it once survived as an orphan holding the trainer's memory)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import os, signal, sys
from megatron_prealign.checkpointing import start_checkpoint_writer_queue
start_checkpoint_writer_queue()
children = open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()
print(" ".join(children), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_writer_manager_dies_with_a_killed_trainer():
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    children = [int(pid) for pid in proc.stdout.split()]
    assert children, "no Manager process was started"
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in children):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in children), children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
