"""Tier 3 (a real one-process pretraining job, ~15 s): `python -m megatron_prealign.evaluate` on
the checkpoint a run wrote reads the run's own settings back from it.

The held-out split of the lexicon must be the run's (its --seed, --align-heldout-fraction): the
held-out gap evaluate measures equals, to the digit, the one the run logged at its last
evaluation (alignment_gap.json beside the checkpoints); the documents --heldout-split valid
measures are the run's validation part (--split) and are reported as held out; the whole prefix
is not.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._launch import run

REPO = Path(__file__).resolve().parents[2]
MODEL = str(REPO / "tests" / "assets" / "tiny_sp.model")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_prefixes, data_lexicon_path):
    root = tmp_path_factory.mktemp("evaluate_after_pretraining")
    args = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "32",
            "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "4", "--lr", "1e-3",
            "--seed", "11", "--data-path", data_prefixes[0], "--split", "80,15,5",
            "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", MODEL, "--lexicon", data_lexicon_path,
            "--codeswitch-ratio", "0.3", "--align-steps", "2", "--align-pairs-per-batch", "4",
            "--align-heldout-fraction", "0.3", "--eval-interval", "4", "--eval-iters", "1",
            "--save", str(root / "ckpt"), "--save-interval", "4", "--num-workers", "0"]
    run(1, args, root / "train.log")
    return root


def test_evaluate_reads_the_runs_split_back(trained, data_prefixes, data_lexicon_path, capsys):
    from megatron_prealign.evaluate.__main__ import main

    out = trained / "eval.json"
    assert main(["--load", str(trained / "ckpt"), "--data-path", f"a={data_prefixes[0]}", "--heldout-split", "valid",
                 "--lexicon", data_lexicon_path, "--max-tokens", "500", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    logged = json.loads((trained / "ckpt" / "alignment_gap.json").read_text())["iteration 4"]
    gaps = results["alignment_gap"]
    assert gaps["split"]["seed"] == 11 and gaps["split"]["heldout_fraction"] == 0.3
    assert gaps["split"]["source"] == "the checkpoint's run config" and gaps["lexicon_is_the_runs"] is True
    assert gaps["heldout"]["gap"] == pytest.approx(logged, abs=1e-6)
    assert results["perplexity"]["a"]["heldout"] == "yes"
    capsys.readouterr()
    assert main(["--load", str(trained / "ckpt"), "--data-path", data_prefixes[0], "--max-tokens", "200"]) == 0
    assert "held-out: no" in capsys.readouterr().out
