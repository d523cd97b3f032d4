"""`python -m megatron_prealign.evaluate`: held-out perplexity of any checkpoint on token datasets.

    python -m megatron_prealign.evaluate --load ckpt --data-path en=data/en_text_document \
        de=data/de_text_document [--max-tokens 32768] [--output ppl.json]

Runs as one process on CPU or one GPU (checkpoints load at any TP/PP layout, as a bare TP=PP=1
model). Prints one line per dataset and, with ``--output``, writes the results as JSON. Every
dataset is checked before the model is loaded (``integrity.open_token_dataset``: complete files,
the checkpoint's tokenizer, ids inside its vocabulary); a problem exits with 2 and one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

from megatron_prealign.evaluate.perplexity import format_perplexity, parse_data_paths
from megatron_prealign.log import quiet_optional_accelerator_warnings
from megatron_prealign.training.data import check_prefixes_exist


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m megatron_prealign.evaluate",
                                     description="Held-out perplexity of a megatron_prealign checkpoint.")
    parser.add_argument("--load", required=True, help="checkpoint root or checkpoint directory")
    parser.add_argument("--data-path", nargs="+", required=True, metavar="PREFIX",
                        help="token datasets (<prefix>.bin/.idx) to measure perplexity on: PREFIX or NAME=PREFIX "
                             "items, or pretraining's `W1 PREFIX1 W2 PREFIX2 ...` (weights ignored)")
    parser.add_argument("--max-tokens", type=int, default=32768, help="predicted tokens per dataset at most")
    parser.add_argument("--batch-size", type=int, default=16, help="windows of the model's context per forward")
    parser.add_argument("--output", help="write the results as JSON here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        named = parse_data_paths(args.data_path)
        check_prefixes_exist([prefix for _, prefix in named])
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    if args.max_tokens < 1 or args.batch_size < 1:
        parser.error("--max-tokens and --batch-size must be >= 1")
    quiet_optional_accelerator_warnings()  # before megatron-core is imported below

    from megatron_prealign.checkpointing import CheckpointError, read_checkpoint_state
    from megatron_prealign.data.integrity import DataError, open_token_dataset
    from megatron_prealign.evaluate.loading import load_model, single_process_group
    from megatron_prealign.evaluate.perplexity import dataset_perplexities

    try:
        _, meta = read_checkpoint_state(args.load)
        fingerprint = meta.get("tokenizer_fingerprint")
        vocab_size = (meta.get("model") or {}).get("vocab_size")
        for _, prefix in named:  # before minutes of model loading, and for every dataset
            open_token_dataset(prefix, tokenizer_fingerprint=fingerprint, vocab_size=vocab_size, flag="--data-path")
    except (DataError, CheckpointError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")

    with single_process_group() as pgs:
        loaded = load_model(args.load, pgs)
        results: dict[str, Any] = {
            "perplexity": dataset_perplexities(loaded.model, named, seq_length=loaded.config.seq_length,
                                               max_tokens=args.max_tokens, batch_size=args.batch_size,
                                               tokenizer_fingerprint=fingerprint,
                                               vocab_size=loaded.config.vocab_size),
            "checkpoint": str(loaded.path),
            "iteration": loaded.iteration,
        }
    sys.stdout.write("\n".join(format_perplexity(n, v) for n, v in results["perplexity"].items()) + "\n")
    if args.output:
        from megatron_prealign.fileio import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
