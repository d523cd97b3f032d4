"""Tier 1: the DeepSpeed backend's config (`--deepspeed-config`) without processes:
the shipped example files, what the run's flags own, the layouts the backend refuses, and the
optimizer state a resume refuses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_prealign.config import RunConfig, parse_args
from megatron_prealign.deepspeed.config import check_deepspeed_json, read_deepspeed_json, stage_deepspeed_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "deepspeed"


def _write(tmp_path, data) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("name, stage, offload", [("zero1.json", 1, False), ("zero2.json", 2, False),
                                                  ("zero3_offload.json", 3, True)])
def test_examples_parse_with_comments_and_get_the_flags_values(name, stage, offload):
    path = EXAMPLES / name
    data = read_deepspeed_json(path)
    assert check_deepspeed_json(data, path, bf16=False, fp16=False) == stage
    staged = stage_deepspeed_json(data, path, micro_batch_size=2, num_microbatches=3, data_parallel_size=4,
                                  clip_grad=0.5, bf16=False, fp16=False, check_against_flags=True)
    assert staged["train_micro_batch_size_per_gpu"] == 2 and staged["gradient_accumulation_steps"] == 3
    assert staged["train_batch_size"] == 24 and staged["gradient_clipping"] == 0.5
    assert staged["bf16"] == {"enabled": False} and staged["fp16"] == {"enabled": False}
    assert staged["zero_optimization"] == data["zero_optimization"]
    assert ("zero_force_ds_cpu_optimizer" in staged) == offload
    assert "optimizer" not in staged and "scheduler" not in staged
    # Precision comes from the model flags; the examples leave it out.
    assert check_deepspeed_json(data, path, bf16=True, fp16=False) == stage
    staged = stage_deepspeed_json(data, path, micro_batch_size=2, num_microbatches=3, data_parallel_size=4,
                                  clip_grad=0.5, bf16=True, fp16=False, check_against_flags=True)
    assert staged["bf16"] == {"enabled": True} and staged["fp16"] == {"enabled": False}


def test_batch_keys_may_repeat_the_flags_or_be_auto_but_not_differ(tmp_path):
    base = {"zero_optimization": {"stage": 2}}
    kwargs = dict(micro_batch_size=2, num_microbatches=2, data_parallel_size=2, clip_grad=1.0, bf16=False, fp16=False)
    for given in ({"train_batch_size": 8, "gradient_clipping": 1.0}, {"train_micro_batch_size_per_gpu": "auto"}):
        path = _write(tmp_path, {**base, **given})
        stage_deepspeed_json(read_deepspeed_json(path), path, check_against_flags=True, **kwargs)
    path = _write(tmp_path, {**base, "train_micro_batch_size_per_gpu": 4})
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu.*--micro-batch-size"):
        stage_deepspeed_json(read_deepspeed_json(path), path, check_against_flags=True, **kwargs)
    # The pre-pass has its own batch and clipping: it overrides them.
    staged = stage_deepspeed_json(read_deepspeed_json(path), path, check_against_flags=False, **kwargs)
    assert staged["train_micro_batch_size_per_gpu"] == 2


@pytest.mark.parametrize("data, message", [
    ({"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW"}}, "remove the \"optimizer\" section.*--lr"),
    ({"zero_optimization": {"stage": 2}, "scheduler": {"type": "WarmupLR"}}, "\"scheduler\".*--lr-decay-style"),
    ({"train_batch_size": 8}, "zero_optimization.*stage.*default backend"),
    ({"zero_optimization": {"stage": 0}}, "stage"),
    ({"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}, "bf16.*disagrees with --bf16"),
])
def test_settings_the_flags_own_are_refused_with_the_flag_named(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=message):
        check_deepspeed_json(read_deepspeed_json(path), path, bf16=False, fp16=False)


def test_unreadable_file_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--deepspeed-config .*no such file"):
        read_deepspeed_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"zero_optimization\": ")
    with pytest.raises(ValueError, match="--deepspeed-config .*bad.json"):
        read_deepspeed_json(bad)


@pytest.mark.parametrize("flags, message", [
    (["--pipeline-model-parallel-size", "2"], "does not support --pipeline-model-parallel-size"),
    (["--tensor-model-parallel-size", "2", "--sequence-parallel"], "does not support --sequence-parallel"),
    (["--use-distributed-optimizer"], "does not support --use-distributed-optimizer"),
    (["--optimizer", "sgd"], "does not support --optimizer sgd"),
])
def test_megatron_core_only_layouts_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--deepspeed-config", str(EXAMPLES / "zero2.json"), "--num-layers", "4", *flags])
    assert message in capsys.readouterr().err


def test_flag_yaml_key_and_the_deepspeed_launchers_local_rank(tmp_path):
    cfg, _ = parse_args(["--deepspeed-config", str(EXAMPLES / "zero1.json"), "--local_rank=1"])
    assert cfg.deepspeed.config == str(EXAMPLES / "zero1.json")
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(f"deepspeed_config: {EXAMPLES / 'zero3_offload.json'}\n")
    cfg, _ = parse_args(["--config", str(yaml_file), "--local-rank", "0"])
    assert cfg.deepspeed.config.endswith("zero3_offload.json")
    assert RunConfig().deepspeed.config is None


def test_resume_refuses_optimizer_state_deepspeed_cannot_load():
    """DeepSpeed loads ZeRO partitions only at the layout and stage they were written at."""
    from types import SimpleNamespace

    from megatron_prealign.checkpointing import CheckpointError
    from megatron_prealign.deepspeed.stages import DeepSpeedStages

    def group(size):
        return SimpleNamespace(size=lambda: size)

    stages = DeepSpeedStages.__new__(DeepSpeedStages)
    stages.pgs, stages.zero_stage = SimpleNamespace(tp=group(1), dp=group(2)), 2
    layout = {"tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1, "data_parallel_size": 2}
    stages.check_resumable("ckpt", {"zero_stage": 2, "layout": layout})
    for meta in ({"zero_stage": 3, "layout": layout}, {"zero_stage": 2, "layout": {**layout, "data_parallel_size": 4}}):
        with pytest.raises(CheckpointError, match="DeepSpeed cannot load.*--pretrained-checkpoint"):
            stages.check_resumable("ckpt", meta)
