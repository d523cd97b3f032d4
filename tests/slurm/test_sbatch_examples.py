"""The launch scripts of examples/slurm/.

Tier 1 (bash only, no Slurm): each script's ``DRY_RUN=1`` output, parsed back and, for the
trainer scripts, fed to the trainer's own argument parser.

Tier 4 (``@pytest.mark.slurm``, a real local Slurm cluster, tests/slurm/cluster.py): the scripts
are submitted unchanged, with settings in the environment and resources as sbatch options, and
run a tiny PreAlign pretraining (2 layers, hidden 32, code-switching, 3 alignment steps) on
CPU/gloo:
  * pretrain_srun.sbatch, 2 tasks at TP=2: ``scancel --signal=TERM`` makes it save and stop,
    ``scontrol requeue`` runs it again, and the rerun resumes from the saved iteration (the
    metrics log continues with the next iteration) and finishes;
  * pretrain.sbatch on 2 emulated nodes, one torchrun with one trainer per node, to the end;
  * preprocess_array.sbatch (3 shards) + merge.sbatch (afterok) write the same bytes as one
    preprocessing run over the concatenated shards (`megatron_prealign.data.preprocess`).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cluster import TERMINAL_STATES

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "examples" / "slurm"
TOKENIZER = str(REPO / "tests" / "assets" / "tiny_sp.model")
CPU_CONFIG = str(REPO / "examples" / "configs" / "debug_cpu.yaml")
SUFFIXES = (".bin", ".idx", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json", ".json")

# On top of CPU_CONFIG (2 layers, 4 heads): tiny sizes, log every iteration, evaluate at the end.
TINY_MODEL_ARGS = ("--hidden-size 32 --seq-length 32 --micro-batch-size 2 --log-interval 1 "
                   "--eval-interval 1000 --eval-iters 1 --split 90,10,0")
PREALIGN_ARGS = ("--codeswitch-ratio 0.3 --align-steps 3 --align-pairs-per-batch 8 "
                 "--align-log-interval 1 --align-heldout-fraction 0.3")


# ------------------------------------------------------------------------------------------
# helpers


def _dry_run(script: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}  # no settings leak in
    return subprocess.run(["bash", str(SCRIPTS / script)], env={**base, "DRY_RUN": "1", **env}, cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def _command(script: str, env: dict[str, str], cwd: Path | None = None) -> list[str]:
    res = _dry_run(script, env, cwd)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    return shlex.split(lines[0])


def _after(cmd: list[str], marker: list[str]) -> list[str]:
    for i in range(len(cmd) - len(marker) + 1):
        if cmd[i:i + len(marker)] == marker:
            return cmd[i + len(marker):]
    raise AssertionError(f"{marker} not in {cmd}")


def _option(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, (flag, args)
    return args[args.index(flag) + 1]


def _pretrain_env(data_path: str, lexicon: str, save_dir: Path, *, train_iters: int, global_batch: int,
                  **extra: str) -> dict[str, str]:
    return {
        "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
        "SBATCH_GPUS_PER_NODE": "0", "GPUS_PER_NODE": "0",
        "DATA_PATH": data_path, "TOKENIZER_MODEL": TOKENIZER, "LEXICON": lexicon,
        "SAVE_DIR": str(save_dir), "CONFIG": CPU_CONFIG,
        "MODEL_ARGS": f"{TINY_MODEL_ARGS} --train-iters {train_iters} --global-batch-size {global_batch}",
        "EXTRA_ARGS": PREALIGN_ARGS, **extra,
    }


def _train_records(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r for r in records if "lm_loss" in r]


def _checkpoint_state(save_dir: Path) -> tuple[int, dict]:
    iteration = int((save_dir / "latest_checkpointed_iteration.txt").read_text())
    state = json.loads((save_dir / f"iter_{iteration:07d}" / "prealign_state.json").read_text())
    return iteration, state


def _wait_for_restart(cluster, job: int, restarts: int, timeout: float) -> dict:
    """Poll until the job has been restarted ``restarts`` times and reached a terminal state."""
    deadline = time.monotonic() + timeout
    while True:
        info = cluster.job_info(job)
        if info.get("Restarts") == str(restarts) and info.get("JobState") in TERMINAL_STATES:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job}: {info.get('JobState')} Restarts={info.get('Restarts')}\n{cluster.logs()}")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------
# DRY_RUN (no Slurm)


def test_dry_run_torchrun_script_resolves_the_slurm_layout():
    from megatron_prealign.config import parse_args

    env = {"SLURM_JOB_NUM_NODES": "4", "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_ON_NODE": "64",
           "SLURM_JOB_ID": "40123", "MASTER_ADDR": "gpu001", "DATA_PATH": "0.7 /d/a_text_document 0.3 /d/b",
           "TOKENIZER_MODEL": "/t/tok.model", "LEXICON": "/t/en de.lex", "SAVE_DIR": "/ck/run1", "TP": "2",
           "CONFIG": CPU_CONFIG, "MODEL_ARGS": "--hidden-size 128", "EXTRA_ARGS": "--align-steps 7 --hidden-size 96"}
    cmd = _command("pretrain.sbatch", env)
    assert cmd[:4] == ["srun", "--ntasks-per-node=1", "--cpus-per-task=64", "--kill-on-bad-exit=1"]
    # Every task exports its own node rank for torchrun (PET_NODE_RANK = --node-rank).
    assert cmd[4:7] == ["bash", "-c", 'export PET_NODE_RANK=$SLURM_NODEID; exec "$@"']
    torchrun = _after(cmd, ["node", "python3", "-m", "torch.distributed.run"])
    assert (_option(torchrun, "--nnodes"), _option(torchrun, "--nproc-per-node")) == ("4", "8")
    assert (_option(torchrun, "--master-addr"), _option(torchrun, "--master-port")) == ("gpu001", "20123")
    trainer = _after(cmd, ["-m", "megatron_prealign.pretrain"])
    assert _option(trainer, "--distributed-backend") == "nccl"
    assert _option(trainer, "--save") == _option(trainer, "--load") == "/ck/run1"
    assert trainer[-4:] == ["--align-steps", "7", "--hidden-size", "96"]  # EXTRA_ARGS last

    cfg, _ = parse_args(trainer)
    assert cfg.data.data_path == ("0.7", "/d/a_text_document", "0.3", "/d/b")
    assert cfg.data.lexicon == "/t/en de.lex"
    assert cfg.parallel.tensor_model_parallel_size == 2
    assert cfg.parallel.sequence_parallel  # TP > 1 brings sequence parallelism
    assert cfg.model.num_layers == 2  # from CONFIG
    assert cfg.model.hidden_size == 96  # CONFIG < MODEL_ARGS < EXTRA_ARGS
    assert cfg.align.steps == 7
    assert cfg.training.metrics_log == "/ck/run1/metrics.jsonl"


def test_dry_run_cpu_defaults_leave_unset_settings_to_the_config():
    env = {"GPUS_PER_NODE": "0", "DATA_PATH": "/d/a", "TOKENIZER_MODEL": "/t/tok.model", "CONFIG": ""}
    cmd = _command("pretrain.sbatch", env)
    torchrun = _after(cmd, ["-m", "torch.distributed.run"])
    assert (_option(torchrun, "--nnodes"), _option(torchrun, "--nproc-per-node")) == ("1", "1")
    assert _option(torchrun, "--master-addr") == "localhost"
    trainer = _after(cmd, ["-m", "megatron_prealign.pretrain"])
    assert _option(trainer, "--distributed-backend") == "gloo"
    for absent in ("--config", "--lexicon", "--tensor-model-parallel-size", "--pipeline-model-parallel-size",
                   "--sequence-parallel"):
        assert absent not in trainer
    assert _option(trainer, "--save") == "checkpoints/prealign-pretrain"
    cmd = _command("pretrain.sbatch", {**env, "NPROC_PER_NODE": "3"})
    assert _option(_after(cmd, ["-m", "torch.distributed.run"]), "--nproc-per-node") == "3"


def test_dry_run_srun_script_launches_the_trainer_directly():
    from megatron_prealign.config import parse_args

    env = {"SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_ID": "7", "DATA_PATH": "/d/a", "TOKENIZER_MODEL": "/t/tok.model",
           "LEXICON": "/t/x.lex", "PP": "2", "CONFIG": CPU_CONFIG, "PYTHON": "/venv/bin/python"}
    cmd = _command("pretrain_srun.sbatch", env)
    assert cmd[:5] == ["srun", "--kill-on-bad-exit=1", "/venv/bin/python", "-m", "megatron_prealign.pretrain"]
    trainer = cmd[5:]
    assert _option(trainer, "--distributed-backend") == "nccl"
    cfg, _ = parse_args(trainer)
    assert cfg.parallel.pipeline_model_parallel_size == 2
    assert cfg.training.save == cfg.training.load == "checkpoints/prealign-pretrain"


@pytest.mark.parametrize("script", ["pretrain.sbatch", "pretrain_srun.sbatch"])
def test_dry_run_selects_the_deepspeed_backend(script):
    from megatron_prealign.config import parse_args

    ds = str(REPO / "examples" / "deepspeed" / "zero3_offload.json")
    env = {"SLURM_GPUS_ON_NODE": "8", "DATA_PATH": "/d/a", "TOKENIZER_MODEL": "/t/tok.model", "LEXICON": "/t/x.lex",
           "CONFIG": str(REPO / "examples" / "configs" / "gpt_1b.yaml"), "DEEPSPEED_CONFIG": ds}
    trainer = _after(_command(script, env), ["-m", "megatron_prealign.pretrain"])
    cfg, _ = parse_args(trainer)  # CONFIG's distributed optimizer and its overlap are turned off for ZeRO
    assert cfg.deepspeed.config == ds and not cfg.optim.use_distributed_optimizer
    assert not (cfg.optim.overlap_grad_reduce or cfg.optim.overlap_param_gather)
    cfg, _ = parse_args(_after(_command(script, {**env, "TP": "2"}), ["-m", "megatron_prealign.pretrain"]))
    assert not cfg.parallel.sequence_parallel  # refused by the DeepSpeed backend, so not added
    cfg, _ = parse_args(_after(_command(script, {**env, "DEEPSPEED_CONFIG": ""}), ["-m", "megatron_prealign.pretrain"]))
    assert cfg.deepspeed.config is None
    assert cfg.optim.overlap_grad_reduce and cfg.optim.overlap_param_gather  # gpt_1b.yaml's


@pytest.mark.parametrize("script", ["pretrain.sbatch", "pretrain_srun.sbatch"])
def test_dry_run_names_a_missing_setting(script):
    res = _dry_run(script, {"TOKENIZER_MODEL": "/t/tok.model"})
    assert res.returncode != 0 and "DATA_PATH" in res.stderr


def test_dry_run_preprocess_array_task_takes_its_shard(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "C.jsonl"):  # byte order: C, a, b
        (tmp_path / name).write_text("{}\n")
    env = {"INPUTS": str(tmp_path / "*.jsonl"), "OUTPUT_PREFIX": "/out/corpus", "TOKENIZER_MODEL": "/t/tok.model",
           "LEXICON": "/t/x.lex", "PYTHON": "py", "PREALIGN_ROOT": "/repo"}
    cmd = _command("preprocess_array.sbatch", {**env, "SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "4"})
    assert cmd[:3] == ["srun", "py", "/repo/tools/preprocess_data.py"]
    assert _option(cmd, "--input") == str(tmp_path / "a.jsonl")
    assert _option(cmd, "--output-prefix") == "/out/corpus_shards/shard_00001"
    assert (_option(cmd, "--lexicon"), _option(cmd, "--workers"), cmd[-1]) == ("/t/x.lex", "4", "--append-eod")
    res = _dry_run("preprocess_array.sbatch", {**env, "SLURM_ARRAY_TASK_ID": "3"})
    assert res.returncode != 0 and "no input shard number 3" in res.stderr


def test_dry_run_merge_lists_the_shards_in_order(tmp_path):
    for i in (10, 2, 0):
        for key in ("text", "title"):
            (tmp_path / f"shard_{i:05d}_{key}_document.idx").write_bytes(b"")
    env = {"OUTPUT_PREFIX": "/out/corpus", "SHARD_DIR": str(tmp_path), "PYTHON": "py", "PREALIGN_ROOT": "/repo"}
    cmd = _command("merge.sbatch", env)
    assert cmd[:3] == ["srun", "py", "/repo/tools/merge_datasets.py"]
    inputs = _after(cmd, ["--input"])[:3]
    assert inputs == [str(tmp_path / f"shard_{i:05d}_text_document") for i in (0, 2, 10)]
    assert cmd[-2:] == ["--output-prefix", "/out/corpus_text_document"]
    res = _dry_run("merge.sbatch", {**env, "JSON_KEY": "body"})
    assert res.returncode != 0 and "no shard_*_body_document.idx" in res.stderr


def test_dry_run_align_then_pretrain_prints_both_submissions():
    res = _dry_run("align_then_pretrain.sh", {"SAVE_DIR": "/ck/run1", "EXTRA_ARGS": "--align-steps 9",
                                              "ALIGN_SBATCH_ARGS": "--nodes=1"})
    assert res.returncode == 0, res.stderr
    align, pretrain = (shlex.split(line) for line in res.stdout.strip().splitlines())
    assert align[0] == "EXTRA_ARGS=--align-steps 9 --align-only"
    assert align[1:5] == ["sbatch", "--parsable", "--job-name=prealign-align", "--nodes=1"]
    assert align[-1].endswith("examples/slurm/pretrain.sbatch")
    assert "--dependency=afterok:<ALIGN_JOB_ID>" in pretrain and "--nodes=1" not in pretrain
    assert _dry_run("align_then_pretrain.sh", {}).returncode != 0  # SAVE_DIR is required


# ------------------------------------------------------------------------------------------
# A real Slurm cluster


@pytest.fixture(scope="module")
def corpus(data_prefixes) -> str:
    """One token dataset with its code-switch sidecar (blends are covered by the DRY_RUN tests)."""
    return data_prefixes[0]


@pytest.mark.slurm
def test_srun_tp2_saves_on_term_and_requeued_job_resumes(slurm_cluster_1node, corpus, data_lexicon_path, tmp_path):
    cluster = slurm_cluster_1node
    iters = 30
    save = tmp_path / "ckpt"
    env = _pretrain_env(corpus, data_lexicon_path, save, train_iters=iters, global_batch=16, TP="2")
    job = cluster.submit(SCRIPTS / "pretrain_srun.sbatch", env=env, cwd=tmp_path,
                         args=["--nodes=1", "--ntasks-per-node=2"])
    metrics = save / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not _train_records(metrics):
        info = cluster.job_info(job)
        assert info["JobState"] in ("PENDING", "RUNNING"), cluster.read_output(info)
        assert time.monotonic() < deadline, cluster.read_output(info)
        time.sleep(0.2)
    cluster.cancel(job, signal="TERM")  # what --signal=TERM@120 and preemption send
    info = cluster.wait(job, timeout=120)
    first_output = cluster.read_output(info)
    assert (info["JobState"], info["ExitCode"], info["Requeue"]) == ("COMPLETED", "0:0", "1"), first_output
    saved, state = _checkpoint_state(save)
    done = [r["iteration"] for r in _train_records(metrics)]
    assert done == list(range(1, saved + 1)) and saved < iters, (saved, done)
    assert state["align_finished"] and state["layout"]["tensor_model_parallel_size"] == 2

    cluster.requeue(job)
    info = _wait_for_restart(cluster, job, restarts=1, timeout=300)
    output = cluster.read_output(info)  # --open-mode=append: both runs
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), output
    records = _train_records(metrics)
    assert [r["iteration"] for r in records] == list(range(1, iters + 1))  # continues at saved + 1
    final, state = _checkpoint_state(save)
    assert final == iters and state["consumed_samples"] == iters * 16
    assert f"loaded checkpoint {save}/iter_{saved:07d} (iteration {saved})" in output
    assert output.count("align step 3/3") == 1  # the rerun does not align again
    assert any(r["switch_rate"] > 0 for r in records)  # code-switching on


@pytest.mark.slurm
def test_torchrun_on_two_nodes_trains_to_the_end(slurm_cluster_2nodes, corpus, data_lexicon_path, tmp_path):
    cluster = slurm_cluster_2nodes
    iters = 10
    save = tmp_path / "ckpt"
    env = _pretrain_env(corpus, data_lexicon_path, save, train_iters=iters, global_batch=4)
    job = cluster.submit(SCRIPTS / "pretrain.sbatch", env=env, cwd=tmp_path)  # its own --nodes=2
    info = cluster.wait(job, timeout=300)
    output = cluster.read_output(info)
    assert (info["JobState"], info["ExitCode"], info["NodeList"]) == ("COMPLETED", "0:0", "n[1-2]"), output
    assert "initialized gloo world of 2 (torchrun launch)" in output
    assert "align step 3/3" in output
    records = _train_records(save / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, iters + 1))
    assert any(r["switch_rate"] > 0 for r in records)
    final, state = _checkpoint_state(save)
    assert final == iters and state["align_finished"]
    assert state["layout"] == {"data_parallel_size": 2, "pipeline_model_parallel_size": 1,
                               "tensor_model_parallel_size": 1}


@pytest.mark.slurm
def test_preprocess_array_and_merge_equal_a_single_run(slurm_cluster_1node, data_corpus_lines, data_lexicon_path,
                                                       tmp_path):
    lines = [json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in data_corpus_lines]
    raw = tmp_path / "raw"
    raw.mkdir()
    cuts = [0, 30, 31, len(lines)]  # uneven shards, one with a single document
    for i in range(3):
        (raw / f"part-{i}.jsonl").write_text("".join(lines[cuts[i]:cuts[i + 1]]), encoding="utf-8")
    env = {"PYTHON": sys.executable, "PYTHONWARNINGS": "ignore", "PREALIGN_ROOT": str(REPO),
           "INPUTS": str(raw / "part-*.jsonl"), "OUTPUT_PREFIX": str(tmp_path / "corpus"),
           "TOKENIZER_MODEL": TOKENIZER, "LEXICON": data_lexicon_path}
    cluster = slurm_cluster_1node
    array = cluster.submit(SCRIPTS / "preprocess_array.sbatch", env=env, cwd=tmp_path,
                           args=["--array=0-2", "--cpus-per-task=1"])
    merge = cluster.submit(SCRIPTS / "merge.sbatch", env=env, cwd=tmp_path, args=[f"--dependency=afterok:{array}"])

    # Meanwhile, the reference: one process over the shards concatenated.
    whole = tmp_path / "whole.jsonl"
    whole.write_text("".join(lines), encoding="utf-8")
    from megatron_prealign.data.preprocess import PreprocessConfig, preprocess

    preprocess(PreprocessConfig(input=str(whole), output_prefix=str(tmp_path / "single"),
                                tokenizer_type="SentencePieceTokenizer", tokenizer_model=TOKENIZER, append_eod=True,
                                lexicon=data_lexicon_path))

    info = cluster.wait(merge, timeout=300)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), cluster.read_output(info)
    shards = sorted(p.name for p in (tmp_path / "corpus_shards").iterdir())
    assert shards == sorted(f"shard_{i:05d}_text_document{s}" for i in range(3) for s in SUFFIXES)
    for suffix in SUFFIXES:
        merged = (tmp_path / f"corpus_text_document{suffix}").read_bytes()
        assert merged == (tmp_path / f"single_text_document{suffix}").read_bytes(), suffix
