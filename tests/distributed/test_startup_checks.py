"""Tier 3 (real trainer process): what pretraining needs is checked before the pre-pass.

A run whose compiled code-switch kernel does not load (as when `python -m
megatron_prealign.pretrain` runs from a source tree that was never built) stops at start-up with
one line saying how to build it, before a single pre-pass step.
"""
from __future__ import annotations

import os
import subprocess
import sys

from tests._dist import free_port
from tests.distributed.test_checkpoint_safety import _args

BLOCK_EXTENSION = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "megatron_prealign._C":
            raise ImportError("No module named 'megatron_prealign._C'")
sys.meta_path.insert(0, _Block())
'''


def test_a_missing_extension_stops_the_run_before_the_pre_pass(tmp_path, data_prefixes, data_lexicon_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_EXTENSION)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "PYTHONWARNINGS": "ignore"}
    args = _args(data_prefixes, data_lexicon_path, tmp_path, "nokernel", train_iters=2, align_steps=5,
                 align_pairs_per_batch=8)
    proc = subprocess.run([sys.executable, "-m", "megatron_prealign.pretrain", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("python -m megatron_prealign.pretrain: error:")]
    assert len(errors) == 1 and "megatron_prealign._C" in errors[0] and "pip install -e ." in errors[0], log[-3000:]
    assert "align step" not in log and "Traceback" not in log


def test_paths_that_cannot_be_written_are_one_line_errors(tmp_path, data_prefixes, data_lexicon_path):
    """--save or --metrics-log below a regular file: one line naming the path, exit 2."""
    from tests._launch import launch

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for name, flag in (("save", "--save"), ("metrics", "--metrics-log")):
        args = _args(data_prefixes, data_lexicon_path, tmp_path, name, train_iters=2)
        if flag == "--metrics-log":
            at = args.index(flag)
            args = args[:at] + args[at + 2:]
        args += [flag, str(blocker / "sub" / "x")]
        proc = launch(1, args, tmp_path / f"{name}.log")
        assert proc.wait(timeout=300) == 2, (tmp_path / f"{name}.log").read_text()[-3000:]
        log = (tmp_path / f"{name}.log").read_text()
        errors = [line for line in log.splitlines() if line.startswith("python -m megatron_prealign.pretrain: error:")]
        assert len(errors) == 1 and str(blocker) in errors[0], log[-3000:]
        assert "Traceback" not in log
