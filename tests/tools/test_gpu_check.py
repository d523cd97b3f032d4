"""The GPU check's CPU rehearsal (bench/gpu/check.py) end to end, offline.

`prepare` builds a bundle from tests/assets (no wheels, no downloads), `measure --cpu-rehearsal`
runs every phase on a tiny fp32 model: the same code paths as on the GPU (SDPA and local
attention, code-switching off and on, selective recomputation, the pre-pass), minus the tests
phase (pytest inside pytest). Every phase must leave its figures and no error.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets"


def _check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_rehearsal_writes_every_phase(tmp_path):
    check = _check_module()
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    assert check.main(["prepare", "--bundle", str(bundle), "--tokenizer-model", str(ASSETS / "tiny_sp.model"),
                       "--dictionary", str(ASSETS / "dict_en_de.muse"), "--corpus", str(ASSETS / "tiny_corpus.txt"),
                       "--no-wheels"]) == 0
    assert not (bundle / "wheels").exists()
    assert check.main(["measure", "--bundle", str(bundle), "--out", str(out), "--cpu-rehearsal", "--skip-tests",
                       "--budget-seconds", "600"]) == 0

    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    errors = {name: value["error"] for name, value in results.items() if isinstance(value, dict) and "error" in value}
    assert not errors, errors
    assert results["rehearsal"] is True and "tests" not in results
    assert results["environment"]["megatron_core"].startswith("0.16")
    assert results["peak"]["tflops"] > 0
    assert all("ms" in results["attention"][name] for name in ("sdpa_gqa_default", "local_unfused"))

    train = results["train"]
    assert set(train) == {*check.REHEARSAL_ARMS, "model"}
    for name in check.REHEARSAL_ARMS:
        arm = train[name]
        assert arm["rc"] == 0, (name, (out / "logs.txt").read_text()[-3000:])
        assert arm["tokens_per_sec"] > 0 and arm["peak_rss_gib"] > 0 and arm["planned_peak_gib"] > 0
        assert name in report
    assert train["sdpa_cs_on"]["switch_rate"] > 0 and train["sdpa_cs_off"]["switch_rate"] == 0
    assert train["model"]["vocab"] == 400

    prepass = results["prepass"]
    assert prepass["rc"] == 0 and prepass["steps"] == 6 and prepass["steps_per_sec"] > 0
    derived = results["derived"]
    for key in ("codeswitch_slowdown_pct", "sdpa_speedup_over_local", "prepass_share_pct"):
        assert key in derived
    assert set(results["phase_seconds"]) == {"environment", "peak", "attention", "prepass", "train"}
