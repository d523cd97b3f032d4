"""Run a function on N local ranks (gloo on CPU) and collect each rank's return value.

One `torch.multiprocessing.spawn` per call: spawn sparingly (each child imports torch and
megatron-core, a few seconds on 2 cores) and put several checks into one ranked function.
The function must be importable by module path (defined at module level in a test file).
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        # Two cores shared by all ranks: oversubscribed intra-op threads only slow gloo down.
        OMP_NUM_THREADS="1",
    )
    import torch

    from megatron_prealign.platform import activate_cpu_compat

    torch.set_num_threads(1)
    activate_cpu_compat()  # each rank is a process of its own: its entry point switches the layer on
    try:
        result: Any = ("ok", fn(rank, world_size, *args))
    except BaseException:  # report the child's traceback in the parent test
        result = ("error", traceback.format_exc())
    with open(Path(out_dir) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)
    if result[0] == "error":
        raise SystemExit(1)


def run_on_ranks(fn: Callable, world_size: int = 2, *args: Any) -> list[Any]:
    """Call `fn(rank, world_size, *args)` on `world_size` processes; return results by rank.

    Each rank sees torchrun-style env vars, so `init_distributed` works unchanged. A failing rank
    raises here with its traceback.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        port = free_port()
        try:
            mp.spawn(_entry, args=(fn, world_size, port, out_dir, args), nprocs=world_size, join=True)
        except Exception as exc:
            errors = []
            for rank in range(world_size):
                path = Path(out_dir) / f"rank{rank}.pkl"
                if path.exists():
                    status, payload = pickle.loads(path.read_bytes())
                    if status == "error":
                        errors.append(f"--- rank {rank} ---\n{payload}")
            raise RuntimeError("\n".join(errors) or str(exc)) from None
        results = []
        for rank in range(world_size):
            status, payload = pickle.loads((Path(out_dir) / f"rank{rank}.pkl").read_bytes())
            results.append(payload)
        return results
