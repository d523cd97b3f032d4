"""Checkpoints through megatron-core's dist_checkpointing (layout-independent on disk).

Directory layout (Megatron-LM's, so its tooling recognizes it):

    <root>/latest_checkpointed_iteration.txt   "1200", or "release" for converted weights
    <root>/iter_0001200/                        dist_checkpointing files (model [+ optimizer, rng])
    <root>/iter_0001200/prealign_state.json     TrainState + resolved config + lexicon/tokenizer ids
    <root>/iter_0001200/deepspeed/              DeepSpeed backend only: its optimizer state, in
                                                DeepSpeed's own files (megatron_prealign/deepspeed)
    <root>/release/                             same, model only (tools/convert_checkpoint.py)

Every tensor is stored under its global name with its global shape, so a checkpoint written at
one TP/PP layout loads at any other. A checkpoint directory is written under a temporary name and
renamed when every rank has finished; the tracker file is replaced atomically after that, so a
run killed mid-save leaves the previous checkpoint as `latest`. A checkpoint counts as complete
only when its state file, metadata and every shard's bytes are there (`checkpoint_problem`); a
root whose tracker is missing or names something incomplete resolves to its newest complete
checkpoint, and nothing this module writes replaces a directory the run did not write or
continue from (`save_checkpoint(replaceable=...)`, `set_aside_newer`, `check_save_root`).
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Collection, ContextManager

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from torch.distributed.checkpoint.api import CheckpointException

from megatron_prealign.fileio import replace_path
from megatron_prealign.log import get_logger, log_rank0
from megatron_prealign.preemption import deferred_preemption_signals

logger = get_logger(__name__)

TRACKER_FILE = "latest_checkpointed_iteration.txt"
STATE_FILE = "prealign_state.json"
RELEASE = "release"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or incompatible with this run."""


def _unwrap(model):
    return getattr(model, "module", model)


def _modules(model) -> list:
    """The bare GPTModel chunks of a model chunk or a list of chunks (interleaved pipeline)."""
    return [_unwrap(chunk) for chunk in (model if isinstance(model, (list, tuple)) else [model])]


def _model_sharded_state(model) -> dict:
    """`{"model": sharded state}` for one chunk, `{"model0": ..., "model1": ...}` for the chunks
    of the interleaved pipeline (Megatron-LM's keys). Tensors are matched by their global names,
    so either form loads into the other layout."""
    modules = _modules(model)
    if len(modules) == 1:
        return {"model": modules[0].sharded_state_dict()}
    return {f"model{index}": module.sharded_state_dict() for index, module in enumerate(modules)}


def _load_model_state(model, loaded: dict, strict: bool) -> None:
    modules = _modules(model)
    keys = ["model"] if len(modules) == 1 else [f"model{index}" for index in range(len(modules))]
    for module, key in zip(modules, keys):
        module.load_state_dict(loaded[key], strict=strict)


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def checkpoint_name(iteration: int | None) -> str:
    """`iter_0001200` for a training checkpoint, `release` for converted weights."""
    return RELEASE if iteration is None else f"iter_{iteration:07d}"


class NoCheckpoint(CheckpointError):
    """A checkpoint root that holds no checkpoint at all (the first start of a requeueable job)."""


_ITER_DIR = re.compile(r"iter_(\d+)")


def checkpoint_dirs(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(iteration, directory) of the `iter_*` checkpoint directories under `root`, newest first
    (complete or not)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), entry) for entry in root.iterdir()
             if (match := _ITER_DIR.fullmatch(entry.name)) and entry.is_dir()]
    return sorted(found, reverse=True)


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why `ckpt` is not a complete checkpoint (None when it is). Cheap: reads the state file and
    dist_checkpointing's metadata, and checks that every shard file holds the bytes the metadata
    says it does, so a truncated or missing shard is found before any tensor is read."""
    if not ckpt.is_dir():
        return "does not exist"
    if not (ckpt / STATE_FILE).is_file():
        return f"has no {STATE_FILE} (a save that did not finish, or not a megatron_prealign checkpoint)"
    try:
        state = json.loads((ckpt / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        return f"has an unreadable {STATE_FILE} ({exc})"
    for name in (".metadata", "common.pt", "metadata.json"):
        if not (ckpt / name).is_file():
            return f"has no {name} (its tensors were not all written)"
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(ckpt)).read_metadata()
    except Exception as exc:  # a corrupt pickle raises anything
        return f"has an unreadable .metadata ({type(exc).__name__}: {exc})"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(needed.items()):
        shard = ckpt / name
        if not shard.is_file():
            return f"lacks its shard {name}"
        size = shard.stat().st_size
        if size < end:
            return f"has a truncated shard {name} ({size} of {end} bytes)"
    if state.get("backend") == "deepspeed" and state.get("has_optimizer") and not (ckpt / "deepspeed").is_dir():
        return "lacks its deepspeed/ optimizer files"
    return None


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The complete checkpoint directory that `path` designates: `path` itself when it is a
    checkpoint directory, else the one its tracker file names. When a root's tracker is missing,
    unreadable, or names a directory that is missing or incomplete, the newest complete
    checkpoint in the root is used instead, with a warning on rank 0 saying why. Raises `NoCheckpoint` for a root holding no checkpoint at all, `CheckpointError`
    when nothing in it is complete."""
    path = Path(path)
    if not path.exists():
        raise NoCheckpoint(f"{path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a checkpoint directory or root")
    if (path / STATE_FILE).exists() or _ITER_DIR.fullmatch(path.name) or path.name == RELEASE:
        problem = checkpoint_problem(path)
        if problem:
            raise CheckpointError(f"checkpoint {path} {problem}; pass an earlier checkpoint directory or its root")
        return path
    named, problem = None, None
    tracker = path / TRACKER_FILE
    if tracker.is_file():
        try:
            tag = tracker.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            tag, problem = None, f"its {TRACKER_FILE} is unreadable ({exc})"
        if tag == RELEASE or (tag or "").isdigit():
            named = path / (RELEASE if tag == RELEASE else checkpoint_name(int(tag)))
            named_problem = checkpoint_problem(named)
            if named_problem is None:
                return named
            problem = f"{named.name}, named by its {TRACKER_FILE}, {named_problem}"
        elif problem is None:
            problem = f"its {TRACKER_FILE} holds {tag[:40]!r}, not an iteration number or {RELEASE!r}"
    else:
        problem = f"it has no {TRACKER_FILE}"
    candidates = [entry for _, entry in checkpoint_dirs(path)] + [path / RELEASE]
    candidates = [entry for entry in candidates if entry.is_dir() and entry != named]
    for entry in candidates:
        if checkpoint_problem(entry) is None:
            _warn_rank0(f"checkpoint root {path}: {problem}; continuing from its newest complete "
                                         f"checkpoint, {entry.name}")
            return entry
    if named is None and not candidates:
        raise NoCheckpoint(f"{path} holds no checkpoint (no {TRACKER_FILE}, no iter_* or {RELEASE} directory)")
    raise CheckpointError(f"checkpoint root {path}: {problem}, and it holds no other complete checkpoint; restore "
                          f"it, or start over with an empty --load/--save directory")


def _warn_rank0(message: str) -> None:
    log_rank0(logger, "%s", message, level=logging.WARNING)


def set_aside_newer(root: str | os.PathLike, iteration: int) -> list[Path]:
    """Rename the checkpoint directories of `root` newer than `iteration` (the one a resumed
    run starts from) to `<name>.set-aside`, so the run's own saves at those iterations cannot
    write over them; nothing is deleted. Rank 0 renames; collective."""
    moved = []
    if _is_rank0():
        for number, entry in checkpoint_dirs(root):
            if number <= iteration:
                break
            target = entry.with_name(f"{entry.name}.set-aside")
            suffix = 1
            while target.exists():
                suffix += 1
                target = entry.with_name(f"{entry.name}.set-aside-{suffix}")
            os.replace(entry, target)
            moved.append(target)
            _warn_rank0(f"{entry} is newer than the checkpoint this run continues from (iteration {iteration}) and "
                        f"would be written over; kept as {target.name}")
    _barrier()
    return moved


def check_save_root(root: str | os.PathLike, start_iteration: int) -> None:
    """Refuse to start a run whose saves would write over checkpoints it does not continue from:
    `--save` holding checkpoints at or after the iteration the run starts at."""
    clashing = [entry.name for number, entry in checkpoint_dirs(root) if number >= start_iteration]
    if clashing:
        raise CheckpointError(
            f"--save {root} already holds {', '.join(clashing[:3])}{' ...' if len(clashing) > 3 else ''}, which this "
            f"run (starting at iteration {start_iteration}) did not continue from and would write over; pass "
            f"--load {root} to continue them, or choose another --save")


def remove_unfinished_saves(root: str | os.PathLike) -> list[Path]:
    """Remove `.iter_*.tmp` directories under `root`: saves that never finished (killed, or out of
    disk space). Only this module's own temporary names are touched. Rank 0; collective."""
    removed = []
    root = Path(root)
    if _is_rank0() and root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and (
                    _ITER_DIR.fullmatch(entry.name[1:-4]) or entry.name[1:-4] == RELEASE):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                _warn_rank0(f"removed {entry}, the remains of a checkpoint save that did not finish")
    _barrier()
    return removed


def read_checkpoint_state(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Return (checkpoint dir, its prealign_state.json) without touching tensors or groups."""
    ckpt = resolve_checkpoint_dir(path)
    return ckpt, json.loads((ckpt / STATE_FILE).read_text())


def _groups(pg_collection):
    """(pp, tp, dp) groups of the run (megatron-core's global ones when none are given)."""
    if pg_collection is None:
        from megatron.core.process_groups_config import ProcessGroupCollection

        pg_collection = ProcessGroupCollection.use_mpu_process_groups()
    return pg_collection.pp, pg_collection.tp, pg_collection.dp


def _layout(pg_collection) -> dict[str, int]:
    pp, tp, dp = _groups(pg_collection)
    return {"tensor_model_parallel_size": tp.size(), "pipeline_model_parallel_size": pp.size(),
            "data_parallel_size": dp.size()}


def _rng_sharded_object(is_loading: bool, pg_collection) -> ShardedObject:
    """This rank's RNG streams, one shard per (pp, tp, dp) position; restorable only at the
    same layout (other layouts continue from freshly seeded streams)."""
    groups = _groups(pg_collection)
    shape = tuple(group.size() for group in groups)
    pp, tp, dp = (group.rank() for group in groups)
    state = None if is_loading else {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    return ShardedObject("rng_state", state, shape, (pp, tp, dp), replica_id=0)


def _restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _sharded_state(model, optimizer, scheduler, with_rng: bool, is_loading: bool, pg_collection) -> dict:
    sharded = _model_sharded_state(model)
    model_sd = dict(sharded)
    if optimizer is not None:
        # Distributed-optimizer state in megatron-core's layout-independent form (gathered over
        # data-parallel ranks at save); its default form needs flattened ShardedTensors, which
        # this megatron-core's checkpointing no longer accepts. Ignored by other optimizers.
        sharded["optimizer"] = optimizer.sharded_state_dict(
            model_sd, is_loading=is_loading, metadata={"distrib_optim_sharding_type": "fully_reshardable"})
    if scheduler is not None:
        sharded["scheduler"] = scheduler.state_dict()
    if with_rng:
        sharded["rng_state"] = _rng_sharded_object(is_loading, pg_collection)
    return sharded


def save_checkpoint(root: str | os.PathLike, *, model, state: dict[str, Any], iteration: int | None,
                    optimizer=None, scheduler=None, with_rng: bool = True, pg_collection=None,
                    write_optimizer: Callable[[Path], None] | None = None,
                    model_context: Callable[[], ContextManager] | None = None, async_queue=None,
                    replaceable: Collection[Path] = ()) -> Path:
    """Collectively write a checkpoint and point the tracker at it. All ranks must call this.

    Args:
        root: checkpoint root (`--save`).
        model: this rank's model chunk (DDP-wrapped or not).
        state: JSON-serializable training state and run metadata (written by rank 0).
        iteration: training iteration, or None for a `release` (weights-only) checkpoint.
        optimizer / scheduler: megatron-core optimizer and OptimizerParamScheduler to include.
        pg_collection: the run's process groups (megatron-core's global ones when None).
        write_optimizer: instead of `optimizer`, `write_optimizer(dir)` writes optimizer state
            kept in another format into the checkpoint directory, on every rank (the DeepSpeed
            backend's, in DeepSpeed's own files).
        model_context: entered around reading the model's tensors (the DeepSpeed backend gathers
            ZeRO-3 partitioned parameters there).
        async_queue: megatron-core's `AsyncCallsQueue` (--async-save): the shards are written by
            a forked process while training goes on, and the rest (state file, rename, tracker)
            runs when the queue finalizes the save; until then the tracker names the previous
            checkpoint. The fork snapshots the tensors, so later steps cannot leak into the files.
        replaceable: existing checkpoint directories this save may replace (those the run wrote
            or continues from); any other existing directory of the same name is an error, never
            written over.
    """
    root = Path(root)
    final = root / checkpoint_name(iteration)
    tmp = root / f".{final.name}.tmp"
    if final.exists() and final not in {Path(entry) for entry in replaceable}:
        raise CheckpointError(f"{final} already exists and was not written by this run; move it away or choose "
                              f"another --save")
    if _is_rank0():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    with (model_context or nullcontext)():
        sharded = _sharded_state(model, optimizer, scheduler, with_rng, is_loading=False, pg_collection=pg_collection)
        with deferred_preemption_signals():  # its writer processes must outlive a Slurm SIGTERM
            _fork_writer_results_queue()
            if async_queue is None:
                try:
                    dist_checkpointing.save(sharded, str(tmp))
                except (Exception, CheckpointException) as exc:  # the latter is a BaseException
                    # Out of disk space above all: a partial directory left behind keeps the disk full.
                    reason = "No space left on device" if _disk_full(root) else _reason(exc)
                    if _is_rank0():
                        shutil.rmtree(tmp, ignore_errors=True)
                    raise CheckpointError(f"saving checkpoint {final} failed ({reason}); the partial files "
                                          f"were removed and the previous checkpoint is still the latest") from exc
            else:
                request = dist_checkpointing.save(sharded, str(tmp), sharded_strategy=_async_strategy(),
                                                  async_sharded_save=True)
                request.add_finalize_fn(lambda: _commit_checkpoint(root, tmp, final, iteration, state, optimizer,
                                                                   write_optimizer, with_rng, pg_collection))
                async_queue.schedule_async_request(request)
                log_rank0(logger, "checkpoint %s: writing in the background (--async-save)", final)
                return final
    _commit_checkpoint(root, tmp, final, iteration, state, optimizer, write_optimizer, with_rng, pg_collection)
    return final


def _async_strategy():
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    return TorchDistSaveShardedStrategy("torch_dist", 1)


def new_async_queue():
    """The queue of background checkpoint writes for --async-save. Its writers are forked per
    save (not a persistent spawned worker): a fork is what snapshots CPU tensors, which megatron-core's
    host copy leaves in place when they already live on the CPU."""
    from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

    return AsyncCallsQueue(persistent=False)


def _commit_checkpoint(root: Path, tmp: Path, final: Path, iteration: int | None, state: dict[str, Any],
                       optimizer, write_optimizer, with_rng: bool, pg_collection) -> None:
    """The collective end of a save: state file, then one rename of the whole directory, then
    the tracker, so a reader never sees a checkpoint without its state."""
    if write_optimizer is not None:
        write_optimizer(tmp)
    if _is_rank0():
        meta = {**state, "layout": _layout(pg_collection),
                "has_optimizer": optimizer is not None or write_optimizer is not None, "has_rng": with_rng}
        (tmp / STATE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    _barrier()
    if _is_rank0():
        replace_path(tmp, final)
        tracker_tmp = root / f".{TRACKER_FILE}.tmp"
        tracker_tmp.write_text(RELEASE if iteration is None else str(iteration))
        os.replace(tracker_tmp, root / TRACKER_FILE)
    _barrier()
    log_rank0(logger, "saved checkpoint %s", final)


def _disk_full(root: Path) -> bool:
    """Whether `root`'s file system is (nearly) out of space: megatron-core's writers report a
    full disk as a failed write at some position, not as ENOSPC."""
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        return False
    return usage.free < min(16 << 20, usage.total // 100)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a failed save, in one line (dist_checkpointing wraps the OSError)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _fork_writer_results_queue() -> None:
    """megatron-core's checkpoint writers report through a queue served by a `spawn`ed Manager
    process, created on first save. A spawned process starts with a clean signal mask, so Slurm's
    SIGTERM to the whole job step kills it mid-save. Serve that queue from a forked Manager
    instead (created inside `deferred_preemption_signals`, so it inherits the blocked mask).

    Call it early (`start_checkpoint_writer_queue`): a fork keeps every page the parent had at
    that moment alive for as long as the parent changes them, so forking a trainer that holds a
    model and an optimizer doubles its memory. And the Manager must not outlive its trainer: it
    asks the kernel to kill it when the parent dies (SIGKILL included)."""
    import multiprocessing
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", None) is None:
        manager = SyncManager(ctx=multiprocessing.get_context("fork"))
        manager.start(initializer=_die_with_parent)
        filesystem_async._results_queue = manager.Queue()


def _die_with_parent() -> None:
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the Manager is still ended at normal exit
        pass


def start_checkpoint_writer_queue() -> None:
    """Fork the checkpoint writers' Manager now, while this process is small (before the model
    is built); a later save reuses it."""
    with deferred_preemption_signals():
        _fork_writer_results_queue()


def load_checkpoint(path: str | os.PathLike, *, model, optimizer=None, scheduler=None,
                    strict: bool = True, pg_collection=None, with_rng: bool | None = None) -> dict[str, Any]:
    """Load a checkpoint (any TP/PP layout) into `model` [and optimizer/scheduler, and the RNG
    streams when the layout is unchanged and `with_rng` (default: when an optimizer is loaded,
    i.e. on a resume)]. Returns the checkpoint's prealign_state.json."""
    ckpt, state = read_checkpoint_state(path)
    if optimizer is not None and not state.get("has_optimizer"):
        raise CheckpointError(
            f"{ckpt} holds no optimizer state (weights only); start from it with "
            f"--pretrained-checkpoint {path} instead of --load"
        )
    if optimizer is not None and state.get("backend", "megatron") != "megatron":
        raise CheckpointError(f"{ckpt} holds the {state['backend']} backend's optimizer state, not megatron-core's")
    same_layout = state.get("layout") == _layout(pg_collection)
    with_rng = bool(state.get("has_rng")) and same_layout and (optimizer is not None if with_rng is None else with_rng)
    sharded = _sharded_state(model, optimizer, scheduler, with_rng, is_loading=True, pg_collection=pg_collection)
    with deferred_preemption_signals():
        try:
            loaded = dist_checkpointing.load(sharded, str(ckpt))
        except (Exception, CheckpointException) as exc:  # the latter is a BaseException
            raise CheckpointError(f"reading checkpoint {ckpt} failed ({_reason(exc)}); if it is corrupt, pass an "
                                  f"earlier checkpoint directory") from exc
    _load_model_state(model, loaded, strict)
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if scheduler is not None:
        # Non-tensor entries come back from the checkpoint's common (rank-0) state.
        scheduler.load_state_dict(loaded["scheduler"])
    if with_rng:
        _restore_rng(loaded["rng_state"])
    log_rank0(logger, "loaded checkpoint %s (iteration %s)", ckpt, state.get("iteration"))
    return state


def load_scheduler_state(path: str | os.PathLike) -> dict[str, Any]:
    """The LR schedule's state of a training checkpoint, without a model (the DeepSpeed backend
    builds its schedule after the weights are loaded)."""
    from megatron.core.dist_checkpointing.serialization import load_common_state_dict

    ckpt = resolve_checkpoint_dir(path)
    common = load_common_state_dict(str(ckpt))
    if "scheduler" not in common:
        raise CheckpointError(f"{ckpt} holds no LR schedule state (weights only)")
    return common["scheduler"]


def save_model_weights(model, path: str | os.PathLike) -> None:
    """Collectively save only `model`'s parameters into directory `path` (tests, inspection)."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp")
    if _is_rank0():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    dist_checkpointing.save(_model_sharded_state(model), str(tmp))
    _barrier()
    if _is_rank0():
        replace_path(tmp, final)
    _barrier()


def load_model_weights(model, path: str | os.PathLike, strict: bool = True) -> None:
    """Load parameters saved by `save_model_weights` at any TP/PP layout into `model`."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    _load_model_state(model, dist_checkpointing.load(_model_sharded_state(model), str(path)), strict)


@contextmanager
def params_holding_grads(model):
    """Temporarily point each parameter's data at its gradient, so that `sharded_state_dict()`
    describes gradients with the parameters' global names and shapes (used to compare
    gradients across layouts through an ordinary checkpoint)."""
    saved = []
    for param in (param for module in _modules(model) for param in module.parameters()):
        grad = getattr(param, "main_grad", None)
        if grad is None:
            grad = param.grad
        if grad is None:
            grad = torch.zeros_like(param)
        saved.append((param, param.data))
        param.data = grad.view_as(param).to(param.dtype)
    try:
        yield model
    finally:
        for param, data in saved:
            param.data = data


def read_full_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a dist checkpoint's tensors as full (unsharded) tensors keyed by global name, with no
    model or process group (conversion, tests, inspection). Accepts a root or a checkpoint dir."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    path = Path(path)
    if (path / TRACKER_FILE).is_file():
        path = resolve_checkpoint_dir(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "full.pt"
        dcp_to_torch_save(str(path), str(out))
        state = torch.load(out, map_location="cpu", weights_only=False)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
