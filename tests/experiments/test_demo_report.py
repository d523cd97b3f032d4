"""Tier 1: pure functions. The demo's budget rule, data mix, trainer configs, CLI parsing, and the
report (aggregation over seeds, comparisons, plots, report.md) from per-run result dicts."""
from __future__ import annotations

import numpy as np
import pytest

from prealign_experiments.english_clone.__main__ import FULL_ARMS, FULL_SEEDS, parse_config
from prealign_experiments.english_clone.demo.config import (
    ARMS,
    DemoConfig,
    RunSpec,
    blend_weights,
    exposures,
    prepass_tokens,
)
from prealign_experiments.english_clone.demo.report import aggregate, compare, metric_values, write_plots, write_report

TOKENS = {"en_train": 900_000, "clone_train": 100_000, "knowledge_en": 1_000, "transfer_en": 50_000,
          "en_eval": 10_000, "clone_eval": 10_000}


def test_blend_weights_and_exposures():
    cfg = DemoConfig(phase2_iters=100, knowledge_share=0.4, transfer_share=0.2)
    weights = blend_weights(cfg, TOKENS)
    assert set(weights["phase1"]) == {"en_train", "clone_train"}
    for phase in ("phase1", "phase2"):
        w = weights[phase]
        assert sum(w.values()) == pytest.approx(1.0)
        assert w["clone_train"] / (w["clone_train"] + w["en_train"]) == pytest.approx(0.1)
    assert weights["phase2"]["knowledge_en"] == 0.4 and weights["phase2"]["transfer_en"] == 0.2
    seen = exposures(cfg, TOKENS)
    assert seen["knowledge_document"] == pytest.approx(0.4 * 100 * 16 * 128 / 1000)
    assert seen["transfer_epochs"] == pytest.approx(0.2 * 100 * 16 * 128 / 50_000)
    with pytest.raises(ValueError, match="--knowledge-share"):
        DemoConfig(knowledge_share=0.7, transfer_share=0.3)


def test_prepass_tokens_and_config_validation():
    cfg = DemoConfig(align_steps=200, align_pairs=256)
    assert prepass_tokens(cfg, 1.25) == 200 * 512 * 1.25
    with pytest.raises(ValueError, match="--arms"):
        DemoConfig(arms=("joint", "nope"))
    with pytest.raises(ValueError, match="--align-steps"):
        DemoConfig(arms=("prealign",), align_steps=0)
    with pytest.raises(ValueError, match="multiple"):
        DemoConfig(micro_batch_size=3, global_batch_size=16)


def test_cli_full_and_overrides():
    full = parse_config(["--full"])
    assert full.arms == FULL_ARMS and full.seeds == FULL_SEEDS and full.out == "runs/demo-full"
    cfg = parse_config(["--arms", "joint", "--seeds", "1", "2", "--train-iters", "7", "--setting-args",
                        "--vocab-size", "300"])
    assert cfg.arms == ("joint",) and cfg.seeds == (1, 2) and cfg.train_iters == 7
    assert cfg.setting_args == ("--vocab-size", "300")
    assert parse_config([]) == DemoConfig()


class _Setting:
    vocab_size = 100
    tokenizer_model = "tok.model"
    lexicon = "d.lex"

    def path(self, rel):
        return f"/s/{rel}"

    def prefix(self, name):
        return f"/s/data/{name}_text_document"


def test_trainer_configs_per_arm_and_phase():
    from megatron_prealign.config import RunConfig
    from prealign_experiments.english_clone.demo.runner import trainer_config

    cfg = DemoConfig(arms=tuple(ARMS))
    weights = blend_weights(cfg, TOKENS)
    for name, arm in ARMS.items():
        run = RunSpec(arm=arm, seed=5, train_iters=650, directory="/r")
        one, two = (trainer_config(cfg, run, _Setting(), weights, phase) for phase in (1, 2))
        assert one["train_iters"] == 650 and one["seed"] == 5
        assert two["train_iters"] == cfg.phase2_iters
        assert ("align_steps" in one) == arm.prepass and "align_steps" not in two
        for values in (one, two):
            assert ("codeswitch_ratio" in values) == arm.codeswitch
            assert ("lexicon" in values) == (arm.prepass or arm.codeswitch)
            RunConfig.from_flat(values)  # flat keys the trainer accepts, valid together
        assert one["save"] == "/r/ckpt" and "pretrained_checkpoint" not in one
        assert two["pretrained_checkpoint"] == "/r/ckpt"
        assert two["save"] == "/r/ckpt_phase2"
        for values, phase in ((one, "phase1"), (two, "phase2")):
            data = values["data_path"]
            assert data[1::2] == [f"/s/data/{n}_text_document" for n in weights[phase]]
            assert [float(w) for w in data[0::2]] == pytest.approx(list(weights[phase].values()), abs=1e-6)


def _result(arm, seed, clone_ppl, knowledge_clone):
    slots = {"embedding": 0.1, "layer_1": 0.2, "output_embedding": 0.3}
    lang = lambda ppl: {"loss": float(np.log(ppl)), "ppl": ppl, "tokens": 4096}
    acc = lambda a, chance: {"accuracy": a, "chance": chance, "n": 60, "margin": 0.0}
    alignment = {"dictionary": slots, "heldout": {k: v / 2 for k, v in slots.items()},
                 "names": {k: v / 4 for k, v in slots.items()}}
    return {
        "arm": arm, "seed": seed, "train_iters": 10, "tokens": 20480, "train_seconds": 60.0,
        "pretrained": {"perplexity": {"english": lang(100.0), "clone": lang(clone_ppl)}, "alignment": alignment},
        "final": {"perplexity": {"english": lang(110.0), "clone": lang(clone_ppl + 50)},
                  "knowledge": {"english": acc(0.5, 1 / 6), "clone": acc(knowledge_clone, 1 / 6),
                                "clone_to_english": acc(0.25, 1 / 6)},
                  "transfer": {"english": acc(0.6, 1 / 12), "clone": acc(0.3, 1 / 12)},
                  "alignment": alignment},
        "curve": [{"phase": 1, "iteration": 5, "tokens": 10240, "english": 200.0, "clone": 400.0},
                  {"phase": 1, "iteration": 10, "tokens": 20480, "english": 100.0, "clone": clone_ppl},
                  {"phase": 2, "iteration": 4, "tokens": 28672, "english": 110.0, "clone": clone_ppl + 50}],
        "metrics": {},
    }


def test_aggregate_and_compare():
    results = [_result("joint", s, c, k) for s, c, k in ((1, 300.0, 0.20), (2, 320.0, 0.22))]
    results += [_result("prealign", s, c, k) for s, c, k in ((1, 250.0, 0.30), (2, 310.0, 0.21))]
    stats = aggregate(results)
    assert stats["joint"]["clone_ppl"]["mean"] == pytest.approx(310.0)
    assert stats["joint"]["clone_ppl"]["std"] == pytest.approx(np.std([300, 320], ddof=1))
    assert stats["prealign"]["gap_heldout"]["mean"] == pytest.approx(0.1)
    assert stats["prealign"]["gap_names"]["mean"] == pytest.approx(0.05)
    comp = compare(stats, "prealign")
    assert comp["clone_ppl"]["better"] and comp["clone_ppl"]["relative"] == pytest.approx(280 / 310 - 1)
    assert not comp["clone_ppl"]["beyond_seed_range"]  # 310 (prealign max) is inside joint's [300, 320]
    assert comp["knowledge_clone"]["better"] and not comp["knowledge_clone"]["beyond_seed_range"]
    assert metric_values(results[0])["knowledge_english"] == 0.5


def test_report_and_plots(tmp_path):
    results = [_result("joint", 1, 300.0, 0.2), _result("prealign", 1, 250.0, 0.3)]
    stats = aggregate(results)
    plots = write_plots(results, stats, str(tmp_path))
    for name in plots.values():
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    setting_stats = {"knowledge": {"facts": 60, "entities": 30, "chance": 1 / 6},
                     "transfer": {"test_examples": 108, "chance": 1 / 12}, "corpus_documents": 233,
                     "tokens": TOKENS, "dictionary_words": 1530, "heldout_words": 170}
    cfg = DemoConfig()
    budget = {"weights": blend_weights(cfg, TOKENS), "tokens_per_arm": 1, "prepass_tokens": 2, "mean_word_tokens": 1.05,
              "extra_iterations_without_prepass": 3, "tokens_per_iteration": 2048, "exposures": exposures(cfg, TOKENS)}
    summary = write_report(str(tmp_path / "report.md"), results=results, setting_stats=setting_stats, budget=budget,
                           config={**cfg.to_dict(), "setting_vocab_size": 4000}, plots=plots, seconds=90,
                           command="python -m prealign_experiments.english_clone")
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| PreAlign | 250.0 | 100.0 | 30.0% | 50.0% | 25.0% |" in text
    assert "clone perplexity -16.7%" in text and "+10.0 points" in text
    assert "One seed per arm" in text
    assert summary["comparisons"]["prealign"]["clone_ppl"]["better"]


def test_metrics_tail_returns_each_complete_record_once(tmp_path):
    from prealign_experiments.english_clone.demo.runner import _MetricsTail

    path = tmp_path / "metrics.jsonl"
    tail = _MetricsTail(path)
    assert tail.new_records() == []  # not written yet
    path.write_text('{"align_step": 1}\n{"iteration": 10, "lm_')
    assert tail.new_records() == [{"align_step": 1}]
    with open(path, "a") as f:
        f.write('loss": 5.0}\n')
    assert tail.new_records() == [{"iteration": 10, "lm_loss": 5.0}]
    assert tail.new_records() == []


def test_child_process_writes_to_its_log_and_a_failure_quotes_it(tmp_path):
    import os
    import sys

    from prealign_experiments.english_clone.demo.runner import _run_child

    log = tmp_path / "logs" / "child.log"
    # The child sees the environment it was given; the parent's environment is left as it was.
    _run_child("probe", exec, ("import os; print('probe=' + os.environ['PREALIGN_CHILD_PROBE'])",), log,
               env={"PREALIGN_CHILD_PROBE": "42"})
    assert "PREALIGN_CHILD_PROBE" not in os.environ
    assert log.read_text().splitlines() == ["# probe", "probe=42"]
    with pytest.raises(RuntimeError, match=r"failing failed with exit code 3 \(log: .*child.log\):\n# probe\nprobe=42"):
        _run_child("failing", sys.exit, (3,), log)
