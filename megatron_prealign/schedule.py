"""megatron-core's forward-backward schedules with the run's process groups passed explicitly.

Both stages (pre-pass and pretraining) and the alignment-gap measurement run their microbatches
through here: no-pipelining at PP=1, 1F1B at PP>1; a DeepSpeed engine (the DeepSpeed backend,
one stage) gets the same contract from `megatron_prealign.deepspeed.engine.run_microbatches`.
The groups come from the caller's `ProcessGroupCollection`, never from megatron-core's global
`parallel_state`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator


def run_schedule(model, forward_step_func: Callable, data_iterator: Iterator, *, num_microbatches: int,
                 seq_length: int, micro_batch_size: int, pg_collection, forward_only: bool = False,
                 loss_tokens: Callable[[Any], int] | None = None) -> list[Any]:
    """One forward (and backward unless `forward_only`) pass over `num_microbatches` microbatches
    of this rank's model chunk; returns the loss functions' reports of this stage's microbatches
    (empty except on the last stage). `loss_tokens(microbatch)` is the `num_tokens` the loss
    function will report for it, counted before the forward: the DeepSpeed backend needs the
    step's total before the first backward; megatron-core's schedules divide afterwards."""
    from megatron_prealign.deepspeed.engine import is_engine

    if is_engine(model):
        from megatron_prealign.deepspeed.engine import run_microbatches

        return run_microbatches(model, forward_step_func, data_iterator, num_microbatches=num_microbatches,
                                pg_collection=pg_collection, forward_only=forward_only, loss_tokens=loss_tokens)
    from megatron.core.pipeline_parallel import get_forward_backward_func

    pipeline = pg_collection.pp.size()
    kwargs: dict[str, Any] = {"pg_collection": pg_collection}
    if pipeline > 1:
        from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

        config = getattr(model, "config", None) or model.module.config
        kwargs["p2p_communicator"] = P2PCommunicator(pp_group=pg_collection.pp, config=config)
    return get_forward_backward_func(pp_size=pipeline)(
        forward_step_func=forward_step_func,
        data_iterator=data_iterator,
        model=[model],
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
        **kwargs,
    )
