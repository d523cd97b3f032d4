"""`python -m megatron_prealign.pretrain`: PreAlign pretraining on megatron-core.

parse config -> init process groups -> build tokenizer, model, optimizer -> restore checkpoint
-> stage "align" (pre-pass, unless already done) -> stage "pretrain" -> close.
Launch with `torchrun --nproc-per-node N -m megatron_prealign.pretrain ...`, with `srun` (one
task per GPU), or as a single process with RANK=0 WORLD_SIZE=1.
"""
from __future__ import annotations

import sys

import yaml

from megatron_prealign.log import get_logger, log_rank0, quiet_optional_accelerator_warnings

quiet_optional_accelerator_warnings()  # before megatron-core is imported below

from megatron_prealign.config import RunConfig, check_runtime_support, parse_args  # noqa: E402
from megatron_prealign.distributed import destroy_distributed, init_distributed  # noqa: E402
from megatron_prealign.training import assemble  # noqa: E402
from megatron_prealign.training.loop import Trainer  # noqa: E402

logger = get_logger("megatron_prealign.pretrain")  # not __name__: that is "__main__" under -m


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    if args.dry_run and args.plan:
        import os

        from megatron_prealign.config import parse_flat
        from megatron_prealign.plan import plan_from_flat

        print(plan_from_flat(parse_flat(argv)[0], world_size=int(os.environ.get("WORLD_SIZE", "1"))).render(), end="")
        return 0
    if args.dry_run:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    run(cfg)
    return 0


def run(cfg: RunConfig) -> None:
    """Run the stages of `cfg` in this process (one rank of the launch: torchrun's or Slurm's
    environment, or RANK=0 WORLD_SIZE=1 for a single process)."""
    check_runtime_support(cfg)
    pgs = init_distributed(cfg.parallel, seed=cfg.training.seed)
    try:
        tokenizer = assemble.build_run_tokenizer(cfg)
        start = assemble.read_start_checkpoint(cfg)
        model_cfg = assemble.resolve_model_config(cfg, tokenizer, start)
        identity = assemble.run_identity(cfg, tokenizer, start)
        model, optimizer, scheduler = assemble.build_model_and_optimizer(cfg, model_cfg, pgs)
        state = assemble.restore(cfg, model, optimizer, scheduler, model_cfg, identity)
        current = {"optimizer": optimizer, "scheduler": scheduler}
        save = assemble.make_save_fn(cfg, model, model_cfg, identity,
                                     lambda: (current["optimizer"], current["scheduler"]))

        # Stage "align": after any checkpoint is loaded, so it also aligns converted models.
        if cfg.align.steps > 0 and not state.align_finished:
            report = assemble.run_align_stage(cfg, model, tokenizer, pgs)
            log_rank0(logger, "alignment pre-pass: %d steps in %.0f s", report.steps, report.seconds)
            state.align_finished = True
            # Pretraining starts with a fresh optimizer and schedule from the aligned weights.
            current["optimizer"], current["scheduler"] = assemble.build_optimizer_and_scheduler(cfg, model, pgs)
            if cfg.training.save:
                save(state)
        if cfg.training.align_only:
            return

        # Stage "pretrain".
        datasets = assemble.build_train_datasets(cfg, tokenizer)
        trainer = Trainer(cfg.training, model=model, optimizer=current["optimizer"],
                          scheduler=current["scheduler"], datasets=datasets, state=state,
                          seq_length=cfg.model.seq_length, num_workers=cfg.data.num_workers, save_fn=save,
                          eval_hooks=assemble.eval_hooks(cfg, model_cfg, tokenizer, pgs))
        try:
            trainer.train()
        finally:
            trainer.close()
    finally:
        destroy_distributed()


if __name__ == "__main__":
    sys.exit(main())
