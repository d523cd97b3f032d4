"""Compile a bilingual / multi-way dictionary against a tokenizer into a `.lex` lexicon file.

    python tools/build_lexicon.py --dictionary en-de.txt --tokenizer-type SentencePieceTokenizer \
        --tokenizer-model tokenizer.model --output en-de.lex [--format auto] [--skip-invalid] \
        [--max-invalid-fraction 0.1] [--case-variants] [--mode word|longest-match] \
        [--corpus en.jsonl de.jsonl [--corpus-json-key text]] [--stopwords FILE] \
        [--stopwords-top-k N] [--min-frequency F] [--max-translations K] [--report report.json]

Prints a summary (entries, unique sources, multi-token share, dropped counts) to stdout and, with
a corpus or --report, the quality report's key lines (coverage per corpus file, top entries,
entries never matched, group sizes). The command line of `megatron_prealign.lexicon.build_lexicon`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.lexicon import (
    DEFAULT_MAX_INVALID_FRACTION,
    FORMATS,
    MODES,
    TOKENIZER_TYPE_ALIASES,
    TOKENIZER_TYPES,
    BuildLexiconConfig,
    LexiconError,
    build_lexicon_and_report,
    format_summary,
)
from megatron_prealign.lexicon.quality import format_report
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.tools.build_lexicon")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dictionary", required=True, help="dictionary file (MUSE pairs, TSV, JSONL, trans), or a dictd/FreeDict "
                   "database: its .index, its .dict.dz or their common stem")
    p.add_argument("--format", default="auto", choices=FORMATS,
                   help="dictionary format; auto detects it and logs the one it chose (default %(default)s)")
    p.add_argument("--tokenizer-type", required=True, choices=(*TOKENIZER_TYPES, *TOKENIZER_TYPE_ALIASES))
    p.add_argument("--tokenizer-model", required=True, help=".model file, tokenizer.json or HF directory")
    p.add_argument("--output", required=True, help="output .lex file (written atomically)")
    p.add_argument("--skip-invalid", action="store_true", help="count malformed lines instead of failing")
    p.add_argument("--max-invalid-fraction", type=float, default=DEFAULT_MAX_INVALID_FRACTION,
                   help="with --skip-invalid, fail when more than this share of the data lines is malformed "
                        "(the file is then almost surely in another --format); default %(default)s")
    p.add_argument("--case-variants", action="store_true", help="also add Capitalized forms of every group")
    p.add_argument("--mode", default="word", choices=MODES, help="word: spaced scripts; longest-match: unspaced")
    q = p.add_argument_group("quality", "filters against corpus frequencies, and the report (see lexicon/quality.py)")
    q.add_argument("--corpus", nargs="+", default=[], metavar="FILE",
                   help="raw text to count matches in: .jsonl ({\"text\": ...} per line) or one document per "
                        "line, optionally .gz/.bz2/.xz; one file per language gives coverage per language")
    q.add_argument("--corpus-json-key", default="text", help="key of the text in .jsonl corpus files")
    q.add_argument("--stopwords", metavar="FILE", help="words (one per line) to remove, case-insensitively")
    q.add_argument("--stopwords-top-k", type=int, default=0, metavar="N",
                   help="remove the N most matched dictionary words of each side (needs --corpus)")
    q.add_argument("--min-frequency", type=int, default=0, metavar="F",
                   help="remove dictionary words matched fewer than F times in the corpus (needs --corpus)")
    q.add_argument("--max-translations", type=int, default=0, metavar="K",
                   help="keep at most K translations per word: the most matched in the corpus, else the first "
                        "listed (0: all)")
    q.add_argument("--report", metavar="FILE.json",
                   help="write the quality report (coverage, top / never-matched entries, group sizes) as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = BuildLexiconConfig(dictionary=args.dictionary, format=args.format, tokenizer_type=args.tokenizer_type,
                                 tokenizer_model=args.tokenizer_model, output=args.output,
                                 skip_invalid=args.skip_invalid, max_invalid_fraction=args.max_invalid_fraction,
                                 case_variants=args.case_variants, mode=args.mode, corpus=tuple(args.corpus),
                                 corpus_json_key=args.corpus_json_key, stopwords=args.stopwords,
                                 stopwords_top_k=args.stopwords_top_k, min_frequency=args.min_frequency,
                                 max_translations=args.max_translations, report=args.report)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        lexicon, report = build_lexicon_and_report(cfg)
    except (LexiconError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(format_summary(lexicon.summary()) + "\n")
    if report is not None:
        sys.stdout.write(format_report(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
