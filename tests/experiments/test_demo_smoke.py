"""Tier 2 end to end (subprocesses, under a minute on 2 cores): `python -m prealign_experiments.english_clone`
with a miniature budget on a small synthetic corpus. Every real stage runs: the setting
(build_lexicon + preprocess, in a child process), two trainer processes per arm (pretraining, then
the English-only phase from its weights) for joint training and for PreAlign (pre-pass and
input-only code-switching), evaluation of the checkpoints, the report with its plots; then a
second invocation reuses everything.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.experiments.test_english_clone_setting import SMALL_SETTING_ARGS, write_synthetic_corpus

REPO = Path(__file__).resolve().parents[2]
MINIATURE = ["--arms", "joint", "prealign", "--seeds", "7", "--num-layers", "2", "--hidden-size", "32",
             "--ffn-hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "32",
             "--micro-batch-size", "4", "--global-batch-size", "4", "--train-iters", "4", "--phase2-iters", "2",
             "--lr-warmup-iters", "1", "--align-steps", "2", "--align-pairs", "8", "--curve-points", "1",
             "--curve-tokens", "128", "--eval-tokens", "256", "--threads", "1"]


def _run_demo(out: Path, corpus: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "prealign_experiments.english_clone", "--out", str(out), *MINIATURE,
           "--setting-args", "--corpus", str(corpus), *SMALL_SETTING_ARGS]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "corpus.jsonl.gz")
    out = tmp_path / "demo"
    proc = _run_demo(out, corpus)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "train joint-s7" in proc.stderr and "train prealign-s7" in proc.stderr  # progress display

    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| joint training |" in report and "| PreAlign |" in report
    assert "PreAlign vs joint training" in report and "One seed per arm" in report
    for png in ("loss_curves.png", "alignment_gap.png", "accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report

    results = json.loads((out / "results.json").read_text())
    runs = {r["arm"]: r for r in results["runs"]}
    assert set(runs) == {"joint", "prealign"}
    budget = results["budget"]
    # Identical token budgets: the pre-pass tokens are given to joint training as extra iterations.
    assert runs["joint"]["train_iters"] == 4 + budget["extra_iterations_without_prepass"]
    assert runs["prealign"]["train_iters"] == 4
    for run in runs.values():
        assert run["pretrained"]["perplexity"]["clone"]["tokens"] == 256
        final = run["final"]
        assert final["perplexity"]["english"]["tokens"] == final["perplexity"]["clone"]["tokens"] == 256
        assert final["knowledge"]["clone"]["n"] == 12 and final["transfer"]["clone"]["n"] == 108
        assert run["metrics"]["phase1"][-1]["iteration"] == run["train_iters"]
        assert run["metrics"]["phase2"][-1]["iteration"] == 2
        directory = out / "runs" / f"{run['arm']}-s7"
        kept = sorted(p.name for p in (directory / "ckpt").iterdir() if p.name.startswith("iter_"))
        assert kept == [f"iter_{run['train_iters']:07d}"]  # intermediate checkpoints removed
        assert (directory / "ckpt_phase2" / "iter_0000002").is_dir()
        assert [p["phase"] for p in run["curve"]][-1] == 2
    # The pre-pass arm's curve starts after its pre-pass tokens (its iteration-0 checkpoint).
    first = runs["prealign"]["curve"][0]
    assert (first["iteration"], first["tokens"]) == (0, budget["prepass_tokens"])
    for phase in ("phase1", "phase2"):
        # Pretraining records (the pre-pass writes `align_step` records to the same log).
        training = {arm: [m for m in runs[arm]["metrics"][phase] if "iteration" in m] for arm in runs}
        assert max(m["switch_rate"] for m in training["prealign"]) > 0
        assert all(m["switch_rate"] == 0 for m in training["joint"])
    assert runs["prealign"]["metrics"]["phase1"][0]["align_step"] == 1  # the pre-pass, every step

    start = time.perf_counter()
    again = _run_demo(out, corpus)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing the finished run") == 2
    assert time.perf_counter() - start < 60
