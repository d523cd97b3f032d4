"""Wrap the model in megatron-core's DistributedDataParallel and wire the schedule hooks."""
from __future__ import annotations

from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads


def wrap_ddp(model, *, use_distributed_optimizer: bool = False, overlap_grad_reduce: bool = False,
             pg_collection=None) -> DistributedDataParallel:
    """megatron-core DDP with contiguous fp32 grad buffers.

    Grads are summed (not averaged) in the collective because the loss is a per-token sum and
    `finalize_model_grads` divides by the global token count afterwards.
    """
    config = model.config
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=overlap_grad_reduce,
        use_distributed_optimizer=use_distributed_optimizer,
        average_in_collective=False,
    )
    ddp_model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model,
                                        pg_collection=pg_collection)
    config.no_sync_func = ddp_model.no_sync
    config.finalize_model_grads_func = finalize_model_grads
    return ddp_model
