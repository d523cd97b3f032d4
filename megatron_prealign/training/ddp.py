"""Wrap the model chunks in megatron-core's DistributedDataParallel and wire the schedule hooks."""
from __future__ import annotations

from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads


def wrap_ddp(model, *, use_distributed_optimizer: bool = False, overlap_grad_reduce: bool = False,
             overlap_param_gather: bool = False, grad_reduce_in_fp32: bool = True, pg_collection=None):
    """megatron-core DDP around a model chunk, or around each of a list of chunks (the interleaved
    pipeline), returning the same shape.

    Grads are summed (not averaged) in the collective because the loss is a per-token sum and
    `finalize_model_grads` divides by the global token count afterwards. The schedule hooks go on
    the chunks' shared TransformerConfig, as megatron-core's schedules read them: `no_sync` for
    gradient accumulation, the chunks' gradient reduction (`--overlap-grad-reduce`) and parameter
    all-gather (`--overlap-param-gather`) started by the schedule as each chunk finishes.
    """
    chunks = model if isinstance(model, list) else [model]
    config = chunks[0].config
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=grad_reduce_in_fp32,
        overlap_grad_reduce=overlap_grad_reduce,
        overlap_param_gather=overlap_param_gather,
        use_distributed_optimizer=use_distributed_optimizer,
        average_in_collective=False,
    )
    # Later chunks get one bucket each: their gradients are ready at the end of the backward.
    wrapped = [DistributedDataParallel(config=config, ddp_config=ddp_config, module=chunk,
                                       disable_bucketing=index > 0, pg_collection=pg_collection)
               for index, chunk in enumerate(chunks)]

    def per_chunk(functions):
        return functions[0] if len(functions) == 1 else functions

    config.no_sync_func = per_chunk([chunk.no_sync for chunk in wrapped])
    config.grad_sync_func = per_chunk([chunk.start_grad_sync for chunk in wrapped]) if overlap_grad_reduce else None
    config.param_sync_func = per_chunk([chunk.start_param_sync for chunk in wrapped]) if overlap_param_gather \
        else None
    config.finalize_model_grads_func = finalize_model_grads
    return wrapped if isinstance(model, list) else wrapped[0]
