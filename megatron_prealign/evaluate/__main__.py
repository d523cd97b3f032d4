"""`python -m megatron_prealign.evaluate`: perplexity, alignment gap and cross-lingual retrieval
of any checkpoint.

    python -m megatron_prealign.evaluate --load ckpt \
        [--data-path es=data/es_text_document [--heldout-split valid | --documents 0:500]] \
        [--lexicon en_es.lex] \
        [--parallel-data en_es.jsonl [--retrieval-candidates 100]] [--output results.json]

Runs as one process on CPU or one GPU (checkpoints load at any TP/PP layout, as a bare TP=PP=1
model). Every input is checked before the model is loaded (datasets by
``integrity.open_token_dataset``, the lexicon's and the tokenizer's fingerprints against the
checkpoint's); a problem exits with 2 and one line. An option that would have no effect with the
others given (``--max-tokens`` without ``--data-path``, ``--align-seed`` without ``--lexicon``,
...) is an error too, never silently ignored. Prints what was measured and, with ``--output``,
writes it all as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from megatron_prealign.log import quiet_optional_accelerator_warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m megatron_prealign.evaluate",
        description="Perplexity, alignment gap and cross-lingual retrieval of a megatron_prealign checkpoint.")
    parser.add_argument("--load", required=True, help="checkpoint root or checkpoint directory")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward (every measurement)")
    parser.add_argument("--output", help="write the results as JSON here")

    ppl = parser.add_argument_group("perplexity")
    ppl.add_argument("--data-path", nargs="+", metavar="PREFIX",
                     help="token datasets (<prefix>.bin/.idx) to measure perplexity on: PREFIX or NAME=PREFIX "
                          "items, or pretraining's `W1 PREFIX1 W2 PREFIX2 ...` (weights ignored)")
    ppl.add_argument("--max-tokens", type=int, help="predicted tokens per dataset at most (default 32768)")
    part = ppl.add_mutually_exclusive_group()
    part.add_argument("--heldout-split", choices=("valid", "test"),
                      help="measure only the documents pretraining's --split puts in this part of each prefix "
                           "(the run's --split, which the checkpoint records)")
    part.add_argument("--documents", metavar="FIRST:END",
                      help="measure only documents FIRST..END-1 of each prefix")
    ppl.add_argument("--split", help="with --heldout-split: this TRAIN,VALID,TEST split instead of the run's")

    gap = parser.add_argument_group("alignment gap")
    gap.add_argument("--lexicon", help="compiled lexicon (.lex) of the checkpoint's tokenizer: the alignment gap per "
                                       "layer on its dictionary and held-out words, split as the pre-pass split it")
    gap.add_argument("--align-heldout-fraction", type=float,
                     help="held-out share of translation groups (default: the run's, from the checkpoint)")
    gap.add_argument("--seed", type=int, help="the run's --seed, the split's seed when --align-seed is not given "
                                              "(default: the run's, from the checkpoint)")
    gap.add_argument("--align-seed", type=int, help="seed of the held-out split (default: the run's)")
    gap.add_argument("--align-eval-max-words", type=int, help="words per side at most (default: the run's)")
    gap.add_argument("--align-max-word-tokens", type=int,
                     help="entries with more tokens are left out (default: the run's)")

    ret = parser.add_argument_group("cross-lingual retrieval")
    ret.add_argument("--parallel-data", metavar="FILE",
                     help='JSONL, one {"src": text, "tgt": text} object per line: top-1 accuracy of finding each '
                          "sentence's translation among --retrieval-candidates by mean-pooled hidden states, per layer")
    ret.add_argument("--tokenizer-type", help="tokenizer of --parallel-data (default: the run's, from the checkpoint)")
    ret.add_argument("--tokenizer-model", help="its model file (default: the run's, from the checkpoint)")
    ret.add_argument("--retrieval-candidates", type=int, help="candidates per sentence, the true one included "
                                                              "(default 100; chance = 1/N)")
    ret.add_argument("--retrieval-seed", type=int, help="seed of the candidate draws (default 0)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from megatron_prealign.evaluate.checkpoint import EvaluateConfig

    options = {k: v for k, v in vars(args).items() if k != "output"}
    try:
        cfg = EvaluateConfig(**{**options, "data_path": tuple(args.data_path or ())})
    except ValueError as exc:
        parser.error(str(exc))
    quiet_optional_accelerator_warnings()  # before megatron-core is imported below

    from megatron_prealign.checkpointing import CheckpointError
    from megatron_prealign.data.integrity import DataError
    from megatron_prealign.evaluate.checkpoint import evaluate_checkpoint, format_results, prepare_evaluation

    try:
        prepared = prepare_evaluation(cfg)
    except (DataError, CheckpointError, ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    results = evaluate_checkpoint(prepared)
    sys.stdout.write("\n".join(format_results(results)) + "\n")
    if args.output:
        from megatron_prealign.fileio import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
