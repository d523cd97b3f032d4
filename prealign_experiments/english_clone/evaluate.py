"""`python -m prealign_experiments.english_clone.evaluate`: the English-Clone suite on a checkpoint.

    # perplexity per language, knowledge, transfer, alignment gap
    python -m prealign_experiments.english_clone.evaluate --load runs/demo/runs/joint-s1234/ckpt \
        --setting runs/demo/setting [--tasks ...] [--output results.json]

    # also the perplexity on other token datasets
    python -m prealign_experiments.english_clone.evaluate --load CKPT --setting DIR --data-path extra=PREFIX

Runs as one process on CPU or one GPU (checkpoints load at any TP/PP layout). Prints a summary
and, with ``--output``, writes the full results as JSON. Perplexity alone on any token datasets,
without a setting: ``python -m megatron_prealign.evaluate``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

from megatron_prealign.evaluate.perplexity import format_perplexity, parse_named_prefix
from megatron_prealign.log import quiet_optional_accelerator_warnings
from prealign_experiments.english_clone.suite import TASKS, EvalConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prealign_experiments.english_clone.evaluate",
                                     description="Evaluate a checkpoint on the English-Clone setting.")
    parser.add_argument("--load", required=True, help="checkpoint root or checkpoint directory")
    parser.add_argument("--setting", required=True,
                        help="English-Clone setting directory (python -m prealign_experiments.english_clone.setting)")
    parser.add_argument("--data-path", nargs="+", default=[], metavar="NAME=PREFIX",
                        help="further token datasets to measure perplexity on")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    defaults = EvalConfig()
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--alignment-words", type=int, default=defaults.alignment_words)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", help="write the results as JSON here")
    return parser


def format_results(results: dict[str, Any]) -> str:
    """Human-readable summary lines of `evaluate_model` results."""
    lines = [format_perplexity(name, value) for name, value in results.get("perplexity", {}).items()]
    for task in ("knowledge", "transfer"):
        for lang, value in results.get(task, {}).items():
            lines.append(f"{task:<11} {lang:<10} {100 * value['accuracy']:9.1f}%  (chance {100 * value['chance']:.1f}%, "
                         f"n={value['n']}, margin {value['margin']:+.3f})")
    for words, gaps in results.get("alignment", {}).items():
        lines.append(f"alignment   {words:<10} " + " ".join(f"{slot}={gap:+.3f}" for slot, gap in gaps.items()))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        named = [parse_named_prefix(item) for item in args.data_path]
        cfg = EvalConfig(tasks=tuple(args.tasks), max_tokens=args.max_tokens, batch_size=args.batch_size,
                         alignment_words=args.alignment_words, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    if named and "perplexity" not in cfg.tasks:
        parser.error("--data-path measures perplexity, which --tasks leaves out: add perplexity to --tasks "
                     "or drop --data-path")
    quiet_optional_accelerator_warnings()  # before megatron-core is imported below

    from megatron_prealign.evaluate.loading import load_model, single_process_group
    from megatron_prealign.evaluate.perplexity import dataset_perplexities
    from prealign_experiments.english_clone.setting import load_setting
    from prealign_experiments.english_clone.suite import evaluate_checkpoint

    with single_process_group() as pgs:
        results = evaluate_checkpoint(args.load, load_setting(args.setting), cfg, pgs)
        if named:
            loaded = load_model(args.load, pgs)
            results.setdefault("perplexity", {}).update(dataset_perplexities(
                loaded.model, named, seq_length=loaded.config.seq_length, max_tokens=cfg.max_tokens,
                batch_size=cfg.batch_size))
    sys.stdout.write(format_results(results) + "\n")
    if args.output:
        from megatron_prealign.fileio import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
