"""Merge token datasets (megatron-core IndexedDataset) into one, code-switch sidecars included.

    python tools/merge_datasets.py --input data/shards/shard_00000_text_document \\
        data/shards/shard_00001_text_document --output-prefix data/corpus_text_document
    python tools/merge_datasets.py --input data/shards --output-prefix data/corpus_text_document

The command line of `megatron_prealign.data.merge.merge_datasets` (its module docstring says
what may be merged). Exits with 2 and one error line when the inputs do not belong together or
are not complete datasets, or the output cannot be written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.data.integrity import DataError
from megatron_prealign.data.merge import merge_datasets
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.tools.merge_datasets")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", nargs="+", required=True, metavar="PREFIX_OR_DIR",
        help="dataset prefixes (<prefix>.bin/.idx) in merge order, or directories (all datasets inside, by name)",
    )
    parser.add_argument(
        "--output-prefix", required=True, help="writes <prefix>.{bin,idx} (+ <prefix>_codeswitch.{bin,idx,json})"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        merge_datasets(args.input, args.output_prefix)
    except DataError as exc:  # MergeError, SidecarError: inputs that do not belong together
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
