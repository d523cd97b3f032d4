"""Running the benchmark's pieces: the setting, one trainer process per arm and seed
(`megatron_prealign.pretrain.run` with a `RunConfig`), and the evaluation of its checkpoints.

Processes, logs and progress work as in the English-Clone demo (its `demo.runner` helpers: a
spawned child per stage writing ``<out>/logs/*.log``, progress from the trainer's metrics log).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from megatron_prealign.log import get_logger
from prealign_experiments.bible_pair.config import ARMS, BenchConfig, RunSpec, prepass_tokens
from prealign_experiments.bible_pair.setting import TOKENIZER_TYPE, BibleSetting, load_setting
from prealign_experiments.english_clone.demo.runner import (
    Progress,
    _MetricsTail,
    _run_child,
    checkpoints,
    read_metrics,
)

__all__ = ["Progress", "evaluate_run", "plan_runs", "prepare_setting", "run_training", "trainer_config"]

logger = get_logger(__name__)


def _build_setting_in_child(setting_cfg, workers: int) -> None:
    from prealign_experiments.bible_pair.setting import build_setting, existing_setting

    if existing_setting(setting_cfg) is not None:
        logger.info("reusing the setting in %s (same options)", setting_cfg.output_dir)
        return
    build_setting(setting_cfg, workers=workers)


def _train_in_child(values: dict[str, Any]) -> None:
    from megatron_prealign.pretrain import run
    from megatron_prealign.config import RunConfig  # noqa: I001

    run(RunConfig.from_flat(values))


def prepare_setting(cfg: BenchConfig, progress: Progress) -> BibleSetting:
    """Build (or reuse) the setting in ``<out>/setting``; ``cfg.setting_args`` are flags of
    `python -m prealign_experiments.bible_pair.setting`."""
    from prealign_experiments.bible_pair.setting import parse_args

    out = Path(cfg.out) / "setting"
    setting_cfg, args = parse_args(["--output-dir", str(out), *cfg.setting_args])
    progress.stage("English-Spanish setting (Bibles, tokenizer, dictionary, preprocessing)", 1)
    _run_child("English-Spanish setting", _build_setting_in_child, (setting_cfg, args.workers),
               Path(cfg.out) / "logs" / "setting.log")
    progress.update(1)
    progress.close_stage()
    return load_setting(out)


def plan_runs(cfg: BenchConfig, setting: BibleSetting) -> tuple[list[RunSpec], dict[str, Any]]:
    """The runs (arms x seeds) with their iterations, and the budget facts for the report."""
    word_tokens = setting.stats["lexicon"]["mean_word_tokens"]
    pre_tokens = prepass_tokens(cfg, word_tokens)
    extra = int(round(pre_tokens / cfg.tokens_per_iteration))
    runs = [RunSpec(arm=ARMS[name], seed=seed, train_iters=cfg.train_iters if ARMS[name].prepass
                    else cfg.train_iters + extra, directory=os.path.join(cfg.out, "runs", f"{name}-s{seed}"))
            for seed in cfg.seeds for name in cfg.arms]
    tokens = setting.stats["tokens"]
    spanish = tokens["es_train"] / (tokens["en_train"] + tokens["es_train"])
    budget = {
        "tokens_per_iteration": cfg.tokens_per_iteration,
        "prepass_tokens": pre_tokens,
        "mean_word_tokens": word_tokens,
        "extra_iterations_without_prepass": extra,
        "tokens_per_arm": (cfg.train_iters + extra) * cfg.tokens_per_iteration,
        "prepass_share": pre_tokens / ((cfg.train_iters + extra) * cfg.tokens_per_iteration),
        "weights": {"en_train": 1.0 - spanish, "es_train": spanish},
        "epochs_of_training_text": (cfg.train_iters + extra) * cfg.tokens_per_iteration
        / (tokens["en_train"] + tokens["es_train"]),
    }
    return runs, budget


def trainer_config(cfg: BenchConfig, run: RunSpec, setting: BibleSetting, weights: dict[str, float]) -> dict[str, Any]:
    """The flat `RunConfig` keys (``RunConfig.from_flat``) of one run."""
    data_path: list[str] = []
    for name, weight in weights.items():
        data_path += [f"{weight:.6f}", setting.prefix(name)]
    values: dict[str, Any] = {
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads, "seq_length": cfg.seq_length,
        "micro_batch_size": cfg.micro_batch_size, "global_batch_size": cfg.global_batch_size,
        "train_iters": run.train_iters, "lr": cfg.lr, "min_lr": cfg.min_lr,
        "lr_warmup_iters": min(cfg.lr_warmup_iters, max(1, run.train_iters // 10)), "lr_decay_style": "cosine",
        "weight_decay": cfg.weight_decay, "clip_grad": cfg.clip_grad, "seed": run.seed,
        "data_path": data_path, "split": "100,0,0",
        "tokenizer_type": TOKENIZER_TYPE, "tokenizer_model": setting.path(setting.tokenizer_model),
        "save": os.path.join(run.directory, "ckpt"), "log_interval": 10,
        "metrics_log": os.path.join(run.directory, "metrics.jsonl"),
    }
    # Intervals of the pre-pass arms' iteration count, so arms without the pre-pass also keep a
    # checkpoint at `cfg.train_iters`: the comparison at equal pretraining iterations (the
    # pre-pass not counted) is measured there.
    values["save_interval"] = max(1, cfg.train_iters // cfg.curve_points) if cfg.curve_points else cfg.train_iters
    if run.arm.prepass or run.arm.codeswitch:
        values["lexicon"] = setting.path(setting.lexicon)
    if run.arm.codeswitch:
        values["codeswitch_ratio"] = cfg.codeswitch_ratio
    if run.arm.prepass:
        # The setting's held-out words are already outside the training dictionary.
        values.update(align_steps=cfg.align_steps, align_lr=cfg.align_lr, align_pairs_per_batch=cfg.align_pairs,
                      align_heldout_fraction=0.0)
    return values


def run_training(cfg: BenchConfig, run: RunSpec, values: dict[str, Any], progress: Progress) -> None:
    """Train one run in its own process, unless a finished run with the same config exists."""
    from megatron_prealign.config import RunConfig
    from megatron_prealign.evaluate.loading import free_port

    RunConfig.from_flat(values)  # a bad config fails here, before anything is (re)moved
    directory = Path(run.directory)
    spec_path = directory / "run.json"
    align_units = cfg.align_steps if run.arm.prepass else 0
    units = align_units + run.train_iters
    recorded = json.loads(json.dumps(values))
    if spec_path.is_file() and json.loads(spec_path.read_text()).get("config") == recorded:
        progress.note(f"{run.name}: reusing the finished run in {directory}")
        progress.total_units -= units
        return
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    progress.stage(f"train {run.name} ({run.arm.label})", units)
    metrics = _MetricsTail(Path(values["metrics_log"]))

    def poll() -> None:
        for record in metrics.new_records():
            if "align_step" in record:
                progress.update(record["align_step"], "pre-pass")
            elif "lm_loss" in record:
                progress.update(align_units + record["iteration"],
                                f"loss {record['lm_loss']:.3f} | {record['tokens_per_sec']:.0f} tok/s")

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(cfg.threads)}
    start = time.perf_counter()
    _run_child(run.name, _train_in_child, (values,), Path(cfg.out) / "logs" / f"{run.name}.log", env=env, poll=poll)
    progress.update(units)
    progress.close_stage()
    records = read_metrics(Path(values["metrics_log"]))
    prepass_seconds = sum(r.get("align_step_seconds", 0.0) for r in records if "align_step" in r)
    spec_path.write_text(json.dumps({"config": recorded, "seconds": time.perf_counter() - start,
                                     "prepass_seconds": prepass_seconds, "train_iters": run.train_iters,
                                     "arm": run.arm.name, "seed": run.seed}, indent=2))


def evaluate_run(cfg: BenchConfig, run: RunSpec, setting: BibleSetting, budget: dict[str, Any], pgs,
                 progress: Progress) -> dict[str, Any]:
    """Evaluate one run (cached in ``<run>/eval.json``; a task missing from the cache, such as
    retrieval before it was available, is added to it):

    * ``curve``: held-out perplexity per language at every checkpoint;
    * ``final``: the suite (`suite.evaluate_model`) on the final checkpoint (equal tokens,
      pre-pass counted);
    * ``same_iterations``: the suite after ``cfg.train_iters`` pretraining iterations (equal
      iterations, the pre-pass not counted): the final checkpoint for arms with the pre-pass,
      an intermediate one for the others.

    Intermediate checkpoints are removed once their curve point is measured.
    """
    from megatron_prealign.evaluate.loading import load_model
    from megatron_prealign.evaluate.perplexity import heldout_perplexity
    from prealign_experiments.bible_pair.suite import TASKS, evaluate_checkpoint

    cached_path = Path(run.directory) / "eval.json"
    cached = json.loads(cached_path.read_text()) if cached_path.is_file() else None
    found = checkpoints(Path(run.directory) / "ckpt")
    if cached is not None:
        missing = tuple(t for t in TASKS if t not in cached["final"])
        if not missing:
            return cached
        progress.stage(f"evaluate {run.name} ({', '.join(missing)})", 1, counted=False)
        cached["final"].update(evaluate_checkpoint(found[-1][1], setting, cfg, pgs, tasks=missing))
        at = dict(found).get(cfg.train_iters)
        if at is not None and not run.arm.prepass and "same_iterations" in cached:
            cached["same_iterations"].update(evaluate_checkpoint(at, setting, cfg, pgs, tasks=missing))
        cached_path.write_text(json.dumps(cached, indent=1))
        progress.close_stage()
        return cached
    if not found:
        raise RuntimeError(f"{run.name}: no checkpoint under {run.directory}/ckpt")
    progress.stage(f"evaluate {run.name}", len(found) + 1, counted=False)
    offset = budget["prepass_tokens"] if run.arm.prepass else 0
    curve = []
    for k, (iteration, path) in enumerate(found):
        model = load_model(path, pgs).model
        point = {"iteration": iteration, "tokens": offset + iteration * cfg.tokens_per_iteration}
        for lang, name in (("english", "en_eval"), ("spanish", "es_eval")):
            point[lang] = heldout_perplexity(model, setting.prefix(name), seq_length=cfg.seq_length,
                                             max_tokens=cfg.curve_tokens)["ppl"]
        curve.append(point)
        progress.update(k + 1)
    final = evaluate_checkpoint(found[-1][1], setting, cfg, pgs)
    at = dict(found).get(cfg.train_iters)
    if run.arm.prepass:
        same = final
    elif at is not None:
        same = evaluate_checkpoint(at, setting, cfg, pgs)
    else:
        same = None
    progress.update(len(found) + 1)
    progress.close_stage()
    spec = json.loads((Path(run.directory) / "run.json").read_text())
    out = {"arm": run.arm.name, "seed": run.seed, "train_iters": run.train_iters, "final": final, "curve": curve,
           "same_iterations": same,
           "train_seconds": spec.get("seconds"), "prepass_seconds": spec.get("prepass_seconds"),
           "tokens": curve[-1]["tokens"],
           "metrics": read_metrics(Path(run.directory) / "metrics.jsonl")}
    cached_path.write_text(json.dumps(out, indent=1))
    for _, path in found[:-1]:
        shutil.rmtree(path, ignore_errors=True)
    return out


def mean_over_slots(values: dict[str, float]) -> float:
    return float(np.mean(list(values.values())))
