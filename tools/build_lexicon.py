"""Compile a bilingual / multi-way dictionary against a tokenizer into a `.lex` lexicon file.

    python tools/build_lexicon.py --dictionary en-de.txt --tokenizer-type SentencePieceTokenizer \
        --tokenizer-model tokenizer.model --output en-de.lex [--format auto] [--skip-invalid] \
        [--case-variants] [--mode word|longest-match]

Prints a summary (entries, unique sources, multi-token share, dropped counts) to stdout.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from megatron_prealign.lexicon import (
    FORMATS,
    MODES,
    TOKENIZER_TYPES,
    LexiconError,
    build_tokenizer,
    compile_lexicon,
    read_dictionary,
)
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.tools.build_lexicon")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dictionary", required=True, help="dictionary file (MUSE pairs, TSV, JSONL, trans)")
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES)
    p.add_argument("--tokenizer-model", required=True, help=".model file, tokenizer.json or HF directory")
    p.add_argument("--output", required=True, help="output .lex file (written atomically)")
    p.add_argument("--skip-invalid", action="store_true", help="count malformed lines instead of failing")
    p.add_argument("--case-variants", action="store_true", help="also add Capitalized forms of every group")
    p.add_argument("--mode", default="word", choices=MODES, help="word: spaced scripts; longest-match: unspaced")
    return p


def format_summary(summary: dict) -> str:
    dropped = ", ".join(f"{k}={v}" for k, v in summary["dropped"].items())
    return "\n".join(
        [
            f"entries:            {summary['entries']}",
            f"unique sources:     {summary['unique_sources']}",
            f"multi-token share:  {summary['multi_token_share']:.3f}",
            f"scannable entries:  {summary['scannable_entries']} (mode {summary['mode']})",
            f"groups:             {summary['groups']} (largest {summary['largest_group']})",
            f"dropped:            {dropped}",
            f"sha256:             {summary['sha256']}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tokenizer = build_tokenizer(args.tokenizer_type, args.tokenizer_model)
        result = read_dictionary(args.dictionary, format=args.format, skip_invalid=args.skip_invalid)
        for report in result.invalid_reports[:10]:
            logger.warning("skipped: %s", report)
        lexicon = compile_lexicon(result, tokenizer, case_variants=args.case_variants, mode=args.mode)
    except (LexiconError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    lexicon.save(args.output)
    logger.info("wrote %s", args.output)
    sys.stdout.write(format_summary(lexicon.summary()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
