"""Tier 3 (real trainer process): a checkpoint root is never lost or written over.

Each test injects one fault into a copy of a finished run's checkpoint root (iterations 2 and 4)
and runs `python -m megatron_prealign.pretrain` on it, as a requeued job would:
  * the latest checkpoint truncated, missing its state file, or the tracker missing / naming a
    directory that is gone / holding garbage: the run continues from the newest complete
    checkpoint with a warning, and the broken directory is kept aside byte for byte;
  * nothing complete left: one-line error, exit 2, the root unchanged;
  * a fresh run pointed at a --save that holds checkpoints: one-line error, root unchanged;
  * a save that runs out of disk space (a tmpfs with room for one checkpoint): one-line error
    naming the checkpoint, no partial directory left, the previous checkpoint still the latest.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests._launch import launch as _launch
from tests._launch import train_records as _train_records

TRACKER = "latest_checkpointed_iteration.txt"


def _args(data_prefixes, lexicon, workdir: Path, name: str, **extra) -> list[str]:
    from tests.conftest import ASSETS

    args = [
        "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--ffn-hidden-size", "64",
        "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "1e-3",
        "--lr-warmup-iters", "1", "--seed", "7", "--data-path", data_prefixes[0], "--split", "100,0,0",
        "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(ASSETS / "tiny_sp.model"),
        "--lexicon", lexicon, "--codeswitch-ratio", "0.3", "--log-interval", "1", "--eval-iters", "0",
        "--num-workers", "0", "--metrics-log", str(workdir / f"{name}.jsonl"),
    ]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _run(args: list[str], log: Path) -> tuple[int, str]:
    proc = _launch(1, args, log)
    try:
        rc = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return rc, log.read_text()


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_prefixes, data_lexicon_path):
    """A run's checkpoint root holding iter_0000002 and iter_0000004 (tracker: 4)."""
    work = tmp_path_factory.mktemp("safety")
    rc, log = _run(_args(data_prefixes, data_lexicon_path, work, "first", train_iters=4, save_interval=2,
                         save=work / "ckpt"), work / "first.log")
    assert rc == 0, log[-3000:]
    assert (work / "ckpt" / TRACKER).read_text() == "4"
    return work / "ckpt"


@pytest.fixture
def resume(tmp_path, finished, data_prefixes, data_lexicon_path):
    """(copy of the finished root, run(train_iters) -> (rc, log, records)) continuing it."""
    root = tmp_path / "ckpt"
    shutil.copytree(finished, root)

    def run(train_iters: int = 6, **extra):
        args = _args(data_prefixes, data_lexicon_path, tmp_path, "resume", train_iters=train_iters,
                     save_interval=2, load=root, save=root, **extra)
        rc, log = _run(args, tmp_path / "resume.log")
        metrics = tmp_path / "resume.jsonl"
        return rc, log, (_train_records(metrics) if metrics.exists() else {})

    return root, run


def _truncate_shard(ckpt: Path) -> None:
    shard = max(ckpt.glob("*.distcp"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


FAULTS = {
    "truncated shard": lambda root: _truncate_shard(root / "iter_0000004"),
    "no state file": lambda root: (root / "iter_0000004" / "prealign_state.json").unlink(),
    "no .metadata": lambda root: (root / "iter_0000004" / ".metadata").unlink(),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_latest_checkpoint_falls_back_and_is_kept(resume, fault):
    root, run = resume
    FAULTS[fault](root)
    broken = _digest(root / "iter_0000004")
    rc, log, records = run()
    assert rc == 0, log[-3000:]
    assert "continuing from its newest complete checkpoint, iter_0000002" in log
    assert sorted(records) == [3, 4, 5, 6], "did not continue from iteration 2"
    assert (root / TRACKER).read_text() == "6"
    kept = root / "iter_0000004.set-aside"
    assert _digest(kept) == broken, "the broken checkpoint was not kept as it was"
    assert (root / "iter_0000004" / "prealign_state.json").is_file()  # the run's own, complete


@pytest.mark.parametrize("tracker", [None, "40", "four"])
def test_tracker_missing_or_wrong_falls_back_to_newest_complete(resume, tracker):
    root, run = resume
    if tracker is None:
        (root / TRACKER).unlink()
    else:
        (root / TRACKER).write_text(tracker)
    rc, log, records = run()
    assert rc == 0, log[-3000:]
    assert "continuing from its newest complete checkpoint, iter_0000004" in log
    assert sorted(records) == [5, 6]


def test_nothing_complete_is_an_error_and_changes_nothing(resume):
    root, run = resume
    _truncate_shard(root / "iter_0000004")
    (root / "iter_0000002" / "prealign_state.json").unlink()
    before = _digest(root)
    rc, log, records = run()
    assert rc == 2, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("python -m megatron_prealign.pretrain: error:")]
    assert len(errors) == 1 and "no other complete checkpoint" in errors[0], log[-3000:]
    assert "Traceback" not in log
    assert _digest(root) == before and not records


def test_fresh_run_refuses_a_save_root_holding_checkpoints(tmp_path, finished, data_prefixes, data_lexicon_path):
    root = tmp_path / "ckpt"
    shutil.copytree(finished, root)
    before = _digest(root)
    rc, log = _run(_args(data_prefixes, data_lexicon_path, tmp_path, "fresh", train_iters=2, save=root),
                   tmp_path / "fresh.log")
    assert rc == 2, log[-3000:]
    assert "already holds iter_0000004, iter_0000002" in log and f"--load {root}" in log
    assert "Traceback" not in log
    assert _digest(root) == before


def test_stale_temporary_of_a_killed_save_is_removed(resume):
    root, run = resume
    stale = root / ".iter_0000006.tmp"
    stale.mkdir()
    (stale / "__0_0.distcp").write_bytes(b"\0" * 1000)
    rc, log, _ = run()
    assert rc == 0, log[-3000:]
    assert not stale.exists() and (root / "iter_0000006").is_dir()


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the disk-full case runs where it can)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_save_leaves_no_partial_checkpoint(small_tmpfs, finished, data_prefixes, data_lexicon_path):
    """The tiny model's checkpoint (with optimizer state) takes ~0.8 MB: iteration 2's fits in
    the 1.2 MB tmpfs, iteration 4's does not."""
    root = small_tmpfs / "ckpt"
    rc, log = _run(_args(data_prefixes, data_lexicon_path, small_tmpfs.parent, "full", train_iters=4,
                         save_interval=2, save=root), small_tmpfs.parent / "full.log")
    assert rc == 2, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("python -m megatron_prealign.pretrain: error:")]
    assert len(errors) == 1 and "saving checkpoint" in errors[0] and "iter_0000004" in errors[0] \
        and "No space left on device" in errors[0], log[-3000:]
    assert "Traceback" not in log
    assert sorted(p.name for p in root.iterdir()) == ["iter_0000002", "latest_checkpointed_iteration.txt"]
    assert (root / TRACKER).read_text() == "2"


def test_sigterm_in_the_pre_pass_saves_and_resumes_where_it_stopped(tmp_path, data_prefixes, data_lexicon_path):
    """SIGTERM mid pre-pass: the step finishes, a resumable checkpoint is saved, exit 0; --load
    continues the pre-pass at the next step and ends with the same weights, bit for bit, as an
    uninterrupted pre-pass (optimizer state, LR schedule, RNG streams and sampling continue)."""
    import json
    import signal
    import time

    import torch

    from megatron_prealign.checkpointing import read_full_checkpoint
    from tests._launch import signal_job

    steps = 60
    common = dict(train_iters=2, align_steps=steps, align_pairs_per_batch=8, align_log_interval=1,
                  hidden_dropout=0.1)

    def args(name, root):
        return _args(data_prefixes, data_lexicon_path, tmp_path, name, save=root, **common) + ["--align-only"]

    rc, log = _run(args("whole", tmp_path / "whole"), tmp_path / "whole.log")
    assert rc == 0, log[-3000:]

    root = tmp_path / "stopped"
    proc = _launch(1, args("stopped", root), tmp_path / "stopped.log")
    metrics = tmp_path / "stopped.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and '"align_step"' in metrics.read_text()):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "stopped.log").read_text()[-3000:]
        time.sleep(0.01)
    signal_job(proc, signal.SIGSTOP)  # hold it mid pre-pass while the signal is queued
    signal_job(proc, signal.SIGTERM)
    signal_job(proc, signal.SIGCONT)
    assert proc.wait(timeout=120) == 0, (tmp_path / "stopped.log").read_text()[-3000:]
    state = json.loads((root / "iter_0000000" / "prealign_state.json").read_text())
    stopped_at = state["align_step"]
    assert 0 < stopped_at < steps and not state["align_finished"], state
    assert "saving a resumable checkpoint" in (tmp_path / "stopped.log").read_text()

    rc, log = _run(args("stopped", root) + ["--load", str(root)], tmp_path / "resumed.log")
    assert rc == 0, log[-3000:]
    assert f"resuming the pre-pass at step {stopped_at + 1}/{steps}" in log
    records = [json.loads(line) for line in metrics.read_text().splitlines() if '"align_step"' in line]
    assert [r["align_step"] for r in records] == list(range(1, steps + 1))
    whole = read_full_checkpoint(tmp_path / "whole" / "iter_0000000")
    resumed = read_full_checkpoint(root / "iter_0000000")
    assert json.loads((root / "iter_0000000" / "prealign_state.json").read_text())["align_finished"]
    model_keys = [key for key in whole if not key.startswith("optimizer")]
    assert model_keys and set(model_keys) <= set(resumed)
    for key in model_keys:
        assert torch.equal(whole[key], resumed[key]), key
