"""Tier 2 (single-process megatron-core): the run planner against built models.

Parameter counts are compared with megatron-core's GPTModel (built on the meta device, so the
1.2B config costs no memory); activation terms with the storages autograd saves in a real
forward on the CPU; the tool's table and JSON through `tools/plan_run.main`.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from megatron_prealign.config import parse_args
from megatron_prealign.model import ModelConfig
from megatron_prealign.plan import (ActivationShape, LaunchConfig, head_terms, layer_terms, plan_run,
                                    stage_parameters, total_parameters)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import plan_run as plan_tool  # noqa: E402

NO_DATA = ["--codeswitch-ratio", "0", "--align-steps", "0"]


@pytest.fixture(scope="module")
def world():
    from megatron_prealign.distributed import single_process_world

    with single_process_world(seed=1) as pgs:
        yield pgs


def _built_parameters(model_cfg: ModelConfig, tp_for_padding: int = 1) -> int:
    from megatron.core.models.gpt import GPTModel

    from megatron_prealign.distributed import ParallelConfig
    from megatron_prealign.model.builder import transformer_config
    from megatron_prealign.model.specs import get_prealign_block_spec

    with torch.device("meta"):
        config = transformer_config(model_cfg, ParallelConfig())
        model = GPTModel(config=config, transformer_layer_spec=get_prealign_block_spec(model_cfg, config, pp_rank=0),
                         vocab_size=model_cfg.padded_vocab_size(tp_for_padding),
                         max_sequence_length=model_cfg.max_position_embeddings or model_cfg.seq_length,
                         share_embeddings_and_output_weights=not model_cfg.untie_embeddings_and_output_weights,
                         position_embedding_type=model_cfg.position_embedding_type)
    return sum(p.numel() for p in model.parameters())


def _config_model(path: str, vocab: int) -> ModelConfig:
    cfg, _ = parse_args(["--config", path, *NO_DATA, "--no-bf16"])
    return dataclasses.replace(cfg.model, vocab_size=vocab)


DEMO = ModelConfig(num_layers=4, hidden_size=160, ffn_hidden_size=640, num_attention_heads=4, seq_length=128,
                   vocab_size=8000)


@pytest.mark.parametrize("name, model_cfg", [
    ("tiny (debug_cpu.yaml, tiny tokenizer)", lambda: _config_model("examples/configs/debug_cpu.yaml", 400)),
    ("demo (English-Clone)", lambda: DEMO),
    ("1.2B (gpt_1b.yaml, 32k tokenizer)", lambda: _config_model("examples/configs/gpt_1b.yaml", 32000)),
    ("LayerNorm, biases, learned positions, tied", lambda: dataclasses.replace(
        DEMO, normalization="LayerNorm", add_bias_linear=True, position_embedding_type="learned_absolute",
        untie_embeddings_and_output_weights=False, swiglu=False, vocab_size=1000)),
])
def test_parameter_count_equals_the_built_model(world, name, model_cfg):
    model_cfg = model_cfg()
    assert total_parameters(model_cfg) == _built_parameters(model_cfg)
    assert stage_parameters(model_cfg, 1, 1, 0).total == _built_parameters(model_cfg)
    # The vocabulary is padded for the TP degree; the distinct count follows it.
    assert total_parameters(model_cfg, tp=2) == _built_parameters(model_cfg, tp_for_padding=2)


def test_the_1b_config_has_the_published_count():
    assert total_parameters(_config_model(str(REPO / "examples/configs/gpt_1b.yaml"), 32000)) == 1_263_634_432


def _saved_bytes(model, tokens, positions) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens, positions, None, labels=tokens)
    return sum(storages.values())


BASE = dict(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=176, seq_length=32, vocab_size=256)


@pytest.mark.parametrize("overrides", [
    {}, {"num_query_groups": 2}, {"num_query_groups": 2, "attention_backend": "sdpa"},
    {"attention_backend": "sdpa"}, {"num_query_groups": 2, "recompute_granularity": "selective"},
    {"attention_backend": "sdpa", "recompute_granularity": "selective"},
    {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
    {"recompute_granularity": "full", "recompute_method": "block", "recompute_num_layers": 1},
    {"normalization": "LayerNorm", "swiglu": False, "position_embedding_type": "learned_absolute"},
    {"num_query_groups": 2, "position_embedding_type": "learned_absolute"},
    {"add_bias_linear": True}, {"hidden_dropout": 0.1, "attention_dropout": 0.1},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_activation_terms_equal_what_autograd_saves(world, overrides):
    from megatron_prealign.distributed import ParallelConfig
    from megatron_prealign.model import build_model
    from megatron_prealign.plan import resolve_attention

    cfg = ModelConfig(**{**BASE, **overrides})
    model = build_model(cfg, ParallelConfig(), world)
    b, s = 3, cfg.seq_length
    tokens = torch.randint(0, cfg.vocab_size, (b, s), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(s).repeat(b, 1)  # as the data loader delivers them: [b, s]
    measured = _saved_bytes(model, tokens, positions)

    shape = ActivationShape(seq=s, micro_batch=b, tp=1, sequence_parallel=False, act_bytes=4, device="cpu",
                            attention=resolve_attention(cfg, "cpu"))
    full = cfg.recompute_granularity == "full"
    if full:
        recomputed = cfg.num_layers if cfg.recompute_method == "uniform" else cfg.recompute_num_layers
        layers = recomputed * 4 * s * b * cfg.hidden_size + (cfg.num_layers - recomputed) * sum(
            layer_terms(cfg, shape, None).values())
    else:
        layers = cfg.num_layers * sum(layer_terms(cfg, shape, cfg.recompute_granularity).values())
    predicted = layers + sum(head_terms(cfg, shape, cfg.padded_vocab_size(1), True, True, full).values())
    assert predicted == measured


def test_plan_matches_the_measured_gpu_peaks():
    """bench/GPU.md's H200 peaks of the ~1.26B model (bf16, one GPU, distributed optimizer)."""
    measured = {("sdpa", 4, None): 44.15, ("local", 4, None): 80.62, ("local", 4, "selective"): 46.53,
                ("sdpa", 4, "selective"): 44.14, ("sdpa", 8, None): 67.0, ("sdpa", 4, "full"): 25.95}
    for (backend, micro, recompute), gib in measured.items():
        flags = ["--config", str(REPO / "examples/configs/gpt_1b.yaml"), *NO_DATA, "--vocab-size", "32000",
                 "--global-batch-size", "16", "--micro-batch-size", str(micro), "--attention-backend", backend]
        if recompute == "full":
            flags += ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"]
        elif recompute:
            flags += ["--recompute-granularity", recompute]
        cfg, _ = parse_args(flags)
        peak = plan_run(cfg, LaunchConfig(world_size=1, device="cuda")).stages[0].peak / 2**30
        assert abs(peak / gib - 1) < 0.03, (backend, micro, recompute, peak, gib)


def test_memory_terms_follow_the_layout():
    cfg, _ = parse_args(["--config", str(REPO / "examples/configs/gpt_1b.yaml"), *NO_DATA, "--vocab-size", "32000",
                         "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"])
    plan = plan_run(cfg, LaunchConfig(world_size=8, device="cuda"))
    first, last = plan.stages
    assert plan.layout["data_parallel"] == 2
    assert first.in_flight == 2 and last.in_flight == 1  # 1F1B
    assert first.parameters + last.parameters == pytest.approx(plan.parameters_total / 2, rel=1e-4)
    assert first.optimizer == pytest.approx(12 * first.parameters / 2, rel=1e-4)  # sharded over DP=2
    sp = {(a["sequence_parallel"], a["recompute"]): a["peak_bytes"] for a in plan.alternatives
          if a["distributed_optimizer"]}
    assert sp[(True, "none")] < sp[(False, "none")] and sp[(False, "full")] < sp[(False, "selective")]
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, optimizer="sgd"))  # one moment, not two
    assert plan_run(cfg, LaunchConfig(world_size=8, device="cuda")).stages[0].optimizer == \
        pytest.approx(8 * first.parameters / 2, rel=1e-4)


def test_tool_prints_the_table_and_json(capsys, tmp_path):
    argv = ["--config", str(REPO / "examples/configs/gpt_1b.yaml"), "--nproc-per-node", "4", "--nnodes", "2",
            "--tokenizer-model", str(REPO / "tests/assets/tiny_sp.model")]
    assert plan_tool.main(argv) == 0
    table = capsys.readouterr().out
    assert "8 x GPU = TP 1 x PP 1 x DP 8" in table and "planned without --lexicon" in table
    assert plan_tool.main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"]["vocab_size"] == 400 and plan["model"]["padded_vocab_size"] == 512
    assert plan["prepass"]["steps"] == 5000 and 0 < plan["prepass"]["share_of_run_flops_pct"] < 1
    assert plan["stages"][0]["peak"] > plan["stages"][0]["static"]


def test_tool_measures_word_lengths_from_the_lexicon(capsys, data_lexicon_path):
    argv = ["--config", str(REPO / "examples/configs/debug_cpu.yaml"), "--tokenizer-model",
            str(REPO / "tests/assets/tiny_sp.model"), "--lexicon", data_lexicon_path, "--align-max-word-tokens", "8",
            "--device", "cpu", "--json"]
    assert plan_tool.main(argv) == 0
    prepass = json.loads(capsys.readouterr().out)["prepass"]
    assert prepass["word_length_source"].startswith("the lexicon")
    assert 1 <= prepass["mean_word_tokens"] <= prepass["padded_word_tokens"] <= 8


def test_tool_rejects_a_layout_the_launch_cannot_hold(capsys):
    with pytest.raises(SystemExit):
        plan_tool.main(["--config", str(REPO / "examples/configs/gpt_1b.yaml"), "--world-size", "3",
                        "--tensor-model-parallel-size", "2", "--vocab-size", "32000"])
    assert "--world-size 3 must be divisible" in capsys.readouterr().err


def test_cpu_runs_return_freed_tensors_to_the_os(world):
    """After init_distributed on CPU a freed activation-sized tensor leaves the resident size
    (glibc would otherwise keep it on its heap once its mmap threshold has risen)."""
    import platform

    from megatron_prealign.plan import runtime_bytes
    from megatron_prealign.platform import return_freed_memory_to_os

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt only")
    assert return_freed_memory_to_os()
    mapped = torch.ones(64 * 2**20 // 4)
    del mapped  # a mapped block freed: glibc's dynamic rule would now raise its threshold to 64 MiB
    before = runtime_bytes()
    block = torch.ones(8 * 2**20 // 4)  # 8 MiB, touched
    del block
    assert runtime_bytes() - before < 2**20
