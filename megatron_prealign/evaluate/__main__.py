"""`python -m megatron_prealign.evaluate`: evaluate any checkpoint.

    # the English-Clone suite (perplexity per language, knowledge, transfer, alignment gap)
    python -m megatron_prealign.evaluate --load runs/demo/joint-s1234/ckpt --setting runs/demo/setting

    # perplexity on any token datasets (no setting needed)
    python -m megatron_prealign.evaluate --load ckpt --data-path en=data/en_text_document

Runs as one process on CPU or one GPU (checkpoints load at any TP/PP layout). Prints a summary
and, with ``--output``, writes the full results as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any, Optional, Sequence

from megatron_prealign.evaluate.suite import TASKS, EvalConfig
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m megatron_prealign.evaluate",
                                     description="Evaluate a megatron_prealign checkpoint.")
    parser.add_argument("--load", required=True, help="checkpoint root or checkpoint directory")
    parser.add_argument("--setting", help="English-Clone setting directory (tools/make_english_clone.py)")
    parser.add_argument("--data-path", nargs="+", default=[], metavar="NAME=PREFIX",
                        help="token datasets to measure perplexity on (instead of, or besides, the setting)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    defaults = EvalConfig()
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--alignment-words", type=int, default=defaults.alignment_words)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", help="write the results as JSON here")
    return parser


def format_results(results: dict[str, Any]) -> str:
    """Human-readable summary lines of `evaluate_model`/perplexity results."""
    lines = []
    for name, value in results.get("perplexity", {}).items():
        lines.append(f"perplexity  {name:<10} {value['ppl']:10.2f}  (loss {value['loss']:.4f}, {value['tokens']} tokens)")
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
    # megatron-core warns at import that TransformerEngine/apex are missing; expected on CPU.
    warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
    if not args.setting and not args.data_path:
        parser.error("give --setting (the English-Clone suite) and/or --data-path NAME=PREFIX")
    named = []
    for item in args.data_path:
        name, sep, prefix = item.partition("=")
        if not sep or not name or not prefix:
            parser.error(f"--data-path expects NAME=PREFIX, got {item!r}")
        named.append((name, prefix))
    try:
        cfg = EvalConfig(tasks=tuple(args.tasks), max_tokens=args.max_tokens, batch_size=args.batch_size,
                         alignment_words=args.alignment_words, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))

    from megatron_prealign.evaluate.english_clone import load_setting
    from megatron_prealign.evaluate.loading import load_model, single_process_group
    from megatron_prealign.evaluate.perplexity import heldout_perplexity
    from megatron_prealign.evaluate.suite import evaluate_checkpoint

    results: dict[str, Any] = {}
    with single_process_group() as pgs:
        if args.setting:
            results = evaluate_checkpoint(args.load, load_setting(args.setting), cfg, pgs)
        if named:
            loaded = load_model(args.load, pgs)
            results.setdefault("perplexity", {})
            for name, prefix in named:
                results["perplexity"][name] = heldout_perplexity(
                    loaded.model, prefix, seq_length=loaded.config.seq_length, max_tokens=cfg.max_tokens,
                    batch_size=cfg.batch_size)
            results.setdefault("checkpoint", str(loaded.path))
            results.setdefault("iteration", loaded.iteration)
    sys.stdout.write(format_results(results) + "\n")
    if args.output:
        from megatron_prealign.fileio import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
