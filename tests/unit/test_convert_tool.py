"""Tier 2: tools/convert_checkpoint.py's argument handling and its error exits, through
`main(argv)` (the file is loaded with importlib; tools/ is not a package). Every case here fails
before a process group would be created; the successful conversions run in
tests/distributed/test_convert_parity.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "convert_checkpoint.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("convert_checkpoint_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hf_dir(path: Path, **overrides) -> Path:
    """A tiny random Llama saved the way transformers saves it."""
    config = dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    config.update(overrides)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    model.save_pretrained(path)
    return path


def _logged(caplog, text: str) -> bool:
    """True when `text` was logged since the last check (the log is cleared)."""
    found = text in caplog.text
    caplog.clear()
    return found


def _hf_to_mcore(hf_path, out, tp=1, pp=1):
    return ["--direction", "hf-to-mcore", "--hf-path", str(hf_path), "--output", str(out),
            "--target-tensor-parallel-size", str(tp), "--target-pipeline-parallel-size", str(pp)]


@pytest.mark.parametrize("argv", [
    ["--direction", "hf-to-mcore", "--output", "x"],
    ["--direction", "hf-to-mcore", "--hf-path", "a", "--load", "b", "--output", "x"],
    ["--direction", "mcore-to-hf", "--output", "x"],
    ["--direction", "mcore-to-hf", "--load", "b", "--hf-path", "a", "--output", "x"],
    ["--direction", "sideways", "--load", "b", "--output", "x"],
    ["--direction", "hf-to-mcore", "--hf-path", "a", "--hf-assets", "b", "--output", "x"],
])
def test_wrong_flag_combinations_exit_with_usage(tool, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_missing_inputs_fail_with_the_path(tool, tmp_path, caplog):
    assert tool.main(_hf_to_mcore(tmp_path / "nowhere", tmp_path / "out")) == 2
    assert _logged(caplog, "nowhere is not a directory")
    (tmp_path / "empty").mkdir()
    assert tool.main(_hf_to_mcore(tmp_path / "empty", tmp_path / "out")) == 2
    assert _logged(caplog, "no config.json in")
    assert tool.main(["--direction", "mcore-to-hf", "--load", str(tmp_path / "empty"),
                      "--output", str(tmp_path / "hf")]) == 2
    assert _logged(caplog, "not a complete megatron_prealign checkpoint")
    assert not (tmp_path / "out").exists() and not (tmp_path / "hf").exists()


def test_unsupported_architecture_and_config_fields_are_named(tool, tmp_path, caplog):
    hf = _hf_dir(tmp_path / "hf")
    config = (hf / "config.json").read_text()
    (hf / "config.json").write_text(config.replace('"LlamaForCausalLM"', '"GPTNeoXForCausalLM"'))
    assert tool.main(_hf_to_mcore(hf, tmp_path / "out")) == 2
    assert _logged(caplog, "unsupported architecture GPTNeoXForCausalLM (config.json `architectures`)")
    (hf / "config.json").write_text(config.replace('"attention_bias": false', '"attention_bias": true'))
    assert tool.main(_hf_to_mcore(hf, tmp_path / "out")) == 2
    assert _logged(caplog, "unsupported `attention_bias`=true")
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_match_the_config_name_the_tensor(tool, tmp_path, caplog):
    hf = _hf_dir(tmp_path / "hf", num_key_value_heads=4)
    config = (hf / "config.json").read_text()
    (hf / "config.json").write_text(config.replace('"num_key_value_heads": 4', '"num_key_value_heads": 2'))
    assert tool.main(_hf_to_mcore(hf, tmp_path / "out")) == 2
    assert _logged(caplog, ("tensor model.layers.0.self_attn.k_proj.weight has shape (32, 32), but config.json "
            "implies (16, 32)"))


def test_target_layout_that_cannot_split_the_model_names_the_flag(tool, tmp_path, caplog):
    hf = _hf_dir(tmp_path / "hf")
    assert tool.main(_hf_to_mcore(hf, tmp_path / "out", tp=4)) == 2
    assert _logged(caplog, "--target-tensor-parallel-size 4 does not divide num_key_value_heads")
    assert tool.main(_hf_to_mcore(hf, tmp_path / "out", pp=4)) == 2
    assert _logged(caplog, "--target-pipeline-parallel-size 4 does not divide num_hidden_layers=2")
