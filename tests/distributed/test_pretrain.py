"""Tier 3 (multi-process gloo, real launcher): the trainer end to end.

Runs `python -m megatron_prealign.pretrain` under torchrun on the tiny tokenizer/lexicon/corpus
fixtures with code-switching on, and checks:
  * from one saved initialization (--pretrained-checkpoint), TP=2 and PP=2 losses match TP=1
    over 20 iterations (fp32, CPU; rtol below) on the same data;
  * a TP=2 run SIGKILLed after a checkpoint and resumed with --load reproduces the
    uninterrupted run's lm_loss and data checksum (same code-switched samples) bit for bit;
  * the TP=2 iteration-10 checkpoint resumes at TP=1 and at PP=2;
  * SIGTERM makes a run finish its step, save and exit 0.
"""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from tests._launch import eval_records as _eval_records
from tests._launch import launch as _launch
from tests._launch import run as _run
from tests._launch import signal_job
from tests._launch import train_records as _train_records

ITERS = 20
LAYOUT_RTOL = 2e-4  # Adam over 20 steps amplifies reduction-order differences of ~1e-7


def _args(data_prefixes, lexicon, tokenizer_model, workdir: Path, name: str, **extra) -> list[str]:
    a, b = data_prefixes
    args = [
        "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4", "--num-query-groups", "2",
        "--ffn-hidden-size", "64", "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "8",
        "--train-iters", str(ITERS), "--lr", "1e-3", "--min-lr", "1e-4", "--lr-warmup-iters", "2",
        "--clip-grad", "1.0", "--seed", "7", "--data-path", "0.7", a, "0.3", b, "--split", "90,10,0",
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", tokenizer_model,
        "--lexicon", lexicon, "--codeswitch-ratio", "0.3", "--log-interval", "1", "--eval-interval", "10",
        "--eval-iters", "1", "--num-workers", "1", "--align-heldout-fraction", "0.3", "--metrics-log", str(workdir / f"{name}.jsonl"),
    ]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_prefixes, data_lexicon_path):
    from tests.conftest import ASSETS

    tok = str(ASSETS / "tiny_sp.model")
    work = tmp_path_factory.mktemp("pretrain")

    def args(name, **extra):
        return _args(data_prefixes, data_lexicon_path, tok, work, name, **extra)

    # Every layout starts from the same weights: megatron-core seeds each pipeline stage's
    # initialization differently, so PP=2 from scratch would start elsewhere.
    _run(1, args("init", train_iters=0, save=work / "init"), work / "init.log")
    init = {"pretrained_checkpoint": work / "init"}
    _run(1, args("tp1", **init), work / "tp1.log")
    _run(2, args("tp2", tensor_model_parallel_size=2, save=work / "ckpt_tp2", save_interval=10, **init),
         work / "tp2.log")
    _run(2, args("pp2", pipeline_model_parallel_size=2, **init), work / "pp2.log")

    # SIGKILL a TP=2 run mid-way: freeze it (SIGSTOP) as soon as its first checkpoint exists, so
    # it cannot run on while the test reacts, then kill it; resume from that checkpoint.
    killed = _launch(2, args("killed", tensor_model_parallel_size=2, save=work / "ckpt_killed",
                             save_interval=5, **init), work / "killed.log")
    tracker = work / "ckpt_killed" / "latest_checkpointed_iteration.txt"
    deadline = time.time() + 300
    while not tracker.exists():
        if killed.poll() is not None or time.time() > deadline:
            raise AssertionError(f"no checkpoint before the run ended:\n{(work / 'killed.log').read_text()[-4000:]}")
        time.sleep(0.05)
    signal_job(killed, signal.SIGSTOP)
    signal_job(killed, signal.SIGKILL)
    killed.wait()
    saved = int(tracker.read_text())
    assert saved < ITERS, "the run finished before it could be killed"
    _run(2, args("resumed", tensor_model_parallel_size=2, save=work / "ckpt_killed", load=work / "ckpt_killed",
                 save_interval=5), work / "resumed.log")

    # The TP=2 checkpoint of iteration 10, resumed at other layouts.
    for layout, extra in (("tp2_to_tp1", {}), ("tp2_to_pp2", {"pipeline_model_parallel_size": 2})):
        root = work / f"ckpt_{layout}"
        root.mkdir()
        shutil.copytree(work / "ckpt_tp2" / "iter_0000010", root / "iter_0000010")
        (root / "latest_checkpointed_iteration.txt").write_text("10")
        _run(2 if extra else 1, args(layout, load=root, **extra), work / f"{layout}.log")
    records = {name: _train_records(work / f"{name}.jsonl")
               for name in ("tp1", "tp2", "pp2", "killed", "resumed", "tp2_to_tp1", "tp2_to_pp2")}
    records["tp1_eval"] = _eval_records(work / "tp1.jsonl")
    records["pp2_eval"] = _eval_records(work / "pp2.jsonl")
    records["prefixes"] = data_prefixes
    return records


def test_training_learns_and_code_switches(runs):
    """Also: every evaluation logs the alignment gap per layer on held-out and dictionary words."""
    tp1 = runs["tp1"]
    assert sorted(tp1) == list(range(1, ITERS + 1))
    assert tp1[ITERS]["lm_loss"] < tp1[1]["lm_loss"] - 0.3
    rates = [r["switch_rate"] for r in tp1.values()]
    assert 0.15 < sum(rates) / len(rates) < 0.45, rates  # --codeswitch-ratio 0.3
    for key in ("tp1_eval", "pp2_eval"):  # PP: each stage measures its own layers
        evals = runs[key]
        assert [e["iteration"] for e in evals] == [10, 20]
        gaps = evals[-1]["alignment_gap"]
        assert set(gaps) == {"embedding", "layer_1", "layer_2", "layer_3", "layer_4", "output_embedding"}
        assert all(-1.0 <= g <= 1.0 for g in gaps.values())
        assert set(evals[-1]["alignment_gap_dictionary"]) == set(gaps)  # the words the pre-pass trains on
        assert set(evals[-1]["eval_loss"]) == {Path(p).name for p in runs["prefixes"]}


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
def test_parallel_layouts_match_tp1(runs, layout):
    for it in range(1, ITERS + 1):
        assert runs[layout][it]["data_checksum"] == runs["tp1"][it]["data_checksum"], it
        assert runs[layout][it]["lm_loss"] == pytest.approx(runs["tp1"][it]["lm_loss"], rel=LAYOUT_RTOL), it


def test_sigkill_then_resume_is_exact(runs):
    uninterrupted, resumed = runs["tp2"], runs["resumed"]
    first = min(resumed)
    assert first in (6, 11, 16), first  # resumed right after a --save-interval 5 checkpoint
    for it in range(first, ITERS + 1):
        assert resumed[it]["lm_loss"] == uninterrupted[it]["lm_loss"], it
        assert resumed[it]["data_checksum"] == uninterrupted[it]["data_checksum"], it
        assert resumed[it]["switch_rate"] == uninterrupted[it]["switch_rate"], it


@pytest.mark.parametrize("layout", ["tp2_to_tp1", "tp2_to_pp2"])
def test_tp2_checkpoint_resumes_at_other_layouts(runs, layout):
    assert min(runs[layout]) == 11
    for it in range(11, ITERS + 1):
        assert runs[layout][it]["data_checksum"] == runs["tp2"][it]["data_checksum"], it
        assert runs[layout][it]["lm_loss"] == pytest.approx(runs["tp2"][it]["lm_loss"], rel=LAYOUT_RTOL), it


def test_sigterm_saves_and_exits_zero(tmp_path, data_prefixes, data_lexicon_path):
    from tests.conftest import ASSETS

    args = _args(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model"), tmp_path, "term",
                 save=tmp_path / "ckpt", train_iters=2000)
    proc = _launch(1, args, tmp_path / "term.log")
    metrics = tmp_path / "term.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and _train_records(metrics)):
        assert proc.poll() is None, (tmp_path / "term.log").read_text()[-4000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, (tmp_path / "term.log").read_text()[-4000:]
    saved = int((tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text())
    assert saved == max(_train_records(metrics))


def test_align_only_checkpoint_resumes_without_repeating_the_pre_pass(tmp_path, data_prefixes, data_lexicon_path):
    """`--align-only` saves before any pretraining step; `--load` of it must continue with
    pretraining (weights aligned, pre-pass marked done), as align_then_pretrain.sh relies on."""
    from tests.conftest import ASSETS

    common = dict(save=tmp_path / "ckpt", align_steps=3, align_pairs_per_batch=8, train_iters=3)
    args = _args(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model"), tmp_path, "align", **common)
    _run(1, args + ["--align-only"], tmp_path / "align.log")
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "0"
    assert (tmp_path / "ckpt" / "alignment_gap_prepass.png").stat().st_size > 0
    assert not (tmp_path / "align.jsonl").exists() or not _train_records(tmp_path / "align.jsonl")

    args = _args(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model"), tmp_path, "pretrain",
                 load=tmp_path / "ckpt", **common)
    _run(1, args, tmp_path / "pretrain.log")
    log = (tmp_path / "pretrain.log").read_text()
    assert "align step" not in log, "the finished pre-pass ran again"
    assert sorted(_train_records(tmp_path / "pretrain.jsonl")) == [1, 2, 3]


def _without(args: list[str], *flags: str) -> list[str]:
    out, skip = [], 0
    for arg in args:
        if skip:
            skip -= 1
        elif arg in flags:
            skip = 1
        else:
            out.append(arg)
    return out


def test_sample_schedule_ramps_up_and_exit_interval_saves(tmp_path, data_prefixes, data_lexicon_path):
    """--train-samples with --rampup-batch-size: the global batch grows 4, 4, 6, 6, 8, ... as
    megatron-core's calculator says; --exit-interval saves and exits 0 mid-run; --load then
    finishes the run at exactly --train-samples with the same batches."""
    from tests.conftest import ASSETS

    args = _without(_args(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model"), tmp_path, "ramp",
                          save=tmp_path / "ckpt"), "--train-iters", "--lr-warmup-iters", "--eval-interval")
    args += ["--train-samples", "60", "--lr-warmup-samples", "8", "--rampup-batch-size", "4", "2", "16",
             "--eval-interval", "100"]
    _run(1, args + ["--exit-interval", "3"], tmp_path / "first.log")
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "3"
    first = _train_records(tmp_path / "ramp.jsonl")
    assert sorted(first) == [1, 2, 3], (tmp_path / "first.log").read_text()[-3000:]
    _run(1, args + ["--load", str(tmp_path / "ckpt")], tmp_path / "second.log")
    records = _train_records(tmp_path / "ramp.jsonl")
    batches = [records[i]["global_batch_size"] for i in sorted(records)]
    # The ramp 4 -> 8 in steps of 2 over 16 samples moves every 16 / ((8 - 4) / 2) = 8 samples.
    assert batches == [4, 4, 6, 6, 8, 8, 8, 8, 8], batches
    assert records[max(records)]["consumed_samples"] == 60
    assert [records[i]["consumed_samples"] for i in (1, 2, 3)] == [first[i]["consumed_samples"] for i in (1, 2, 3)]


def test_async_save_writes_what_a_synchronous_save_writes(tmp_path, data_prefixes, data_lexicon_path):
    """--async-save at TP=2: the background-written checkpoints of iterations 3 and 6 hold exactly
    the tensors a synchronous run saves (the forked writer snapshots them; later steps cannot
    leak in), the tracker names the last one, and no temporary directory is left."""
    from megatron_prealign.checkpointing import read_full_checkpoint
    from tests.conftest import ASSETS

    for name, extra in (("sync", []), ("async", ["--async-save"])):
        args = _args(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model"), tmp_path, name,
                     save=tmp_path / name, train_iters=6, save_interval=3, tensor_model_parallel_size=2)
        _run(2, args + extra, tmp_path / f"{name}.log")
    assert "writing in the background" in (tmp_path / "async.log").read_text()
    assert (tmp_path / "async" / "latest_checkpointed_iteration.txt").read_text() == "6"
    assert sorted(p.name for p in (tmp_path / "async").iterdir() if p.name.startswith((".", "iter_"))) == \
        ["iter_0000003", "iter_0000006"]
    for iteration in ("iter_0000003", "iter_0000006"):
        sync = read_full_checkpoint(tmp_path / "sync" / iteration)
        written = read_full_checkpoint(tmp_path / "async" / iteration)
        assert sync.keys() == written.keys()
        for key in sync:
            assert torch.equal(sync[key], written[key]), (iteration, key)


def test_sgd_run_saves_and_resumes_exactly(tmp_path, data_prefixes, data_lexicon_path):
    """--optimizer sgd (one momentum buffer per parameter: what lets a billion-parameter run fit
    in less memory) trains, checkpoints its momentum and resumes bit for bit."""
    from tests.conftest import ASSETS

    def args(name, **extra):
        return _args(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model"), tmp_path, name,
                     train_iters=4, eval_interval=100, optimizer="sgd", sgd_momentum=0.9, lr=0.05, **extra)

    _run(1, args("whole", save=tmp_path / "whole", save_interval=2), tmp_path / "whole.log")
    root = tmp_path / "resumed"
    root.mkdir()
    shutil.copytree(tmp_path / "whole" / "iter_0000002", root / "iter_0000002")
    (root / "latest_checkpointed_iteration.txt").write_text("2")
    _run(1, args("resumed", load=root), tmp_path / "resumed.log")
    whole, resumed = _train_records(tmp_path / "whole.jsonl"), _train_records(tmp_path / "resumed.jsonl")
    assert sorted(resumed) == [3, 4]
    assert whole[4]["lm_loss"] < whole[1]["lm_loss"]
    for it in (3, 4):
        assert resumed[it]["lm_loss"] == whole[it]["lm_loss"], it
