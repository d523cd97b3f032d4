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

