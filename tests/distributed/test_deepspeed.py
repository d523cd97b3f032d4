"""Tier 3 (multi-process gloo): the DeepSpeed ZeRO backend against the default backend.

One spawn of two ranks runs, in order, on the tiny tokenizer/lexicon/corpus fixtures with
code-switching on (every run builds its model from the same seed, so all start from the same
weights):
  * 20 pretraining iterations at DP=2 on the default backend, ZeRO-1, ZeRO-2 and ZeRO-3 (every
    parameter partitioned), and at TP=2 on the default backend and ZeRO-1;
  * the alignment pre-pass (--align-only) on the default backend, ZeRO-2 and ZeRO-3;
  * ZeRO-2's iteration-10 checkpoint continued on the default backend (--load).
Its ZeRO-2 checkpoint is then exported to Hugging Face and converted back (same tensors).
Real launches follow: a ZeRO-2 run (torchrun) SIGKILLed after its first checkpoint, resumed
(torchrun) and stopped with SIGTERM to its trainers (they save, the job exits 0), and resumed again with the
`deepspeed` launcher must log the uninterrupted in-process run's losses bit for bit.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests._dist import run_on_ranks
from tests._launch import launch, run, signal_job, train_records

pytest.importorskip("deepspeed")

ITERS = 20
TP_ITERS = 10
ALIGN_STEPS = 4
REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "deepspeed"
# fp32 on CPU. ZeRO reduces gradients in buckets and clips with its own norm code, so sums are
# reassociated; measured: losses within 1e-7 relative of the default backend's after 20 Adam steps.
BACKEND_RTOL = 1e-5


def _flat(data_prefixes, lexicon: str, tokenizer: str) -> dict:
    """The run's settings as config keys (the command line is the same with dashes)."""
    a, b = data_prefixes
    return {
        "num_layers": 4, "hidden_size": 32, "num_attention_heads": 4, "num_query_groups": 2, "ffn_hidden_size": 64,
        "seq_length": 32, "micro_batch_size": 2, "global_batch_size": 8, "train_iters": ITERS, "lr": 1e-3,
        "min_lr": 1e-4, "lr_warmup_iters": 2, "clip_grad": 1.0, "seed": 7, "data_path": ["0.7", a, "0.3", b],
        "split": "90,10,0", "tokenizer_model": tokenizer, "lexicon": lexicon, "codeswitch_ratio": 0.3,
        "log_interval": 1, "eval_iters": 1, "num_workers": 0, "align_heldout_fraction": 0.3,
        "align_pairs_per_batch": 8, "align_log_interval": 1,
    }


def _argv(flat: dict) -> list[str]:
    argv = []
    for key, value in flat.items():
        argv.append("--" + key.replace("_", "-"))
        argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return argv


def _in_process(rank, world_size, work, base):
    import torch.distributed as dist

    from megatron_prealign.config import RunConfig
    from megatron_prealign.distributed import init_distributed
    from megatron_prealign.run import Run

    work = Path(work)
    zero3 = work / "zero3.json"
    if rank == 0:
        # The tiny model's parameters would all stay whole under the default persistence
        # threshold; partition every one, so reads of partitioned weights are exercised.
        zero3.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}))
    configs = {"zero1": CONFIGS / "zero1.json", "zero2": CONFIGS / "zero2.json", "zero3": zero3}
    timings = {}

    def train(name, config=None, **extra):
        start = time.perf_counter()
        flat = {**base, "metrics_log": str(work / f"{name}.jsonl"), **extra}
        if config:
            flat["deepspeed_config"] = str(configs[config])
        cfg = RunConfig.from_flat(flat)
        job = Run(cfg, init_distributed(cfg.parallel, seed=cfg.training.seed))
        try:
            job.align()
            if not cfg.training.align_only:
                job.pretrain()
        finally:
            job.close()
        timings[name] = time.perf_counter() - start

    dist.init_process_group("gloo")
    dist.barrier()  # zero3.json written
    train("default_dp2")
    train("zero1_dp2", "zero1")
    train("zero2_dp2", "zero2", save=str(work / "ckpt_zero2"), save_interval=10)
    train("zero3_dp2", "zero3")
    tp2 = {"tensor_model_parallel_size": 2, "train_iters": TP_ITERS}
    train("default_tp2", **tp2)
    train("zero1_tp2", "zero1", **tp2)
    align = {"align_steps": ALIGN_STEPS, "align_only": True}
    train("align_default", **align)
    train("align_zero2", "zero2", **align)
    train("align_zero3", "zero3", **align)
    if rank == 0:
        root = work / "ckpt_zero2_iter10"
        shutil.copytree(work / "ckpt_zero2" / "iter_0000010", root / "iter_0000010")
        (root / "latest_checkpointed_iteration.txt").write_text("10")
    dist.barrier()
    train("default_from_zero2", load=str(work / "ckpt_zero2_iter10"))
    return timings


def _align_records(path: Path) -> dict[int, dict]:
    return {r["align_step"]: r for r in map(json.loads, path.read_text().splitlines()) if "align_step" in r}


def _wait_for(condition, proc, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"the run ended or stalled first:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_prefixes, data_lexicon_path):
    from tests.conftest import ASSETS

    work = tmp_path_factory.mktemp("deepspeed")
    base = _flat(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model"))
    started = time.perf_counter()
    timings = run_on_ranks(_in_process, 2, str(work), base)[0]
    timings["in_process"] = time.perf_counter() - started

    # Real launches of ZeRO-2: SIGKILL after the first checkpoint, resume, SIGTERM, resume.
    ckpt = work / "ckpt_launched"
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    args = _argv({**base, "deepspeed_config": str(CONFIGS / "zero2.json"), "num_workers": 1, "save": str(ckpt),
                  "load": str(ckpt), "save_interval": 5})

    def part(name):
        return args + ["--metrics-log", str(work / f"{name}.jsonl")]

    started = time.perf_counter()
    killed = launch(2, part("killed"), work / "killed.log")
    _wait_for(tracker.exists, killed, work / "killed.log")
    signal_job(killed, signal.SIGSTOP)  # frozen at once, so it cannot run on while the test reacts
    signal_job(killed, signal.SIGKILL)
    killed.wait()
    first_saved = int(tracker.read_text())
    terminated = launch(2, part("terminated"), work / "terminated.log")
    metrics = work / "terminated.jsonl"
    _wait_for(lambda: metrics.exists() and train_records(metrics), terminated, work / "terminated.log")
    # As Slurm's preemption signal reaches each trainer (torchrun itself exits 1 on a SIGTERM).
    for trainer in psutil.Process(terminated.pid).children():
        trainer.send_signal(signal.SIGTERM)
    terminated_rc = terminated.wait(timeout=120)
    saved_at_term = int(tracker.read_text())
    run(2, part("resumed"), work / "resumed.log", launcher="deepspeed")
    timings["launched"] = time.perf_counter() - started

    names = [path.stem for path in work.glob("*.jsonl")]
    return {"train": {name: train_records(work / f"{name}.jsonl") for name in names},
            "align": {name: _align_records(work / f"{name}.jsonl") for name in names if name.startswith("align_")},
            "work": work, "timings": timings, "first_saved": first_saved, "terminated_rc": terminated_rc,
            "saved_at_term": saved_at_term}


def _assert_tracks(runs, name, reference, iters):
    ds, ref = runs["train"][name], runs["train"][reference]
    assert sorted(ds) == list(range(1, iters + 1))
    for it in range(1, iters + 1):
        assert ds[it]["data_checksum"] == ref[it]["data_checksum"], it
        assert ds[it]["switch_rate"] == ref[it]["switch_rate"], it
        assert ds[it]["lr"] == pytest.approx(ref[it]["lr"], rel=1e-12), it
        assert ds[it]["lm_loss"] == pytest.approx(ref[it]["lm_loss"], rel=BACKEND_RTOL), it
        assert ds[it]["grad_norm"] == pytest.approx(ref[it]["grad_norm"], rel=10 * BACKEND_RTOL), it


@pytest.mark.parametrize("name", ["zero1_dp2", "zero2_dp2", "zero3_dp2"])
def test_zero_stages_match_the_default_backend_at_dp2(runs, name):
    _assert_tracks(runs, name, "default_dp2", ITERS)
    losses = runs["train"][name]
    assert losses[ITERS]["lm_loss"] < losses[1]["lm_loss"] - 0.3


def test_zero1_at_tp2_matches_the_default_backend_at_tp2(runs):
    _assert_tracks(runs, "zero1_tp2", "default_tp2", TP_ITERS)


def test_evaluation_logs_loss_and_alignment_gap_on_deepspeed(runs):
    evals = [json.loads(line) for line in (runs["work"] / "zero3_dp2.jsonl").read_text().splitlines()
             if "eval_loss" in line]
    assert [e["iteration"] for e in evals] == [ITERS]
    reference = [json.loads(line) for line in (runs["work"] / "default_dp2.jsonl").read_text().splitlines()
                 if "eval_loss" in line][-1]
    for dataset, loss in reference["eval_loss"].items():
        assert evals[-1]["eval_loss"][dataset] == pytest.approx(loss, rel=BACKEND_RTOL)
    for slot, gap in reference["alignment_gap"].items():
        assert evals[-1]["alignment_gap"][slot] == pytest.approx(gap, abs=1e-4)


@pytest.mark.parametrize("name", ["align_zero2", "align_zero3"])
def test_pre_pass_gives_the_default_backends_loss_curve(runs, name):
    reference, ds = runs["align"]["align_default"], runs["align"][name]
    assert sorted(ds) == list(range(1, ALIGN_STEPS + 1))
    for step in ds:
        for key in ("align_total", "align_contrastive", "align_word_lm", "align_lr"):
            assert ds[step][key] == pytest.approx(reference[step][key], rel=BACKEND_RTOL), (step, key)
    assert ds[ALIGN_STEPS]["align_total"] < ds[1]["align_total"]


def test_deepspeed_checkpoint_continues_on_the_default_backend(runs):
    """Weights, data position and LR schedule carry over; the optimizer state starts fresh."""
    ds, continued = runs["train"]["zero2_dp2"], runs["train"]["default_from_zero2"]
    assert sorted(continued) == list(range(11, ITERS + 1))
    # Iteration 11's loss is the checkpoint's weights on iteration 11's batch.
    assert continued[11]["lm_loss"] == pytest.approx(ds[11]["lm_loss"], rel=1e-6)
    for it in continued:
        assert continued[it]["data_checksum"] == ds[it]["data_checksum"], it
        assert continued[it]["lr"] == pytest.approx(ds[it]["lr"], rel=1e-12), it
    state = json.loads((runs["work"] / "ckpt_zero2" / "iter_0000020" / "prealign_state.json").read_text())
    assert state["backend"] == "deepspeed" and state["zero_stage"] == 2 and state["has_optimizer"]


def test_deepspeed_weights_convert_to_hugging_face_and_back(runs):
    pytest.importorskip("transformers")
    import torch

    from megatron_prealign.checkpointing import read_full_checkpoint
    from megatron_prealign.convert import convert_hf_to_mcore, convert_mcore_to_hf

    work = runs["work"]
    convert_mcore_to_hf(work / "ckpt_zero2", work / "hf")
    convert_hf_to_mcore(work / "hf", work / "roundtrip")
    original = read_full_checkpoint(work / "ckpt_zero2")
    back = read_full_checkpoint(work / "roundtrip")
    vocab = json.loads((work / "hf" / "config.json").read_text())["vocab_size"]
    weights = [key for key in original if key.startswith(("embedding.", "decoder.", "output_layer."))]
    assert weights and set(weights) <= set(back)
    for key in weights:
        # Hugging Face holds the tokenizer's rows; the padding rows of the embeddings are not kept.
        rows = vocab if key in ("embedding.word_embeddings.weight", "output_layer.weight") else None
        assert torch.equal(original[key][:rows], back[key][:rows]), key


def test_optimizer_half_is_deepspeeds_own_checkpoint(runs):
    """DeepSpeed's tools read `iter_N/deepspeed`: its fp32 master weights are the checkpoint's."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from megatron_prealign.checkpointing import read_full_checkpoint

    ckpt = runs["work"] / "ckpt_zero2" / "iter_0000020"
    master = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="deepspeed")
    ours = read_full_checkpoint(ckpt)
    # DeepSpeed names module parameters; the checkpoint stacks layers and names the norms as the
    # layer specs' sharded state dict does.
    renamed = {"input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
               "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight"}
    assert len(master) == 3 + 6 * 4  # embedding, final norm, output layer; 6 per layer
    for key, tensor in master.items():
        match = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", key)
        stored = ours[f"decoder.layers.{renamed.get(match[2], match[2])}"][int(match[1])] if match else ours[key]
        assert torch.equal(tensor, stored), key


def test_sigkill_sigterm_and_resume_are_exact(runs):
    reference = runs["train"]["zero2_dp2"]
    killed, terminated, resumed = (runs["train"][n] for n in ("killed", "terminated", "resumed"))
    assert runs["first_saved"] == 5
    assert runs["terminated_rc"] == 0, "SIGTERM must save and exit 0"
    assert min(terminated) == 6 and max(terminated) == runs["saved_at_term"] < ITERS
    assert min(resumed) == runs["saved_at_term"] + 1 and max(resumed) == ITERS
    for records in (killed, terminated, resumed):
        for it, record in records.items():
            assert record["lm_loss"] == reference[it]["lm_loss"], it
            assert record["data_checksum"] == reference[it]["data_checksum"], it
            assert record["switch_rate"] == reference[it]["switch_rate"], it


def test_timings(runs):
    print(runs["timings"])


def test_sigterm_in_the_pre_pass_resumes_on_zero2(tmp_path, data_prefixes, data_lexicon_path):
    """On the DeepSpeed backend too: SIGTERM mid pre-pass saves the pre-pass's engine state, and
    --load continues it to the same final weights as an uninterrupted pre-pass."""
    import torch

    from megatron_prealign.checkpointing import read_full_checkpoint
    from tests.conftest import ASSETS

    steps = 40
    base = {**_flat(data_prefixes, data_lexicon_path, str(ASSETS / "tiny_sp.model")), "align_steps": steps,
            "deepspeed_config": str(CONFIGS / "zero2.json"), "hidden_dropout": 0.0}

    def argv(name, root):
        return _argv({**base, "save": str(root), "metrics_log": str(tmp_path / f"{name}.jsonl")}) + ["--align-only"]

    run(1, argv("whole", tmp_path / "whole"), tmp_path / "whole.log")
    root = tmp_path / "stopped"
    proc = launch(1, argv("stopped", root), tmp_path / "stopped.log")
    metrics = tmp_path / "stopped.jsonl"
    _wait_for(lambda: metrics.exists() and '"align_step"' in metrics.read_text(), proc, tmp_path / "stopped.log")
    signal_job(proc, signal.SIGSTOP)
    signal_job(proc, signal.SIGTERM)
    signal_job(proc, signal.SIGCONT)
    assert proc.wait(timeout=120) == 0, (tmp_path / "stopped.log").read_text()[-3000:]
    state = json.loads((root / "iter_0000000" / "prealign_state.json").read_text())
    assert 0 < state["align_step"] < steps and not state["align_finished"], state
    run(1, argv("stopped", root) + ["--load", str(root)], tmp_path / "resumed.log")
    assert f"resuming the pre-pass at step {state['align_step'] + 1}/{steps}" in (tmp_path / "resumed.log").read_text()
    whole = read_full_checkpoint(tmp_path / "whole" / "iter_0000000")
    resumed = read_full_checkpoint(root / "iter_0000000")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
