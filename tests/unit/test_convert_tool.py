"""Tier 2: conversion's error cases through `convert_hf_to_mcore` / `convert_mcore_to_hf`, and the
argument handling and error exits of their command line tools/convert_checkpoint.py, run as a
script. Every case here fails before a process group would be created; the successful
conversions run in tests/distributed/test_convert_parity.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests._tools import run_tool

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from megatron_prealign.checkpointing import CheckpointError  # noqa: E402
from megatron_prealign.convert import ConversionError, convert_hf_to_mcore, convert_mcore_to_hf  # noqa: E402

ERRORS = (ConversionError, CheckpointError, FileNotFoundError)


def _hf_dir(path: Path, **overrides) -> Path:
    """A tiny random Llama saved the way transformers saves it."""
    config = dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    config.update(overrides)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    model.save_pretrained(path)
    return path


def _failure(convert, *args, **kwargs) -> str:
    """The message of the conversion error that `convert(*args, **kwargs)` raises."""
    with pytest.raises(ERRORS) as error:
        convert(*args, **kwargs)
    return str(error.value)


def _hf_to_mcore(hf_path, out, tp=1, pp=1) -> str:
    return _failure(convert_hf_to_mcore, hf_path, out, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)


@pytest.mark.parametrize("argv", [
    ["--direction", "hf-to-mcore", "--output", "x"],
    ["--direction", "hf-to-mcore", "--hf-path", "a", "--load", "b", "--output", "x"],
    ["--direction", "mcore-to-hf", "--output", "x"],
    ["--direction", "mcore-to-hf", "--load", "b", "--hf-path", "a", "--output", "x"],
    ["--direction", "sideways", "--load", "b", "--output", "x"],
    ["--direction", "hf-to-mcore", "--hf-path", "a", "--hf-assets", "b", "--output", "x"],
])
def test_wrong_flag_combinations_exit_with_usage(argv, tmp_path):
    proc = run_tool("convert_checkpoint", argv, cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_missing_inputs_fail_with_the_path(tmp_path):
    assert "nowhere is not a directory" in _hf_to_mcore(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert "no config.json in" in _hf_to_mcore(tmp_path / "empty", tmp_path / "out")
    assert "holds no checkpoint" in _failure(convert_mcore_to_hf, tmp_path / "empty", tmp_path / "hf")
    assert not (tmp_path / "out").exists() and not (tmp_path / "hf").exists()


def test_script_reports_a_failed_conversion_in_one_line(tmp_path):
    proc = run_tool("convert_checkpoint", ["--direction", "hf-to-mcore", "--hf-path", str(tmp_path / "nowhere"),
                                           "--output", str(tmp_path / "out")], cwd=tmp_path)
    assert proc.returncode == 2 and "nowhere is not a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_and_config_fields_are_named(tmp_path):
    hf = _hf_dir(tmp_path / "hf")
    config = (hf / "config.json").read_text()
    (hf / "config.json").write_text(config.replace('"LlamaForCausalLM"', '"GPTNeoXForCausalLM"'))
    assert "unsupported architecture GPTNeoXForCausalLM (config.json `architectures`)" in _hf_to_mcore(
        hf, tmp_path / "out")
    (hf / "config.json").write_text(config.replace('"attention_bias": false', '"attention_bias": true'))
    assert "unsupported `attention_bias`=true" in _hf_to_mcore(hf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_match_the_config_name_the_tensor(tmp_path):
    hf = _hf_dir(tmp_path / "hf", num_key_value_heads=4)
    config = (hf / "config.json").read_text()
    (hf / "config.json").write_text(config.replace('"num_key_value_heads": 4', '"num_key_value_heads": 2'))
    assert ("tensor model.layers.0.self_attn.k_proj.weight has shape (32, 32), but config.json "
            "implies (16, 32)") in _hf_to_mcore(hf, tmp_path / "out")


def test_target_layout_that_cannot_split_the_model_names_the_flag(tmp_path):
    hf = _hf_dir(tmp_path / "hf")
    assert "--target-tensor-parallel-size 4 does not divide num_key_value_heads" in _hf_to_mcore(
        hf, tmp_path / "out", tp=4)
    assert "--target-pipeline-parallel-size 4 does not divide num_hidden_layers=2" in _hf_to_mcore(
        hf, tmp_path / "out", pp=4)


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("direction", ["hf-to-mcore", "mcore-to-hf"])
def test_a_non_empty_output_is_refused_and_left_as_it_was(tmp_path, direction):
    """Neither direction mixes its files into a directory that holds something (a Hugging Face
    model, or a training root whose tracker a release would move)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "latest_checkpointed_iteration.txt").write_text("1200")
    (out / "config.json").write_text("{}")
    before = _listing(out)
    source = ["--hf-path", str(_hf_dir(tmp_path / "hf"))] if direction == "hf-to-mcore" else ["--load", str(out)]
    proc = run_tool("convert_checkpoint", ["--direction", direction, *source, "--output", str(out)], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "is not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
    assert _listing(out) == before


def test_overwrite_replaces_the_output_as_a_whole(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    proc = run_tool("convert_checkpoint", ["--direction", "hf-to-mcore", "--hf-path", str(_hf_dir(tmp_path / "hf")),
                                           "--output", str(out), "--overwrite"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["hf_assets", "latest_checkpointed_iteration.txt", "release"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary was left behind"
