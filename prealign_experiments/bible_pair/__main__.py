"""`python -m prealign_experiments.bible_pair` (`make demo-real`): the English–Spanish benchmark end to end.

    python -m prealign_experiments.bible_pair                # four arms x 3 seeds -> runs/bible/report.md
    python -m prealign_experiments.bible_pair --quick        # a tiny model, a few steps: every stage in seconds
    python -m prealign_experiments.bible_pair --arms joint prealign --seeds 1 2 --train-iters 300

Builds the setting from Debian packages (`setting.build_setting`), trains every arm at the same
token budget (`megatron_prealign.pretrain.run`, one single-rank process per run on CPU),
evaluates each run (`suite.evaluate_checkpoint`) and writes ``<out>/report.md``, its PNG plots and
``results.json``. Finished runs and their evaluations are reused when started again with the same
options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
import typing
import warnings
from pathlib import Path
from typing import Optional, Sequence

from megatron_prealign.log import get_logger
from prealign_experiments.bible_pair.config import QUICK, BenchConfig

logger = get_logger("prealign_experiments.bible_pair")


def build_parser() -> argparse.ArgumentParser:
    from prealign_experiments.english_clone.setting import field_docs

    parser = argparse.ArgumentParser(prog="python -m prealign_experiments.bible_pair",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tiny model and a few steps (2 arms, 1 seed) into runs/bible-quick unless --out")
    hints = typing.get_type_hints(BenchConfig)
    docs = field_docs(BenchConfig)
    for f in dataclasses.fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{docs.get(f.name, '')} Default: {f.default}".strip()
        if f.name == "setting_args":
            parser.add_argument(flag, nargs=argparse.REMAINDER, default=None,
                                help="all remaining arguments are flags of python -m prealign_experiments.bible_pair.setting")
        elif typing.get_origin(hints[f.name]) is tuple:
            parser.add_argument(flag, nargs="+", type=typing.get_args(hints[f.name])[0], default=None, help=text)
        else:
            parser.add_argument(flag, type=hints[f.name], default=None, help=text)
    return parser


def parse_config(argv: Optional[Sequence[str]] = None) -> BenchConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig) if getattr(args, f.name) is not None}
    if args.quick:
        for key, value in QUICK.items():
            if key == "setting_args":
                values[key] = (*value, *values.get(key, ()))
            else:
                values.setdefault(key, value)
        values.setdefault("out", "runs/bible-quick")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return BenchConfig(**values)
    except ValueError as exc:
        parser.error(str(exc))
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(argv)
    warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
    command = "python -m prealign_experiments.bible_pair " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    import torch

    from megatron_prealign.evaluate.loading import single_process_group
    from megatron_prealign.fileio import atomic_path
    from prealign_experiments.bible_pair import runner
    from prealign_experiments.bible_pair.report import write_plots, write_report

    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    progress = runner.Progress(total_units=1)
    setting = runner.prepare_setting(cfg, progress)
    runs, budget = runner.plan_runs(cfg, setting)
    configs = {run.name: runner.trainer_config(cfg, run, setting, budget["weights"]) for run in runs}
    progress.total_units = 1 + sum(run.train_iters + (cfg.align_steps if run.arm.prepass else 0) for run in runs)
    progress.note(f"{len(runs)} runs, {budget['tokens_per_arm']:,} tokens each "
                  f"(pre-pass {budget['prepass_tokens']:,}); logs in {cfg.out}/logs")
    results = []
    with single_process_group() as pgs:
        for run in runs:
            runner.run_training(cfg, run, configs[run.name], progress)
            results.append(runner.evaluate_run(cfg, run, setting, budget, pgs, progress))
    plots = write_plots(results, cfg.out)
    config = {**cfg.to_dict(), "setting": setting.config}
    summary = write_report(str(Path(cfg.out) / "report.md"), results=results, setting_stats=setting.stats,
                           budget=budget, config=config, plots=plots, seconds=time.perf_counter() - start,
                           command=command.strip())
    with atomic_path(Path(cfg.out) / "results.json") as tmp:
        tmp.write_text(json.dumps({"config": config, "budget": budget, "setting": setting.stats, **summary,
                                   "runs": results}, indent=1, default=float))
    progress.note(f"report: {cfg.out}/report.md ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
