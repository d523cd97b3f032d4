"""`python -m prealign_experiments.english_clone` (`make demo`): the English-Clone experiment end to end.

    python -m prealign_experiments.english_clone            # joint training vs PreAlign, one seed
    python -m prealign_experiments.english_clone --full     # four arms x 3 seeds, mean ± spread
    python -m prealign_experiments.english_clone --out runs/x --train-iters 300 --setting-args --knowledge-entities 20

Builds the setting (`setting.build_setting`), trains every arm with the same token budget
(`megatron_prealign.pretrain.run`, one single-rank process per phase on CPU), evaluates each run
(`suite.evaluate_checkpoint`) and writes ``<out>/report.md``, its PNG plots and ``results.json``.
Finished runs are reused when the demo is started again with the same options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import warnings
import time
import typing
from pathlib import Path
from typing import Optional, Sequence

from megatron_prealign.log import get_logger
from prealign_experiments.english_clone.demo.config import ARMS, DemoConfig

logger = get_logger("prealign_experiments.english_clone.demo")

FULL_ARMS = tuple(ARMS)
FULL_SEEDS = (1234, 2345, 3456)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prealign_experiments.english_clone",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help=f"four arms ({', '.join(FULL_ARMS)}) x seeds {list(FULL_SEEDS)} (unless --arms/--seeds)")
    from prealign_experiments.english_clone.setting import field_docs

    hints = typing.get_type_hints(DemoConfig)
    docs = field_docs(DemoConfig)
    for f in dataclasses.fields(DemoConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f"{docs.get(f.name, '')} Default: {default}".strip()
        if f.name == "setting_args":
            parser.add_argument(flag, nargs=argparse.REMAINDER, default=None,
                                help="all remaining arguments are flags of "
                                     "python -m prealign_experiments.english_clone.setting")
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, nargs="+", type=typing.get_args(hint)[0], default=None, help=text)
        elif hint is bool:
            parser.add_argument(flag, action="store_true", default=None, help=text)
        else:
            parser.add_argument(flag, type=hint, default=None, help=text)
    return parser


def parse_config(argv: Optional[Sequence[str]] = None) -> DemoConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)
              if getattr(args, f.name) is not None}
    if args.full:
        values.setdefault("arms", FULL_ARMS)
        values.setdefault("seeds", FULL_SEEDS)
        values.setdefault("out", "runs/demo-full")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return DemoConfig(**values)
    except ValueError as exc:
        parser.error(str(exc))
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(argv)
    # megatron-core warns at import that TransformerEngine/apex are missing; expected on CPU.
    warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
    command = "python -m prealign_experiments.english_clone " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    from megatron_prealign.evaluate.loading import single_process_group
    from megatron_prealign.fileio import atomic_path
    from prealign_experiments.english_clone.demo import runner
    from prealign_experiments.english_clone.demo.report import aggregate, write_plots, write_report

    start = time.perf_counter()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    elif hasattr(os, "getloadavg") and os.getloadavg()[0] >= max(1.0, 0.5 * (os.cpu_count() or 1)):
        logger.warning("the machine is busy (load average %.1f on %d cores): `--threads 1` can be several "
                       "times faster than the default one thread per core", os.getloadavg()[0], os.cpu_count())
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    progress = runner.Progress(total_units=1)
    setting = runner.prepare_setting(cfg, progress)
    runs, budget = runner.plan_runs(cfg, setting)
    configs = {run.name: [runner.trainer_config(cfg, run, setting, budget["weights"], phase) for phase in (1, 2)]
               for run in runs}
    progress.total_units = 1 + sum(run.train_iters + cfg.phase2_iters + (cfg.align_steps if run.arm.prepass else 0)
                                   for run in runs)
    progress.note(f"{len(runs)} runs, {budget['tokens_per_arm']:,} tokens each; logs in {cfg.out}/logs")
    results = []
    with single_process_group() as pgs:
        for run in runs:
            runner.run_training(cfg, run, configs[run.name], progress)
            results.append(runner.evaluate_run(cfg, run, setting, budget, pgs, progress))
    plots = write_plots(results, aggregate(results), cfg.out)
    config = {**cfg.to_dict(), "setting_vocab_size": setting.vocab_size,
              "knowledge_names_in_dictionary": bool(setting.config.get("knowledge_names_in_dictionary"))}
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
