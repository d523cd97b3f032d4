"""Plan a run before launching it: exact parameter count, memory per GPU, FLOPs and time per
iteration, and the alignment pre-pass's share of the run.

    python tools/plan_run.py --config examples/configs/gpt_1b.yaml --nproc-per-node 8 \\
        --tokenizer-model tok.model --lexicon en-de.lex [--json]

Takes every flag of `python -m megatron_prealign.pretrain` (and its --config files) plus the
launch size and the planner's assumptions below.
"""
from __future__ import annotations

import argparse
import json
import sys

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.config import parse_flat  # noqa: E402
from megatron_prealign.plan import DEFAULT_MFU, SPEC_BF16_TFLOPS, plan_from_flat  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--world-size", type=int, help="processes (GPUs) of the launch; default 1")
    parser.add_argument("--nproc-per-node", type=int, help="torchrun's processes per node (x --nnodes)")
    parser.add_argument("--nnodes", type=int, default=1, help="nodes (with --nproc-per-node)")
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        help="whose kernels to plan for; default cuda for bf16/fp16 or where CUDA is present")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"assumed MFU (default {DEFAULT_MFU})")
    parser.add_argument("--peak-tflops", type=float, default=SPEC_BF16_TFLOPS,
                        help=f"peak TFLOP/s of one device (default {SPEC_BF16_TFLOPS:g}, H100/H200 bf16 dense)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        print("\nRun flags (as python -m megatron_prealign.pretrain --help lists them) follow.")
        return 0
    if args.world_size is not None and args.nproc_per_node is not None:
        parser.error("give --world-size or --nproc-per-node/--nnodes, not both")
    world_size = args.world_size or (args.nproc_per_node or 1) * args.nnodes
    values, _ = parse_flat(rest)
    try:
        plan = plan_from_flat(values, world_size=world_size, device=args.device, mfu=args.mfu,
                              peak_tflops=args.peak_tflops)
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.render(), end="" if not args.json else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
