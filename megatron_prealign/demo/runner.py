"""Running the demo's pieces: the setting (tools/make_english_clone.py), one trainer process per
arm and seed (``python -m megatron_prealign.pretrain``), and the evaluation of its checkpoints.

Subprocesses write everything to ``<out>/logs/*.log``; the console shows one progress bar per
stage, fed by the trainer's own log lines (``align step k/N``, ``iter k/N``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from megatron_prealign.demo.config import ARMS, DemoConfig, RunSpec, blend_weights, exposures, prepass_tokens
from megatron_prealign.evaluate.english_clone import TOKENIZER_TYPE, CloneSetting, load_setting
from megatron_prealign.log import get_logger

__all__ = ["Progress", "build_setting", "evaluate_run", "mean_word_tokens", "plan_runs", "run_training",
           "trainer_command"]

logger = get_logger(__name__)

REPO = Path(__file__).resolve().parents[2]
_ALIGN_STEP = re.compile(r"align step (\d+)/(\d+)")
_ITER = re.compile(r"iter (\d+)/(\d+) \| lm loss ([0-9.naninf]+) .*?\| ([0-9.]+) tok/s")
_CHECKPOINT = re.compile(r"iter_(\d{7})$")


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


def _stream_process(cmd: Sequence[str], log_path: Path, on_line: Callable[[str], None], env=None) -> None:
    """Run `cmd`, copying its output to `log_path` and each line to `on_line`.

    Raises:
        RuntimeError: non-zero exit, with the last lines of the log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=env, cwd=os.getcwd())
        tail: list[str] = []
        try:
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line.rstrip()])[-25:]
                on_line(line)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if code != 0:
        raise RuntimeError(f"command failed with exit code {code} (log: {log_path}):\n  {' '.join(cmd)}\n"
                           + "\n".join(tail))


def build_setting(cfg: DemoConfig, progress: Progress) -> CloneSetting:
    """Build (or reuse) the English-Clone setting in ``<out>/setting``."""
    tool = REPO / "tools" / "make_english_clone.py"
    if not tool.is_file():
        raise FileNotFoundError(f"{tool} not found: run the demo from a clone of the repository")
    out = Path(cfg.out) / "setting"
    cmd = [sys.executable, str(tool), "--output-dir", str(out), *cfg.setting_args]
    progress.stage("English-Clone setting (tokenizer, texts, lexicons, preprocessing)", 1)
    _stream_process(cmd, Path(cfg.out) / "logs" / "setting.log", lambda line: None)
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


def trainer_command(cfg: DemoConfig, run: RunSpec, setting: CloneSetting, weights: dict[str, dict[str, float]],
                    phase: int) -> list[str]:
    """``python -m megatron_prealign.pretrain`` arguments of one phase (1 or 2) of one run."""
    data_path: list[str] = []
    for name, weight in weights[f"phase{phase}"].items():
        data_path += [f"{weight:.6f}", setting.prefix(name)]
    iters = run.train_iters if phase == 1 else cfg.phase2_iters
    save = os.path.join(run.directory, "ckpt" if phase == 1 else "ckpt_phase2")
    cmd = [
        sys.executable, "-m", "megatron_prealign.pretrain",
        "--num-layers", str(cfg.num_layers), "--hidden-size", str(cfg.hidden_size),
        "--ffn-hidden-size", str(cfg.ffn_hidden_size), "--num-attention-heads", str(cfg.num_attention_heads),
        "--seq-length", str(cfg.seq_length),
        "--micro-batch-size", str(cfg.micro_batch_size), "--global-batch-size", str(cfg.global_batch_size),
        "--train-iters", str(iters), "--lr", str(cfg.lr), "--min-lr", str(cfg.min_lr),
        "--lr-warmup-iters", str(min(cfg.lr_warmup_iters, max(1, iters // 10))), "--lr-decay-style", "cosine",
        "--weight-decay", str(cfg.weight_decay), "--clip-grad", str(cfg.clip_grad),
        "--seed", str(run.seed + (phase - 1) * 1000),
        "--data-path", *data_path, "--split", "100,0,0",
        "--tokenizer-type", TOKENIZER_TYPE, "--tokenizer-model", setting.path(setting.tokenizer_model),
        "--save", save, "--log-interval", "10",
        "--metrics-log", os.path.join(run.directory, f"metrics_phase{phase}.jsonl"),
    ]
    if phase == 1 and cfg.curve_points:
        cmd += ["--save-interval", str(max(1, iters // cfg.curve_points))]
    if phase == 2:
        # Phase 2 starts from the phase-1 weights with a fresh optimizer and schedule.
        cmd += ["--pretrained-checkpoint", os.path.join(run.directory, "ckpt")]
    if run.arm.prepass or run.arm.codeswitch:
        cmd += ["--lexicon", setting.path(setting.lexicon)]
    if run.arm.codeswitch:
        cmd += ["--codeswitch-ratio", str(cfg.codeswitch_ratio)]
    if run.arm.prepass and phase == 1:
        # The held-out words of the setting are already outside the dictionary: the pre-pass
        # trains on every dictionary pair.
        cmd += ["--align-steps", str(cfg.align_steps), "--align-lr", str(cfg.align_lr),
                "--align-pairs-per-batch", str(cfg.align_pairs), "--align-heldout-fraction", "0"]
    return cmd


def run_training(cfg: DemoConfig, run: RunSpec, commands: list[list[str]], progress: Progress) -> None:
    """Train both phases of one run unless a finished run with the same commands exists (then
    reuse it)."""
    from megatron_prealign.evaluate.loading import free_port

    directory = Path(run.directory)
    spec_path = directory / "run.json"
    align_units = cfg.align_steps if run.arm.prepass else 0
    units = align_units + run.train_iters + cfg.phase2_iters
    # run.json is written only when both phases finished.
    if spec_path.is_file() and json.loads(spec_path.read_text()).get("commands") == [c[1:] for c in commands]:
        progress.note(f"{run.name}: reusing the finished run in {directory}")
        progress.total_units -= units  # not part of this invocation's pace
        return
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    progress.stage(f"train {run.name} ({run.arm.label})", units)
    offsets = [0, align_units + run.train_iters]

    def on_line(phase: int, line: str) -> None:
        match = _ALIGN_STEP.search(line)
        if match and phase == 1:
            progress.update(int(match.group(1)), "pre-pass")
            return
        match = _ITER.search(line)
        if match:
            base = align_units if phase == 1 else offsets[1]
            label = "pretraining" if phase == 1 else "English-only phase"
            progress.update(base + int(match.group(1)),
                            f"{label} | loss {float(match.group(3)):.3f} | {float(match.group(4)):.0f} tok/s")

    start = time.perf_counter()
    for phase, cmd in enumerate(commands, start=1):
        env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(free_port()), PYTHONWARNINGS="ignore")
        if cfg.threads:
            env["OMP_NUM_THREADS"] = str(cfg.threads)
        _stream_process(cmd, Path(cfg.out) / "logs" / f"{run.name}.log", lambda line, p=phase: on_line(p, line),
                        env=env)
    progress.update(units)
    progress.close_stage()
    spec_path.write_text(json.dumps({"commands": [c[1:] for c in commands], "seconds": time.perf_counter() - start,
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
    """The pretraining records (per log interval and per evaluation) of a metrics log; the
    pre-pass's per-step records (`align_step`) are left out."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if "iteration" in record]


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
    from megatron_prealign.evaluate.suite import EvalConfig, evaluate_checkpoint

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
