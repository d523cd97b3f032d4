"""`python -m megatron_prealign.pretrain`: PreAlign pretraining on megatron-core.

parse config -> switch the CPU layer on (no GPU) -> init process groups -> assemble the run
(tokenizer, lexicon, model, optimizer, restore) -> open the data (fails here, not after the
pre-pass) -> stage "align" -> stage "pretrain" -> close. A signal in either stage saves and exits 0;
errors in the user's files (checkpoints, datasets and sidecars, lexicons, the extension, paths)
are one line, exit 2, on every rank alike; bad flags exit 2 with argparse's usage line.
Launch with `torchrun --nproc-per-node N -m megatron_prealign.pretrain ...`, with `srun` (one
task per GPU), or as a single process with RANK=0 WORLD_SIZE=1.
"""
from __future__ import annotations

import sys

import yaml

from megatron_prealign.log import quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.config import RunConfig, check_runtime_support, parse_args  # noqa: E402
from megatron_prealign.distributed import destroy_distributed, init_distributed  # noqa: E402
from megatron_prealign.platform import activate_cpu_compat  # noqa: E402
from megatron_prealign.checkpointing import CheckpointError  # noqa: E402
from megatron_prealign.data.codeswitch import ExtensionNotBuilt  # noqa: E402
from megatron_prealign.data.integrity import DataError  # noqa: E402
from megatron_prealign.lexicon import LexiconError  # noqa: E402
from megatron_prealign.run import Run, resolve_dry_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    if args.dry_run and args.plan:
        import os

        from megatron_prealign.config import parse_flat
        from megatron_prealign.plan import plan_from_flat

        print(plan_from_flat(parse_flat(argv)[0], world_size=int(os.environ.get("WORLD_SIZE", "1"))).render(), end="")
        return 0
    if args.dry_run:
        import os

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        try:
            resolved = resolve_dry_run(cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")))
        except (OSError, ValueError, CheckpointError) as exc:  # what the run would stop on, as it would say it
            print(f"python -m megatron_prealign.pretrain: error: {exc}", file=sys.stderr)
            return 2
        print(yaml.safe_dump({"resolved": resolved}, sort_keys=False), end="")
        return 0
    try:
        run(cfg)
    except (CheckpointError, DataError, LexiconError, ExtensionNotBuilt) as exc:  # named in the message
        print(f"python -m megatron_prealign.pretrain: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that is missing, a directory, read-only, or a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"python -m megatron_prealign.pretrain: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    return 0


def run(cfg: RunConfig) -> None:
    """Run the stages of `cfg` in this process (one rank of the launch: torchrun's or Slurm's
    environment, or RANK=0 WORLD_SIZE=1 for a single process)."""
    check_runtime_support(cfg)
    activate_cpu_compat()  # megatron-core on the CPU when there is no GPU; inert with CUDA
    pgs = init_distributed(cfg.parallel, seed=cfg.training.seed,
                           virtual_pipeline_size=cfg.parallel.virtual_pipeline_size(cfg.model.num_layers))
    try:
        job = Run(cfg, pgs)
        try:
            job.prepare_data()
            job.align()
            if not (cfg.training.align_only or job.stopped):
                job.pretrain()
        finally:
            job.close()
    finally:
        destroy_distributed()


if __name__ == "__main__":
    sys.exit(main())
