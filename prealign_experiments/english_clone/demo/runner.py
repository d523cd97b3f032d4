"""Running the demo's pieces: the setting (`build_setting`), one trainer process per arm, seed
and phase (`megatron_prealign.pretrain.run` with a `RunConfig`), and the evaluation of its
checkpoints.

Every setting build and training phase runs in a fresh process (a ``spawn`` child: its own
torch threads, process group and memory) that writes its console output to
``<out>/logs/*.log``. The console shows one progress bar per stage, fed by the metrics log each
trainer writes (``align_step`` records of the pre-pass, ``iteration`` records of pretraining).
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from megatron_prealign.log import get_logger
from prealign_experiments.english_clone.demo.config import (
    ARMS,
    DemoConfig,
    RunSpec,
    blend_weights,
    exposures,
    prepass_tokens,
)
from prealign_experiments.english_clone.setting import TOKENIZER_TYPE, CloneSetting, CloneSettingConfig, load_setting

__all__ = ["Progress", "evaluate_run", "mean_word_tokens", "plan_runs", "prepare_setting", "run_training",
           "trainer_config"]

logger = get_logger(__name__)

_CHECKPOINT = re.compile(r"iter_(\d{7})$")
# Seconds between looks at a running child's metrics log.
_POLL_SECONDS = 1.0
# Lines of a failed child's log quoted in the error.
_TAIL_LINES = 25


class Progress:
    """Console progress: a tqdm bar per stage on a terminal, a log line every `interval` s otherwise."""

    def __init__(self, total_units: int, stream=None, interval: float = 30.0):
        self.total_units = max(1, total_units)
        self.done_units = 0
        self.stream = stream or sys.stderr
        self.interval = interval
        self.start = time.perf_counter()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = None
        self._stage = ""
        self._last_print = 0.0
        self._stage_done = 0
        self._counted = True

    def eta(self) -> str:
        """Remaining time of the whole demo, from the pace so far (evaluation time included)."""
        elapsed = time.perf_counter() - self.start
        if self.done_units == 0:
            return "?"
        remaining = max(0.0, elapsed / self.done_units * (self.total_units - self.done_units))
        return f"{int(remaining) // 60}m{int(remaining) % 60:02d}s"

    def stage(self, name: str, units: int, counted: bool = True) -> None:
        """Start a stage of `units` steps; `counted` stages advance the demo-wide ETA (training
        steps do, evaluation does not: its time is folded into the pace)."""
        self.close_stage()
        self._stage, self._stage_done, self._counted = name, 0, counted
        if self._tty:
            from tqdm import tqdm

            self._bar = tqdm(total=max(units, 1), desc=name, file=self.stream, dynamic_ncols=True, leave=True)
        else:
            self._print(f"{name}: started")

    def update(self, stage_done: int, info: str = "") -> None:
        step = max(0, stage_done - self._stage_done)
        self._stage_done = max(self._stage_done, stage_done)
        if self._counted:
            self.done_units += step
        if self._bar is not None:
            self._bar.update(step)
            self._bar.set_postfix_str(f"{info} | demo ETA {self.eta()}".strip(" |"))
        elif time.perf_counter() - self._last_print >= self.interval:
            self._print(f"{self._stage}: {self._stage_done} {info} | demo ETA {self.eta()}")

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self._print(message)

    def close_stage(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _print(self, message: str) -> None:
        self._last_print = time.perf_counter()
        elapsed = int(time.perf_counter() - self.start)
        self.stream.write(f"[demo {elapsed // 60:3d}m{elapsed % 60:02d}s] {message}\n")
        self.stream.flush()


def _child_main(log_path: str, target: Callable[..., None], args: tuple) -> None:
    """Entry of a spawned child: its stdout and stderr (file descriptors, so native code and
    warnings too) go to `log_path`, then it runs ``target(*args)``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    target(*args)


@contextlib.contextmanager
def _environment(overrides: dict[str, str]) -> Iterator[None]:
    """`os.environ` with `overrides` while a child is started (a spawned child inherits the
    environment at start; OpenMP reads OMP_NUM_THREADS before any code of ours runs)."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_child(what: str, target: Callable[..., None], args: tuple, log_path: Path, *,
               env: dict[str, str] | None = None, poll: Callable[[], None] = lambda: None) -> None:
    """Run ``target(*args)`` in a spawned child that writes its output to `log_path`, calling
    `poll` about every second while it runs.

    Raises:
        RuntimeError: non-zero exit, with the last lines of the log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# {what}\n")
    process = multiprocessing.get_context("spawn").Process(target=_child_main, args=(str(log_path), target, args),
                                                            name=what)
    with _environment(env or {}):
        process.start()
    try:
        while process.is_alive():
            process.join(_POLL_SECONDS)
            poll()
    except BaseException:
        process.kill()
        process.join()
        raise
    if process.exitcode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-_TAIL_LINES:]
        raise RuntimeError(f"{what} failed with exit code {process.exitcode} (log: {log_path}):\n"
                           + "\n".join(tail))


class _MetricsTail:
    """The records a trainer has appended to its JSON-lines metrics log since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def _build_setting_in_child(setting_cfg: CloneSettingConfig, workers: int) -> None:
    from prealign_experiments.english_clone.setting import build_setting, existing_setting

    if existing_setting(setting_cfg) is not None:
        logger.info("reusing the setting in %s (same options)", setting_cfg.output_dir)
        return
    build_setting(setting_cfg, workers=workers)


def _train_in_child(values: dict[str, Any]) -> None:
    """One training phase: `megatron_prealign.pretrain.run` on the flat config `values`."""
    # The entry point first: it quiets megatron-core's import-time notices before importing it.
    from megatron_prealign.pretrain import run
    from megatron_prealign.config import RunConfig  # noqa: I001

    run(RunConfig.from_flat(values))


def prepare_setting(cfg: DemoConfig, progress: Progress) -> CloneSetting:
    """Build (or reuse) the English-Clone setting in ``<out>/setting``; ``cfg.setting_args`` are
    flags of `python -m prealign_experiments.english_clone.setting`."""
    from prealign_experiments.english_clone.setting import parse_args

    out = Path(cfg.out) / "setting"
    setting_cfg, args = parse_args(["--output-dir", str(out), *cfg.setting_args])
    progress.stage("English-Clone setting (tokenizer, texts, lexicons, preprocessing)", 1)
    _run_child("English-Clone setting", _build_setting_in_child, (setting_cfg, args.workers),
               Path(cfg.out) / "logs" / "setting.log")
    progress.update(1)
    progress.close_stage()
    return load_setting(out)


def mean_word_tokens(setting: CloneSetting) -> float:
    from megatron_prealign.lexicon import load_lexicon

    lexicon = load_lexicon(setting.path(setting.lexicon))
    return float(np.diff(lexicon.entry_offsets).mean())


def plan_runs(cfg: DemoConfig, setting: CloneSetting) -> tuple[list[RunSpec], dict[str, Any]]:
    """The runs (arms x seeds) with their phase-1 iterations, and the budget facts for the report."""
    word_tokens = mean_word_tokens(setting)
    pre_tokens = prepass_tokens(cfg, word_tokens)
    extra = int(round(pre_tokens / cfg.tokens_per_iteration))
    runs = []
    for seed in cfg.seeds:
        for name in cfg.arms:
            arm = ARMS[name]
            iters = cfg.train_iters if arm.prepass else cfg.train_iters + extra
            runs.append(RunSpec(arm=arm, seed=seed, train_iters=iters,
                                directory=os.path.join(cfg.out, "runs", f"{name}-s{seed}")))
    tokens = setting.stats["tokens"]
    weights = blend_weights(cfg, tokens)
    budget = {
        "tokens_per_iteration": cfg.tokens_per_iteration,
        "prepass_tokens": pre_tokens,
        "mean_word_tokens": word_tokens,
        "extra_iterations_without_prepass": extra,
        "phase1_tokens": (cfg.train_iters + extra) * cfg.tokens_per_iteration,
        "phase2_tokens": cfg.phase2_iters * cfg.tokens_per_iteration,
        "tokens_per_arm": (cfg.train_iters + extra + cfg.phase2_iters) * cfg.tokens_per_iteration,
        "weights": weights,
        "exposures": exposures(cfg, tokens),
        "clone_share_of_text": weights["phase1"]["clone_train"],
    }
    return runs, budget


def trainer_config(cfg: DemoConfig, run: RunSpec, setting: CloneSetting, weights: dict[str, dict[str, float]],
                   phase: int) -> dict[str, Any]:
    """The flat `RunConfig` keys (``RunConfig.from_flat``; the trainer's flag names with
    underscores) of one phase (1 or 2) of one run."""
    data_path: list[str] = []
    for name, weight in weights[f"phase{phase}"].items():
        data_path += [f"{weight:.6f}", setting.prefix(name)]
    iters = run.train_iters if phase == 1 else cfg.phase2_iters
    save = os.path.join(run.directory, "ckpt" if phase == 1 else "ckpt_phase2")
    values: dict[str, Any] = {
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads, "seq_length": cfg.seq_length,
        "micro_batch_size": cfg.micro_batch_size, "global_batch_size": cfg.global_batch_size,
        "train_iters": iters, "lr": cfg.lr, "min_lr": cfg.min_lr,
        "lr_warmup_iters": min(cfg.lr_warmup_iters, max(1, iters // 10)), "lr_decay_style": "cosine",
        "weight_decay": cfg.weight_decay, "clip_grad": cfg.clip_grad,
        "seed": run.seed + (phase - 1) * 1000,
        "data_path": data_path, "split": "100,0,0",
        "tokenizer_type": TOKENIZER_TYPE, "tokenizer_model": setting.path(setting.tokenizer_model),
        "save": save, "log_interval": 10,
        "metrics_log": os.path.join(run.directory, f"metrics_phase{phase}.jsonl"),
    }
    if phase == 1 and cfg.curve_points:
        values["save_interval"] = max(1, iters // cfg.curve_points)
    if phase == 2:
        # Phase 2 starts from the phase-1 weights with a fresh optimizer and schedule.
        values["pretrained_checkpoint"] = os.path.join(run.directory, "ckpt")
    if run.arm.prepass or run.arm.codeswitch:
        values["lexicon"] = setting.path(setting.lexicon)
    if run.arm.codeswitch:
        values["codeswitch_ratio"] = cfg.codeswitch_ratio
    if run.arm.prepass and phase == 1:
        # The held-out words of the setting are already outside the dictionary: the pre-pass
        # trains on every dictionary pair.
        values.update(align_steps=cfg.align_steps, align_lr=cfg.align_lr, align_pairs_per_batch=cfg.align_pairs,
                      align_heldout_fraction=0.0)
    return values


def run_training(cfg: DemoConfig, run: RunSpec, configs: list[dict[str, Any]], progress: Progress) -> None:
    """Train both phases of one run (`configs`: `trainer_config` of phase 1 and 2), each in its
    own process, unless a finished run with the same configs exists (then reuse it)."""
    from megatron_prealign.config import RunConfig
    from megatron_prealign.evaluate.loading import free_port

    for values in configs:
        RunConfig.from_flat(values)  # a bad config fails here, before anything is (re)moved
    directory = Path(run.directory)
    spec_path = directory / "run.json"
    align_units = cfg.align_steps if run.arm.prepass else 0
    units = align_units + run.train_iters + cfg.phase2_iters
    recorded = json.loads(json.dumps(configs))  # as run.json holds them (lists, not tuples)
    # run.json is written only when both phases finished.
    if spec_path.is_file() and json.loads(spec_path.read_text()).get("configs") == recorded:
        progress.note(f"{run.name}: reusing the finished run in {directory}")
        progress.total_units -= units  # not part of this invocation's pace
        return
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    progress.stage(f"train {run.name} ({run.arm.label})", units)
    offsets = [0, align_units + run.train_iters]

    def show(phase: int, record: dict[str, Any]) -> None:
        if "align_step" in record and phase == 1:
            progress.update(record["align_step"], "pre-pass")
        elif "lm_loss" in record:
            base = align_units if phase == 1 else offsets[1]
            label = "pretraining" if phase == 1 else "English-only phase"
            progress.update(base + record["iteration"],
                            f"{label} | loss {record['lm_loss']:.3f} | {record['tokens_per_sec']:.0f} tok/s")

    start = time.perf_counter()
    for phase, values in enumerate(configs, start=1):
        env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(free_port()), "PYTHONWARNINGS": "ignore"}
        if cfg.threads:
            env["OMP_NUM_THREADS"] = str(cfg.threads)
        metrics = _MetricsTail(Path(values["metrics_log"]))

        def poll(phase: int = phase, metrics: _MetricsTail = metrics) -> None:
            for record in metrics.new_records():
                show(phase, record)

        _run_child(f"{run.name} phase {phase}", _train_in_child, (values,), Path(cfg.out) / "logs" / f"{run.name}.log",
                   env=env, poll=poll)
    progress.update(units)
    progress.close_stage()
    spec_path.write_text(json.dumps({"configs": recorded, "seconds": time.perf_counter() - start,
                                     "train_iters": run.train_iters, "arm": run.arm.name, "seed": run.seed},
                                    indent=2))


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(iteration, directory) of every checkpoint under `root`, by iteration."""
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        match = _CHECKPOINT.search(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of a metrics log: the pre-pass's per-step records (`align_step`), then the
    pretraining records (`iteration`, per log interval and per evaluation)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate_run(cfg: DemoConfig, run: RunSpec, setting: CloneSetting, budget: dict[str, Any], pgs,
                 progress: Progress) -> dict[str, Any]:
    """Evaluate one run (cached in ``<run>/eval.json``):

    * ``curve``: held-out perplexity per language at every phase-1 checkpoint and after phase 2;
    * ``pretrained``: perplexity and alignment gap of the final phase-1 checkpoint;
    * ``final``: the whole suite on the phase-2 checkpoint (knowledge, transfer, ...).

    Removes intermediate phase-1 checkpoints unless asked to keep them.
    """
    from megatron_prealign.evaluate.loading import load_model
    from megatron_prealign.evaluate.perplexity import heldout_perplexity
    from prealign_experiments.english_clone.suite import EvalConfig, evaluate_checkpoint

    cached = Path(run.directory) / "eval.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    phase1 = checkpoints(Path(run.directory) / "ckpt")
    phase2 = checkpoints(Path(run.directory) / "ckpt_phase2")
    if not phase1 or not phase2:
        raise RuntimeError(f"{run.name}: missing checkpoints under {run.directory}")
    progress.stage(f"evaluate {run.name}", len(phase1) + 2, counted=False)
    offset = budget["prepass_tokens"] if run.arm.prepass else 0
    phase1_end = offset + phase1[-1][0] * cfg.tokens_per_iteration
    points = [(it, path, offset + it * cfg.tokens_per_iteration, 1) for it, path in phase1]
    points.append((phase2[-1][0], phase2[-1][1], phase1_end + phase2[-1][0] * cfg.tokens_per_iteration, 2))
    curve = []
    for k, (iteration, path, tokens, phase) in enumerate(points):
        model = load_model(path, pgs).model
        point = {"phase": phase, "iteration": iteration, "tokens": tokens}
        for lang, name in (("english", "en_eval"), ("clone", "clone_eval")):
            point[lang] = heldout_perplexity(model, setting.prefix(name), seq_length=cfg.seq_length,
                                             max_tokens=cfg.curve_tokens)["ppl"]
        curve.append(point)
        progress.update(k + 1)
    pretrained = evaluate_checkpoint(phase1[-1][1], setting,
                                     EvalConfig(tasks=("perplexity", "alignment"), max_tokens=cfg.eval_tokens), pgs)
    final = evaluate_checkpoint(phase2[-1][1], setting, EvalConfig(max_tokens=cfg.eval_tokens), pgs)
    progress.update(len(points) + 1)
    progress.close_stage()
    spec = json.loads((Path(run.directory) / "run.json").read_text())
    out = {"arm": run.arm.name, "seed": run.seed, "train_iters": run.train_iters, "pretrained": pretrained,
           "final": final, "curve": curve, "train_seconds": spec.get("seconds"),
           "metrics": {f"phase{p}": read_metrics(Path(run.directory) / f"metrics_phase{p}.jsonl") for p in (1, 2)},
           "tokens": curve[-1]["tokens"]}
    cached.write_text(json.dumps(out, indent=1))
    if not cfg.keep_checkpoints:
        for _, path in phase1[:-1]:
            shutil.rmtree(path, ignore_errors=True)
    return out
