"""Give a converted model tokens of a new language.

    python tools/extend_vocab.py tokenizer --base ckpt/hf_assets --new-language-text de.txt \
        --new-language-vocab-size 8000 --preserve-text en_sample.txt --output tok_de/
    python tools/build_lexicon.py --dictionary en-de.txt --tokenizer-type HuggingFaceTokenizer \
        --tokenizer-model tok_de/ --output en-de.lex
    python tools/extend_vocab.py model --load ckpt/ --tokenizer tok_de/ --lexicon en-de.lex --output ckpt_de/

`tokenizer` appends the pieces of a tokenizer of the new language (given with --new-tokenizer, or
trained on --new-language-text with the base's settings) to a SentencePiece model or a BPE
tokenizer.json; old ids keep their pieces, and new pieces that would change how a line of
--preserve-text encodes are dropped. `model` grows the embedding and output layer of a checkpoint
to the extended vocabulary: old rows unchanged, each new row initialised from the dictionary
(the mean embedding of the translations of the words it occurs in) or the mean of all rows.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.checkpointing import CheckpointError
from megatron_prealign.convert import ConversionError
from megatron_prealign.convert.vocab import INIT_METHODS, extend_checkpoint, extend_tokenizer
from megatron_prealign.lexicon import LexiconError
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.tools.extend_vocab")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    tok = sub.add_parser("tokenizer", help="append a new language's pieces to a tokenizer")
    tok.add_argument("--base", required=True, help="SentencePiece .model, tokenizer.json, or a directory with one "
                                                  "(e.g. a converted checkpoint's hf_assets/)")
    tok.add_argument("--new-tokenizer", help="a tokenizer of the new language of the same kind (SentencePiece "
                                             "model, or BPE tokenizer.json with the base's pre-tokenization)")
    tok.add_argument("--new-language-text", help="train the new language's tokenizer on this text instead "
                                                 "(one document per line), with the base's settings")
    tok.add_argument("--new-language-vocab-size", type=int,
                     help="vocabulary of the trained tokenizer; its pieces the base lacks are added")
    tok.add_argument("--preserve-text", help="text in the base's languages: every line must encode as before "
                                             "(new pieces that change one are dropped)")
    tok.add_argument("--output", required=True, help="new directory for the extended tokenizer")
    model = sub.add_parser("model", help="grow a checkpoint's embedding and output layer to an extended tokenizer")
    model.add_argument("--load", required=True, help="checkpoint root or checkpoint directory (converted or trained)")
    model.add_argument("--tokenizer", required=True, help="the extended tokenizer (the `tokenizer` output "
                                                          "directory, or a .model / tokenizer.json)")
    model.add_argument("--lexicon", help=".lex compiled with the extended tokenizer (tools/build_lexicon.py); "
                                         "gives each new word its translations")
    model.add_argument("--init", choices=INIT_METHODS, default="dictionary",
                       help="new rows: from the dictionary translations (others: mean row), or all the mean row")
    model.add_argument("--base-tokenizer-model", help="the tokenizer the extended one extends (default: "
                                                      "from vocab_extension.json next to --tokenizer)")
    model.add_argument("--output", required=True, help="checkpoint root for the extended model (release)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tokenizer":
            record = extend_tokenizer(args.base, args.output, new_tokenizer=args.new_tokenizer,
                                      new_language_text=args.new_language_text,
                                      new_language_vocab_size=args.new_language_vocab_size,
                                      preserve_text=args.preserve_text)
            logger.info("wrote %s: %d -> %d tokens, %d new pieces, %d dropped", args.output,
                        record.base_vocab_size, record.vocab_size, len(record.added), len(record.dropped))
        else:
            extend_checkpoint(args.load, args.tokenizer, args.output, lexicon=args.lexicon, init=args.init,
                              base_tokenizer=args.base_tokenizer_model)
            logger.info("wrote %s", args.output)
    except (ConversionError, CheckpointError, LexiconError, FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
