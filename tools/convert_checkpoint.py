"""Convert checkpoints between Hugging Face Llama / Mistral / Qwen2 / Qwen3 models and megatron_prealign.

    python tools/convert_checkpoint.py --direction hf-to-mcore --hf-path DIR --output DIR \
        --target-tensor-parallel-size N --target-pipeline-parallel-size M
    python tools/convert_checkpoint.py --direction mcore-to-hf --load DIR --output DIR [--hf-assets DIR]

hf-to-mcore writes a weights-only `release` checkpoint (Megatron layout) that the trainer starts
from with --pretrained-checkpoint DIR (or --load DIR); the vocabulary is padded for the target
TP degree, and the tokenizer files and generation config are kept in DIR/hf_assets/. mcore-to-hf
reads any checkpoint (release or iter_N, any TP/PP layout) and writes config.json +
model.safetensors with the tokenizer files and generation config the checkpoint carries.
Either output directory is written under a temporary name and renamed when complete; a non-empty
--output is refused unless --overwrite replaces it as a whole.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.tools.convert_checkpoint")

DIRECTIONS = ("hf-to-mcore", "mcore-to-hf")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--direction", required=True, choices=DIRECTIONS)
    p.add_argument("--hf-path", help="hf-to-mcore: Hugging Face model directory (config.json + weights)")
    p.add_argument("--load", help="mcore-to-hf: checkpoint root (with latest_checkpointed_iteration.txt) "
                                  "or one checkpoint directory")
    p.add_argument("--output", required=True, help="output directory (checkpoint root, or HF model dir)")
    p.add_argument("--target-tensor-parallel-size", type=int, default=1,
                   help="hf-to-mcore: TP degree the checkpoint will be trained at (vocab padding)")
    p.add_argument("--target-pipeline-parallel-size", type=int, default=1,
                   help="hf-to-mcore: PP degree the checkpoint will be trained at (checked against the layers)")
    p.add_argument("--hf-assets", help="mcore-to-hf: directory whose tokenizer files and generation config are "
                                       "copied into the export (default: the ones the checkpoint carries)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --output as a whole (by default it is refused; a conversion never "
                        "mixes its files with what was there)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.direction == "hf-to-mcore":
        if not args.hf_path or args.load:
            parser.error("--direction hf-to-mcore takes --hf-path (and not --load)")
        if args.hf_assets:
            parser.error("--hf-assets applies to --direction mcore-to-hf (hf-to-mcore takes the files in --hf-path)")
    elif not args.load or args.hf_path:
        parser.error("--direction mcore-to-hf takes --load (and not --hf-path)")
    # Imported after the arguments are checked: a usage error needs neither torch nor megatron-core.
    from megatron_prealign.checkpointing import CheckpointError
    from megatron_prealign.convert import ConversionError, convert_hf_to_mcore, convert_mcore_to_hf

    try:
        if args.direction == "hf-to-mcore":
            convert_hf_to_mcore(args.hf_path, args.output,
                                tensor_model_parallel_size=args.target_tensor_parallel_size,
                                pipeline_model_parallel_size=args.target_pipeline_parallel_size,
                                overwrite=args.overwrite)
        else:
            convert_mcore_to_hf(args.load, args.output, hf_assets=args.hf_assets, overwrite=args.overwrite)
    except (ConversionError, CheckpointError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
