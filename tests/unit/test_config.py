"""Tier 1 (pure functions): the run config, its CLI surface and YAML loading."""
from __future__ import annotations

from pathlib import Path

import pytest

from megatron_prealign.config import RunConfig, cli_flags, parse_args
from tests.conftest import ASSETS

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "cli_flags.txt"


def test_cli_surface_is_pinned():
    """Adding or renaming a flag is a deliberate act: update tests/assets/cli_flags.txt with it."""
    assert cli_flags() == GOLDEN.read_text().split()


def test_megatron_flags_required_by_the_issue_exist():
    required = """--num-layers --hidden-size --ffn-hidden-size --num-attention-heads --num-query-groups
    --seq-length --max-position-embeddings --position-embedding-type --normalization --swiglu
    --untie-embeddings-and-output-weights --micro-batch-size --global-batch-size --train-iters --lr --min-lr
    --lr-decay-style --lr-warmup-iters --weight-decay --clip-grad --tensor-model-parallel-size
    --pipeline-model-parallel-size --sequence-parallel --use-distributed-optimizer --bf16 --fp16 --seed
    --data-path --split --tokenizer-type --tokenizer-model --save --load --save-interval --eval-interval
    --eval-iters --log-interval --tensorboard-dir --lexicon --codeswitch-ratio --align-steps --align-lr
    --align-temperature --align-weight --align-layers --align-only --metrics-log --config""".split()
    assert not set(required) - set(cli_flags())


def test_yaml_then_cli_precedence(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("num_layers: 6\nhidden-size: 96\nlr: 0.002\nalign_steps: 7\nlexicon: x.lex\n")
    cfg, _ = parse_args(["--config", str(config), "--hidden-size", "128", "--disable-bias-linear"])
    assert cfg.model.num_layers == 6 and cfg.model.hidden_size == 128
    assert cfg.optim.lr == 0.002 and cfg.align.steps == 7 and cfg.data.lexicon == "x.lex"
    assert cfg.model.add_bias_linear is False


def test_unknown_yaml_key_is_an_error(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("num_layer: 6\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config)])
    assert "unknown key 'num_layer'" in capsys.readouterr().err


def test_booleans_can_be_turned_off_and_lists_parse():
    cfg, _ = parse_args(["--no-swiglu", "--data-path", "0.3", "a", "0.7", "b"])
    assert cfg.model.swiglu is False
    assert cfg.data.data_path == ("0.3", "a", "0.7", "b")
    assert cfg.data.blend() == (["a", "b"], [0.3, 0.7])


@pytest.mark.parametrize("argv,message", [
    (["--num-attention-heads", "6", "--hidden-size", "96", "--tensor-model-parallel-size", "4"], "divisible"),
    (["--num-layers", "3", "--pipeline-model-parallel-size", "2"], "--num-layers 3"),
    (["--align-steps", "10"], "--align-steps > 0 needs --lexicon"),
    (["--codeswitch-ratio", "0.1"], "needs --lexicon"),
    (["--window-size", "4", "0", "1"], "--window-size takes two integers"),
    (["--hidden-size", "100", "--num-attention-heads", "8"], "(or set --kv-channels)"),
    (["--use-rope-scaling", "--position-embedding-type", "learned_absolute"], "--use-rope-scaling needs"),
])
def test_invalid_combinations_name_the_flags(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_pre_pass_is_off_unless_asked_and_round_trips():
    cfg, _ = parse_args([])
    assert cfg.align.steps == 0
    assert RunConfig().align.steps == 0
    flat = cfg.flat()
    assert flat["align_steps"] == 0 and flat["num_layers"] == cfg.model.num_layers
    assert set(cfg.to_dict()) == {"model", "parallel", "optim", "data", "training", "align", "deepspeed"}


def test_half_precision_needs_cuda_at_run_time_but_dry_run_accepts_it(capsys, data_prefixes):
    import torch

    from megatron_prealign.config import check_runtime_support
    from megatron_prealign.pretrain import main

    data = ["--data-path", data_prefixes[0], "--tokenizer-model", str(ASSETS / "tiny_sp.model")]
    assert main(["--dry-run", "--bf16", *data]) == 0
    if not torch.cuda.is_available():
        cfg, _ = parse_args(["--bf16"])
        with pytest.raises(ValueError, match="need a CUDA device"):
            check_runtime_support(cfg)


def test_distributed_optimizer_checkpoints_need_fused_adam_here():
    from megatron.core.optimizer import distrib_optimizer

    from megatron_prealign.config import check_runtime_support

    cfg, _ = parse_args(["--use-distributed-optimizer", "--save", "ckpt"])
    if distrib_optimizer.HAVE_APEX_OR_TE:
        check_runtime_support(cfg)
    else:
        with pytest.raises(ValueError, match="TransformerEngine or NVIDIA Apex"):
            check_runtime_support(cfg)
    check_runtime_support(parse_args(["--use-distributed-optimizer"])[0])  # training alone is fine


def test_dry_run_prints_resolved_config(capsys, data_prefixes):
    from megatron_prealign.pretrain import main

    data = ["--data-path", data_prefixes[0], "--tokenizer-model", str(ASSETS / "tiny_sp.model")]
    assert main(["--dry-run", "--num-layers", "3", *data]) == 0
    assert "num_layers: 3" in capsys.readouterr().out


def test_architecture_flags_of_converted_families_survive_a_checkpoint_round_trip():
    """The flags Llama 3 / Qwen2 / Qwen3 / Mistral conversions set parse, and a ModelConfig read
    back from a checkpoint's JSON state (window_size as a list) equals the one that wrote it."""
    import dataclasses
    import json

    from megatron_prealign.model import ModelConfig
    from megatron_prealign.run import check_compatible

    cfg, _ = parse_args(["--hidden-size", "64", "--num-attention-heads", "4", "--kv-channels", "24",
                         "--add-qkv-bias", "--qk-layernorm", "--use-rope-scaling", "--rope-scaling-factor", "32",
                         "--window-size", "4095", "0"])
    model = cfg.model
    assert (model.kv_channels, model.head_dim, model.window_size) == (24, 24, (4095, 0))
    assert model.add_qkv_bias and model.qk_layernorm and model.use_rope_scaling and model.rope_scaling_factor == 32
    saved = json.loads(json.dumps(dataclasses.asdict(model)))
    assert saved["window_size"] == [4095, 0] and ModelConfig(**saved) == model
    check_compatible("ckpt", {"model": saved}, model, {}, override=False)
    # Parameters count the q/k/v biases and QK norms, with heads of 24 channels.
    plain = dataclasses.replace(model, add_qkv_bias=False, qk_layernorm=False)
    heads_width = 4 * 24 + 2 * 4 * 24
    assert model.num_parameters() - plain.num_parameters() == model.num_layers * (heads_width + 2 * 24)



def config_error(tmp_path, capsys, text: str | None, name: str = "run.yaml") -> str:
    """The one error line that `--config FILE` (with `text` in it, or missing) exits with."""
    config = tmp_path / name
    if text is not None:
        config.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        parse_args(["--config", str(config)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # no usage text around it
    assert f"error: {config}: " in err
    return err.strip().split(f"{config}: ", 1)[1]


@pytest.mark.parametrize("text,message", [
    # A quoted "no" is a non-empty string: read by truthiness it would switch the option on.
    ('swiglu: "no"\n', "swiglu must be true or false, got 'no' (a string; write true or false without quotes)"),
    ("swiglu: 0\n", "swiglu must be true or false, got 0 (an integer)"),
    # Unchecked, a fractional layer count reaches a divisibility check and `true` counts as 1.
    ("num_layers: 6.5\n", "num_layers must be an integer, got 6.5 (a float)"),
    ("num_layers: true\n", "num_layers must be an integer, got True (a boolean)"),
    ("num_layers: null\n", "num_layers must be an integer, got null"),
    ("num_query_groups: 2.5\n", "num_query_groups must be an integer or null, got 2.5 (a float)"),
    # Unchecked, a string temperature fails later with "'>' not supported between 'str' and 'int'".
    ('align_temperature: "warm"\n', "align_temperature must be a number, got 'warm' (a string)"),
    ('align_temperature: "0.2"\n', "align_temperature must be a number, got '0.2' (a string; write it without quotes)"),
    ("lr: {a: 1}\n", "lr must be a number, got {'a': 1} (a mapping)"),
    ("recompute-granularity: off\n", "recompute-granularity must be a string or null, got False (a boolean; YAML reads "
                                     "unquoted yes/no/on/off as booleans, so quote it)"),
    ("split: 0.9\n", "split must be a string, got 0.9 (a float)"),
    ("window_size: [4095, 0.5]\n", "window_size[1] must be an integer, got 0.5 (a float)"),
    ("data_path: [0.3, a, 0.7, [b]]\n", "data_path[3] must be a string, got ['b'] (a list)"),
    ("data_path: null\n", "data_path must be a list of strings, got null"),
])
def test_yaml_values_of_the_wrong_type_name_file_key_type_and_value(tmp_path, capsys, text, message):
    assert config_error(tmp_path, capsys, text) == message


def test_yaml_values_converted_where_nothing_is_lost(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("num_layers: 4.0\nlr: 1\nalign_temperature: 3e-2\ntrain_iters: 1e3\nswiglu: false\n"
                      "align_layers: 3\ndata_path: [0.3, a, 0.7, b]\nwindow_size: [4095, 0]\n"
                      "recompute_granularity: null\n", encoding="utf-8")
    cfg, _ = parse_args(["--config", str(config)])
    assert cfg.model.num_layers == 4 and type(cfg.model.num_layers) is int
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    assert cfg.align.temperature == 0.03 and cfg.training.train_iters == 1000  # YAML 1.2 numbers
    assert cfg.model.swiglu is False and cfg.align.layers == "3" and cfg.model.window_size == (4095, 0)
    assert cfg.data.data_path == ("0.3", "a", "0.7", "b") and cfg.data.blend() == (["a", "b"], [0.3, 0.7])
    # One prefix stands for a one-element list, not for a list of its characters.
    config.write_text("data_path: /data/corpus_text_document\n", encoding="utf-8")
    assert parse_args(["--config", str(config)])[0].data.data_path == ("/data/corpus_text_document",)


def test_yaml_syntax_errors_and_missing_files_are_one_line(tmp_path, capsys):
    assert config_error(tmp_path, capsys, "num_layers: [1\n") == (
        "not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'")
    assert config_error(tmp_path, capsys, "a: b: c\n") == (
        "not valid YAML at line 1, column 5: mapping values are not allowed here")
    assert config_error(tmp_path, capsys, None, name="absent.yaml") == "no such config file"
    assert config_error(tmp_path, capsys, "- 1\n- 2\n") == "expected a mapping of flag names to values"
    assert config_error(tmp_path, capsys, "num_layer: 6\n").startswith("unknown key 'num_layer' (did you mean num_layers")
    assert config_error(tmp_path, capsys, "num-experts: 8\n").startswith("num-experts is not supported: mixture-of-experts")
