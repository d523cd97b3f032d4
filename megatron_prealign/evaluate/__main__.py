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
from typing import Any, Optional, Sequence

from megatron_prealign.evaluate.perplexity import format_perplexity, parse_data_paths
from megatron_prealign.log import quiet_optional_accelerator_warnings
from megatron_prealign.training.data import check_prefixes_exist

# Options that only mean something next to another one: (option dest, flag, the option it needs).
_NEEDS = (
    ("max_tokens", "--max-tokens", "data_path"),
    ("heldout_split", "--heldout-split", "data_path"),
    ("documents", "--documents", "data_path"),
    ("split", "--split", "heldout_split"),
    ("align_heldout_fraction", "--align-heldout-fraction", "lexicon"),
    ("seed", "--seed", "lexicon"),
    ("align_seed", "--align-seed", "lexicon"),
    ("align_eval_max_words", "--align-eval-max-words", "lexicon"),
    ("align_max_word_tokens", "--align-max-word-tokens", "lexicon"),
    ("tokenizer_type", "--tokenizer-type", "parallel_data"),
    ("tokenizer_model", "--tokenizer-model", "parallel_data"),
    ("retrieval_candidates", "--retrieval-candidates", "parallel_data"),
    ("retrieval_seed", "--retrieval-seed", "parallel_data"),
)
_FLAG = {"data_path": "--data-path", "heldout_split": "--heldout-split", "lexicon": "--lexicon",
         "parallel_data": "--parallel-data"}


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


def check_combination(args: argparse.Namespace) -> str | None:
    """The first option that would be ignored with the others given, as an error message."""
    if not (args.data_path or args.lexicon or args.parallel_data):
        return "nothing to measure: give --data-path (perplexity), --lexicon (alignment gap) and/or --parallel-data " \
               "(cross-lingual retrieval)"
    for dest, flag, needs in _NEEDS:
        if getattr(args, dest) is not None and getattr(args, needs) is None:
            return f"{flag} has no effect without {_FLAG[needs]}"
    if args.seed is not None and args.align_seed is not None:
        return "--seed has no effect with --align-seed (the split's seed is --align-seed)"
    return None


def _tokenizer(args, meta: dict[str, Any]):
    """The tokenizer of --parallel-data: the flags, else the run's (the checkpoint's config);
    its fingerprint must be the checkpoint's."""
    from megatron_prealign.data.integrity import DataError
    from megatron_prealign.lexicon import build_tokenizer
    from megatron_prealign.lexicon.tokenizer import canonical_tokenizer_type

    data = (meta.get("config") or {}).get("data") or {}
    kind = args.tokenizer_type or data.get("tokenizer_type") or "SentencePieceTokenizer"
    model = args.tokenizer_model or data.get("tokenizer_model")
    if not model:
        raise DataError("--parallel-data needs the model's tokenizer: the checkpoint records none, give "
                        "--tokenizer-type and --tokenizer-model")
    try:
        tokenizer = build_tokenizer(canonical_tokenizer_type(kind), model)
    except (FileNotFoundError, OSError, ValueError) as exc:
        source = "--tokenizer-model" if args.tokenizer_model else "the checkpoint's tokenizer (give --tokenizer-model)"
        raise DataError(f"{source} {model}: {exc}") from None
    saved = meta.get("tokenizer_fingerprint")
    if saved and tokenizer.fingerprint != saved:
        raise DataError(f"--tokenizer-model {model} is not the checkpoint's tokenizer (fingerprint "
                        f"{tokenizer.fingerprint[:12]}... vs {saved[:12]}...); give the model file it was trained with")
    return tokenizer


def _lexicon(path: str, meta: dict[str, Any]):
    from megatron_prealign.data.integrity import DataError
    from megatron_prealign.lexicon import LexiconError, load_lexicon

    try:
        lexicon = load_lexicon(path)
    except (LexiconError, OSError) as exc:
        raise DataError(f"--lexicon {exc}" if str(path) in str(exc) else f"--lexicon {path}: {exc}") from None
    saved = meta.get("tokenizer_fingerprint")
    if saved and lexicon.tokenizer_fingerprint and lexicon.tokenizer_fingerprint != saved:
        raise DataError(f"--lexicon {path} was built for another tokenizer than the checkpoint's (fingerprint "
                        f"{lexicon.tokenizer_fingerprint[:12]}... vs {saved[:12]}...); build it with the checkpoint's "
                        "tokenizer (tools/build_lexicon.py)")
    return lexicon


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = check_combination(args)
    if problem:
        parser.error(problem)
    named: list[tuple[str, str]] = []
    try:
        if args.data_path:
            named = parse_data_paths(args.data_path)
            check_prefixes_exist([prefix for _, prefix in named])
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    for value, flag in ((args.batch_size, "--batch-size"), (args.max_tokens, "--max-tokens"),
                        (args.align_eval_max_words, "--align-eval-max-words"),
                        (args.align_max_word_tokens, "--align-max-word-tokens")):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1")
    if args.retrieval_candidates is not None and args.retrieval_candidates < 2:
        parser.error("--retrieval-candidates must be >= 2")
    if args.align_heldout_fraction is not None and not 0 <= args.align_heldout_fraction < 1:
        parser.error("--align-heldout-fraction must be in [0, 1)")
    quiet_optional_accelerator_warnings()  # before megatron-core is imported below

    from megatron_prealign.checkpointing import CheckpointError, read_checkpoint_state
    from megatron_prealign.data.integrity import DataError, open_token_dataset
    from megatron_prealign.evaluate.heldout import heldout_status, parse_document_range, split_documents

    documents: dict[str, range] = {}
    status: dict[str, dict[str, str]] = {}
    try:
        _, meta = read_checkpoint_state(args.load)
        fingerprint = meta.get("tokenizer_fingerprint")
        vocab_size = (meta.get("model") or {}).get("vocab_size")
        run_data = (meta.get("config") or {}).get("data")
        wanted = parse_document_range(args.documents) if args.documents else None
        for name, prefix in named:  # before minutes of model loading, and for every dataset
            dataset = open_token_dataset(prefix, tokenizer_fingerprint=fingerprint, vocab_size=vocab_size,
                                         flag="--data-path")
            count = len(dataset)
            if args.heldout_split:
                split = args.split or (run_data or {}).get("split")
                if not split:
                    raise DataError(f"--heldout-split {args.heldout_split}: the checkpoint records no --split; "
                                    "give the run's --split")
                chosen = split_documents(count, split, args.heldout_split)
                if not len(chosen):
                    raise DataError(f"--data-path {prefix}: --split {split} leaves no {args.heldout_split} documents "
                                    f"of its {count}")
            elif wanted is not None:
                if wanted.stop > count:
                    raise DataError(f"--documents {args.documents}: {prefix} has {count} documents")
                chosen = wanted
            else:
                chosen = range(count)
            documents[name] = chosen
            verdict, why = heldout_status(prefix, chosen, count, run_data)
            status[name] = {"heldout": verdict, "why": why, "documents": f"{chosen.start}:{chosen.stop}"}
        lexicon = _lexicon(args.lexicon, meta) if args.lexicon else None
        tokenizer = pairs = None
        if args.parallel_data:
            from megatron_prealign.evaluate.retrieval import check_candidates, distinct_pairs, read_parallel

            tokenizer = _tokenizer(args, meta)
            pairs = read_parallel(args.parallel_data)
            kept, dropped = distinct_pairs(pairs)
            check_candidates(len(kept), args.retrieval_candidates or 100, dropped)
    except (DataError, CheckpointError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")

    from megatron_prealign.evaluate.loading import load_model, single_process_group

    lines: list[str] = []
    with single_process_group() as pgs:
        loaded = load_model(args.load, pgs)
        results: dict[str, Any] = {"checkpoint": str(loaded.path), "iteration": loaded.iteration}
        if named:
            from megatron_prealign.evaluate.perplexity import dataset_perplexities

            ppl = dataset_perplexities(loaded.model, named, seq_length=loaded.config.seq_length,
                                       max_tokens=args.max_tokens or 32768, batch_size=args.batch_size,
                                       tokenizer_fingerprint=fingerprint, vocab_size=loaded.config.vocab_size,
                                       documents=documents)
            for name, value in ppl.items():
                value.update(status[name])
                lines.append(f"{format_perplexity(name, value)}  held-out: {value['heldout']} ({value['why']})")
            results["perplexity"] = ppl
        if lexicon is not None:
            from megatron_prealign.evaluate.alignment import format_gaps, gap_split_from_checkpoint, \
                lexicon_alignment_gaps

            split = gap_split_from_checkpoint(meta, heldout_fraction=args.align_heldout_fraction, seed=args.seed,
                                              align_seed=args.align_seed, max_words=args.align_eval_max_words,
                                              max_word_tokens=args.align_max_word_tokens)
            gaps = lexicon_alignment_gaps(loaded.model, lexicon, pgs, split, micro_batch_size=args.batch_size * 4)
            gaps["lexicon"] = str(args.lexicon)
            gaps["lexicon_is_the_runs"] = (meta.get("lexicon_sha256") == lexicon.sha256
                                           if meta.get("lexicon_sha256") else None)
            if gaps["lexicon_is_the_runs"] is False:
                lines.append(f"alignment   note: {args.lexicon} is not the lexicon the run trained with; "
                             "dictionary/held-out are this lexicon's split")
            lines.extend(format_gaps(gaps))
            results["alignment_gap"] = gaps
        if pairs is not None:
            from megatron_prealign.evaluate.retrieval import format_retrieval, retrieval_accuracy

            retrieval = retrieval_accuracy(loaded.model, tokenizer, pairs, candidates=args.retrieval_candidates or 100,
                                           seed=args.retrieval_seed or 0, batch_size=args.batch_size)
            retrieval["parallel_data"] = str(args.parallel_data)
            lines.extend(format_retrieval(retrieval))
            results["retrieval"] = retrieval
    sys.stdout.write("\n".join(lines) + "\n")
    if args.output:
        from megatron_prealign.fileio import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
