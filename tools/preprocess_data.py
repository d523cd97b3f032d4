"""Tokenize a raw corpus into megatron-core IndexedDataset files, plus the code-switch sidecar.

    python tools/preprocess_data.py --input corpus.jsonl --output-prefix data/corpus \\
        --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model --append-eod \\
        --workers 8 [--lexicon en_de.lex]

The command line of `megatron_prealign.data.preprocess.preprocess` (its module docstring
describes the outputs, the input formats and the skipped lines). Bad flags and inputs exit with
2 and one error line (with the usage when it is a flag's value); so do an output directory that
cannot be written and a lexicon that does not fit the tokenizer.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.data.integrity import DataError
from megatron_prealign.data.preprocess import INPUT_FORMATS, PreprocessConfig, check_inputs, preprocess
from megatron_prealign.lexicon.dictionary import LexiconError
from megatron_prealign.lexicon.tokenizer import TOKENIZER_TYPE_ALIASES, TOKENIZER_TYPES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_argument_group("input")
    group.add_argument("--input", required=True,
                       help="JSON-lines file, or plain text with one document per line; or a quoted glob pattern "
                            "of such files (read in sorted order); gzip/bzip2/xz/zstd files are read as they are")
    group.add_argument("--input-format", choices=INPUT_FORMATS, default="auto")
    group.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract (one output per key)")
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", required=True, choices=(*TOKENIZER_TYPES, *TOKENIZER_TYPE_ALIASES))
    group.add_argument("--tokenizer-model", required=True, help="SentencePiece .model, or tokenizer.json / directory")
    group.add_argument("--append-eod", action="store_true", help="append the end-of-document token to every document")
    group = parser.add_argument_group("code-switching")
    group.add_argument("--lexicon", metavar="FILE.lex", help="also write the code-switch sidecar for this lexicon")
    group = parser.add_argument_group("output")
    group.add_argument("--output-prefix", required=True)
    group = parser.add_argument_group("runtime")
    group.add_argument("--workers", type=int, default=1, help="encoding processes")
    group.add_argument("--partitions", type=int, default=1, help="split the input into this many partial outputs, merged in order")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = check_inputs(PreprocessConfig(
            input=args.input, output_prefix=args.output_prefix, tokenizer_type=args.tokenizer_type,
            tokenizer_model=args.tokenizer_model, json_keys=args.json_keys, input_format=args.input_format,
            append_eod=args.append_eod, lexicon=args.lexicon, workers=args.workers, partitions=args.partitions,
        ))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        preprocess(cfg)
    except (DataError, LexiconError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
