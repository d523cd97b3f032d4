"""megatron-core's forward-backward schedules with the run's process groups passed explicitly.

Both stages (pre-pass and pretraining) and the alignment-gap measurement run their microbatches
through here: no-pipelining at PP=1, 1F1B at PP>1; a DeepSpeed engine (the DeepSpeed backend,
one stage) gets the same contract from `megatron_prealign.deepspeed.engine.run_microbatches`.
The groups come from the caller's `ProcessGroupCollection`, never from megatron-core's global
`parallel_state`.
"""
from __future__ import annotations

import itertools
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

    if isinstance(data_iterator, list) and len(model_chunks(model)) == 1:
        data_iterator = data_iterator[0]

    if is_engine(model):
        from megatron_prealign.deepspeed.engine import run_microbatches

        return run_microbatches(model, forward_step_func, data_iterator, num_microbatches=num_microbatches,
                                pg_collection=pg_collection, forward_only=forward_only, loss_tokens=loss_tokens)
    from megatron.core.pipeline_parallel import get_forward_backward_func

    chunks = model_chunks(model)
    pipeline = pg_collection.pp.size()
    kwargs: dict[str, Any] = {"pg_collection": pg_collection}
    if pipeline > 1:
        from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

        config = getattr(chunks[0], "config", None) or chunks[0].module.config
        kwargs["p2p_communicator"] = P2PCommunicator(pp_group=pg_collection.pp, config=config)
    if len(chunks) > 1:
        config = getattr(chunks[0], "config", None) or chunks[0].module.config
        if num_microbatches < pipeline:
            raise ValueError(f"the interleaved schedule (--num-layers-per-virtual-pipeline-stage) needs at least "
                             f"--pipeline-model-parallel-size {pipeline} microbatches per step, got {num_microbatches}: "
                             f"raise --global-batch-size or drop --num-layers-per-virtual-pipeline-stage")
        # megatron-core walks the microbatches in groups of N per chunk and refuses a last group
        # smaller than PP; one group of all M is the same schedule without that restriction
        # (a ramped-up batch or the alignment metric's word count need not be a multiple of PP).
        config.microbatch_group_size_per_vp_stage = pipeline if num_microbatches % pipeline == 0 else num_microbatches
    if len(chunks) > 1 and not isinstance(data_iterator, list):
        # The interleaved schedule pulls every microbatch once per chunk (each chunk's forward step
        # needs the batch: the first stage's tokens, the last stage's labels, the pre-pass's word
        # masks on every stage); one reader feeds them all.
        data_iterator = list(itertools.tee(data_iterator, len(chunks))) if data_iterator is not None \
            else [None] * len(chunks)
    return get_forward_backward_func(pp_size=pipeline, vp_size=len(chunks) if len(chunks) > 1 else None)(
        forward_step_func=forward_step_func,
        data_iterator=data_iterator,
        model=chunks,
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
        **kwargs,
    )


def model_chunks(model) -> list:
    """A model (one chunk) or the list of this rank's chunks (interleaved schedule), as a list."""
    return list(model) if isinstance(model, (list, tuple)) else [model]
