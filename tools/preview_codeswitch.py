"""Print code-switched samples of a preprocessed dataset as text: original and switched input,
the switched words marked, drawn exactly as pretraining draws them.

    python tools/preview_codeswitch.py --data-path data/en_es_text_document --lexicon en-es.lex \
        --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model \
        [--seq-length 128] [--codeswitch-ratio 0.05] [--seed 1234] [--codeswitch-seed S] \
        [--num-samples 5] [--data-cache-path DIR]

The command line of `megatron_prealign.data.preview.preview`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.data.integrity import DataError
from megatron_prealign.data.preview import PreviewConfig, format_preview, preview
from megatron_prealign.data.sidecar import SidecarError
from megatron_prealign.lexicon import TOKENIZER_TYPE_ALIASES, TOKENIZER_TYPES, LexiconError
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.tools.preview_codeswitch")


def build_parser() -> argparse.ArgumentParser:
    d = PreviewConfig.__dataclass_fields__
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", required=True, help="token dataset prefix with its code-switch sidecar "
                                                      "(tools/preprocess_data.py --lexicon)")
    p.add_argument("--lexicon", required=True, help="the .lex the sidecar was made with")
    p.add_argument("--tokenizer-type", default=d["tokenizer_type"].default,
                   choices=(*TOKENIZER_TYPES, *TOKENIZER_TYPE_ALIASES))
    p.add_argument("--tokenizer-model", required=True, help="tokenizer file or directory")
    p.add_argument("--seq-length", type=int, default=d["seq_length"].default, help="tokens per sample (%(default)s)")
    p.add_argument("--codeswitch-ratio", type=float, default=d["codeswitch_ratio"].default,
                   help="switch probability per dictionary word, as in pretraining (%(default)s)")
    p.add_argument("--seed", type=int, default=d["seed"].default,
                   help="dataset seed, and the draw of the samples shown (%(default)s)")
    p.add_argument("--codeswitch-seed", type=int, default=None, help="seed of the switches (default: --seed)")
    p.add_argument("--num-samples", type=int, default=d["num_samples"].default, help="samples to print (%(default)s)")
    p.add_argument("--data-cache-path", default=None,
                   help="where megatron-core writes its sample indices (default: a temporary directory)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = PreviewConfig(data_path=args.data_path, lexicon=args.lexicon, tokenizer_type=args.tokenizer_type,
                            tokenizer_model=args.tokenizer_model, seq_length=args.seq_length,
                            codeswitch_ratio=args.codeswitch_ratio, seed=args.seed,
                            codeswitch_seed=args.codeswitch_seed, num_samples=args.num_samples,
                            data_cache_path=args.data_cache_path)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        samples = preview(cfg)
    except (DataError, SidecarError, LexiconError, FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write("\n\n".join(format_preview(s) for s in samples) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
