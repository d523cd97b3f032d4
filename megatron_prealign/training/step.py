"""One training step on megatron-core: batch broadcast, forward_step/loss_func, and the
forward-backward schedule call.

Loss convention: `calculate_per_token_loss=True`. Each microbatch's loss function returns the
*sum* of token losses and the token count; megatron-core's schedule sums counts over
microbatches and `finalize_model_grads` divides gradients by the global token count (across
data-parallel ranks). The step's loss is therefore the exact per-token mean over the global batch,
whatever the TP/PP/DP layout and however many tokens code-switching masked in each microbatch.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch

from megatron_prealign.platform import compute_device
from megatron_prealign.schedule import run_schedule

# Keys every stage may need; first stage reads tokens/position_ids, last stage labels/loss_mask.
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def broadcast_batch(batch: dict[str, torch.Tensor] | None, group) -> dict[str, torch.Tensor]:
    """Send the batch from the first rank of `group` (the TP group) to the others.

    Only TP rank 0 reads data; every TP rank of a stage needs the same microbatch.
    """
    src = torch.distributed.get_global_rank(group, 0)
    if torch.distributed.get_world_size(group) == 1:
        return {k: batch[k].to(compute_device()) for k in BATCH_KEYS}
    if torch.distributed.get_rank() == src:
        shape = torch.tensor(batch["tokens"].shape, dtype=torch.int64, device=compute_device())
    else:
        shape = torch.empty(2, dtype=torch.int64, device=compute_device())
    torch.distributed.broadcast(shape, src, group=group)
    out = {}
    for key in BATCH_KEYS:
        dtype = torch.float32 if key == "loss_mask" else torch.int64
        if torch.distributed.get_rank() == src:
            tensor = batch[key].to(device=compute_device(), dtype=dtype).contiguous()
        else:
            tensor = torch.empty(tuple(shape.tolist()), dtype=dtype, device=compute_device())
        torch.distributed.broadcast(tensor, src, group=group)
        out[key] = tensor
    return out


def lm_loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Sum of masked per-token losses, the token count, and the values to report."""
    losses = output_tensor.float()  # [b, s]
    mask = loss_mask.float()  # [b, s]
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), mask.sum().detach()])  # (sum, count)
    return loss_sum, num_tokens, {"lm_loss": report}


def forward_step(data_iterator: Iterator, model, *, tp_group):
    """megatron-core forward_step: pull a microbatch, run this stage, return (output, loss_fn)."""
    # Only TP rank 0 reads data (the others hold no iterator); it broadcasts to its TP group.
    batch = next(data_iterator) if data_iterator is not None else None
    batch = broadcast_batch(batch, tp_group)
    output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    return output, partial(lm_loss_func, batch["loss_mask"])


@dataclass
class StepResult:
    lm_loss: float | None
    """Per-token mean LM loss over the global batch (None on ranks that are not the last stage)."""
    num_tokens: int
    """Loss tokens in the global batch on this data-parallel rank's share."""


def reduce_lm_loss(losses: list[dict], dp_group) -> StepResult:
    """Combine the per-microbatch (sum, count) reports into the global per-token mean."""
    if not losses:
        return StepResult(lm_loss=None, num_tokens=0)
    totals = torch.stack([item["lm_loss"] for item in losses]).sum(dim=0)
    local_tokens = int(totals[1].item())
    torch.distributed.all_reduce(totals, group=dp_group)
    return StepResult(lm_loss=(totals[0] / totals[1].clamp(min=1)).item(), num_tokens=local_tokens)


def loss_tokens(batch: dict[str, torch.Tensor]) -> int:
    """The token count `lm_loss_func` will report for `batch`."""
    return int(batch["loss_mask"].sum())


def forward_backward(model, microbatches: list[dict] | Iterator, *, num_microbatches: int, seq_length: int,
                     micro_batch_size: int, pg_collection, forward_only: bool = False) -> StepResult:
    """Run megatron-core's schedule (1F1B under PP) over `num_microbatches` microbatches."""
    data_iterator = iter(microbatches) if isinstance(microbatches, list) else microbatches
    losses = run_schedule(model, partial(forward_step, tp_group=pg_collection.tp), data_iterator,
                          num_microbatches=num_microbatches, seq_length=seq_length,
                          micro_batch_size=micro_batch_size, pg_collection=pg_collection,
                          forward_only=forward_only, loss_tokens=loss_tokens)
    return reduce_lm_loss(losses, pg_collection.dp)
