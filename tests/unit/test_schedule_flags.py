"""Tier 1: sample-based schedules and contradictory flag combinations, as config-time errors that
name both flags (no model, no process group)."""
from __future__ import annotations

import pytest

from megatron_prealign.config import RunConfig

BASE = {"data_path": ["corpus_text_document"], "tokenizer_model": "tok.model"}


def _cfg(**values):
    return RunConfig.from_flat({**BASE, **values})


@pytest.mark.parametrize("values, message", [
    ({"sequence_parallel": True}, "--sequence-parallel needs --tensor-model-parallel-size"),
    ({"num_layers_per_virtual_pipeline_stage": 1}, "--num-layers-per-virtual-pipeline-stage.*--pipeline-model-parallel-size"),
    ({"overlap_param_gather": True}, "--overlap-param-gather needs --use-distributed-optimizer"),
    ({"context_parallel_size": 2}, "--context-parallel-size > 1 needs TransformerEngine"),
    ({"train_samples": 64, "train_iters": 10}, "--train-iters and --train-samples are mutually exclusive"),
    ({"train_samples": 64, "lr_warmup_iters": 2}, "--lr-warmup-samples.*--lr-warmup-iters"),
    ({"train_iters": 10, "lr_warmup_samples": 8}, "--lr-warmup-samples/--lr-decay-samples go with --train-samples"),
    ({"train_iters": 10, "rampup_batch_size": [4, 4, 16], "global_batch_size": 8},
     "--rampup-batch-size needs --train-samples"),
    ({"pipeline_model_parallel_size": 2, "num_layers": 4, "num_layers_per_virtual_pipeline_stage": 2},
     "--num-layers-per-virtual-pipeline-stage 2 gives one chunk per pipeline rank"),
    ({"pipeline_model_parallel_size": 2, "num_layers": 6, "num_layers_per_virtual_pipeline_stage": 2},
     "--num-layers 6 must be divisible by --pipeline-model-parallel-size 2 x --num-layers-per-virtual-pipeline-stage 2"),
    ({"attention_backend": "te", "transformer_impl": "local"}, "--attention-backend te needs --transformer-impl"),
])
def test_contradictory_combinations_name_both_flags(values, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**values)


def test_interleaved_pipeline_layout():
    cfg = _cfg(pipeline_model_parallel_size=2, num_layers=8, num_layers_per_virtual_pipeline_stage=2,
               align_steps=0)
    assert cfg.parallel.virtual_pipeline_size(cfg.model.num_layers) == 2
    assert _cfg().parallel.virtual_pipeline_size(8) is None


def test_rampup_follows_megatron_core_and_ends_at_train_samples():
    from megatron_prealign.training.batches import BatchSchedule

    cfg = _cfg(micro_batch_size=2, global_batch_size=8, train_samples=60, rampup_batch_size=[4, 2, 16])
    schedule = BatchSchedule(cfg.training, dp_size=1)
    batches, consumed = [], 0
    while not schedule.finished(len(batches), consumed):
        batches.append(schedule.global_batch(consumed))
        consumed += batches[-1]
    assert batches == [4, 4, 6, 6, 8, 8, 8, 8, 8]
    assert (schedule.total_iterations, schedule.total_samples) == (9, 60)
    # A ramp step that is not whole microbatches on every data-parallel rank is refused up front.
    with pytest.raises(ValueError, match="--rampup-batch-size START 4 must be a multiple"):
        BatchSchedule(_cfg(micro_batch_size=2, global_batch_size=24, train_samples=60,
                           rampup_batch_size=[4, 4, 16]).training, dp_size=3)


def test_sample_based_lr_schedule_counts_samples():
    import torch

    from megatron_prealign.optim import build_scheduler

    cfg = _cfg(train_samples=100, lr_warmup_samples=20, lr=1e-3, min_lr=0.0, lr_decay_style="linear")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    scheduler = build_scheduler(cfg.optim, optimizer, train_iters=0, global_batch_size=8, train_samples=100)
    scheduler.step(10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)  # half-way through the warmup
    scheduler.step(50)  # 60 samples: 40 of the 80 decay samples done
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    with pytest.raises(ValueError, match="--lr-warmup-samples 100 must be smaller"):
        build_scheduler(_cfg(train_samples=100, lr_warmup_samples=100).optim, optimizer, train_iters=0,
                        global_batch_size=8, train_samples=100)
