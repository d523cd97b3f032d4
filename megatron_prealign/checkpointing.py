"""Checkpoints through megatron-core's dist_checkpointing (layout-independent on disk).

A checkpoint written at one TP/PP layout loads at any other: every tensor is stored under its
global name with its global shape, and each rank reads the slices its layout needs.
Directories are written under a temporary name and renamed when every rank has finished.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing


def _unwrap(model):
    return getattr(model, "module", model)


def _barrier(group=None) -> None:
    if dist.is_initialized():
        dist.barrier(group=group)


def save_model_weights(model, path: str | os.PathLike, group=None) -> None:
    """Collectively save `model`'s parameters (all ranks of the job must call this)."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp")
    if not dist.is_initialized() or dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(group)
    dist_checkpointing.save(_unwrap(model).sharded_state_dict(), str(tmp))
    _barrier(group)
    if not dist.is_initialized() or dist.get_rank() == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    _barrier(group)


def load_model_weights(model, path: str | os.PathLike, strict: bool = True) -> None:
    """Load parameters saved by `save_model_weights` at any TP/PP layout into `model`."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    module = _unwrap(model)
    sharded = module.sharded_state_dict()
    state = dist_checkpointing.load(sharded, str(path))
    module.load_state_dict(state, strict=strict)


@contextmanager
def params_holding_grads(model):
    """Temporarily point each parameter's data at its gradient, so that `sharded_state_dict()`
    describes gradients with the parameters' global names and shapes (used to compare
    gradients across layouts through an ordinary checkpoint)."""
    module = _unwrap(model)
    saved = []
    for param in module.parameters():
        grad = getattr(param, "main_grad", None)
        if grad is None:
            grad = param.grad
        if grad is None:
            grad = torch.zeros_like(param)
        saved.append((param, param.data))
        param.data = grad.view_as(param).to(param.dtype)
    try:
        yield module
    finally:
        for param, data in saved:
            param.data = data


def read_full_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a dist checkpoint into full (unsharded) tensors keyed by global name, without any
    model or process group (for tests, conversion and inspection)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "full.pt"
        dcp_to_torch_save(str(path), str(out))
        state = torch.load(out, map_location="cpu", weights_only=False)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
