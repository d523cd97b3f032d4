"""The DeepSpeed side of a run (`megatron_prealign.run.Run` with `--deepspeed-config`): the
checked JSON file, one engine per stage built from it, and the checkpoint.

Checkpoints keep the toolkit's format for everything but the optimizer: the model's tensors
(megatron-core dist_checkpointing, gathered from ZeRO-3 partitions), the LR schedule, the RNG
streams and prealign_state.json (with `"backend": "deepspeed"` and the ZeRO stage), so
conversion to Hugging Face, the evaluation tools and the default backend read them unchanged.
The ZeRO optimizer state is DeepSpeed's own checkpoint in `iter_N/deepspeed/`, which DeepSpeed
can only load at the same tensor- and data-parallel sizes and ZeRO stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from megatron_prealign.checkpointing import CheckpointError, load_scheduler_state, resolve_checkpoint_dir, \
    save_checkpoint
from megatron_prealign.config import RunConfig
from megatron_prealign.deepspeed.config import check_deepspeed_json, read_deepspeed_json, stage_deepspeed_json
from megatron_prealign.deepspeed.engine import DeepSpeedBackend, full_parameters, log_engine, prepare_runtime
from megatron_prealign.optim import OptimConfig

BACKEND = "deepspeed"


class DeepSpeedStages:
    """Builds each stage's `DeepSpeedBackend` and writes/reads the run's checkpoints.

    Args:
        cfg: the run config (`cfg.deepspeed.config` names the JSON file).
        pg_collection: the run's process groups.
        global_batch_size: samples per pretraining step.
    """

    def __init__(self, cfg: RunConfig, pg_collection, *, global_batch_size: int):
        self.cfg, self.pgs, self.global_batch_size = cfg, pg_collection, global_batch_size
        self.path = cfg.deepspeed.config
        self.settings = read_deepspeed_json(self.path)
        self.zero_stage = check_deepspeed_json(self.settings, self.path, bf16=cfg.model.bf16, fp16=cfg.model.fp16)
        self._stage_settings()  # the file's batch keys against the flags, before anything runs
        prepare_runtime()

    def _stage_settings(self, *, micro_batch_size: int | None = None, num_microbatches: int | None = None,
                        clip_grad: float | None = None) -> dict[str, Any]:
        """Pretraining's settings by default; the pre-pass passes its own batch and clipping."""
        cfg, dp = self.cfg, self.pgs.dp.size()
        pretraining = micro_batch_size is None
        if pretraining:
            micro_batch_size = cfg.training.micro_batch_size
            if self.global_batch_size % (micro_batch_size * dp):
                raise ValueError(f"--global-batch-size {self.global_batch_size} must be a multiple of "
                                 f"--micro-batch-size x data-parallel size = {micro_batch_size} x {dp}")
            num_microbatches = self.global_batch_size // (micro_batch_size * dp)
            clip_grad = cfg.optim.clip_grad
        return stage_deepspeed_json(self.settings, self.path, micro_batch_size=micro_batch_size,
                                    num_microbatches=num_microbatches, data_parallel_size=dp, clip_grad=clip_grad,
                                    bf16=cfg.model.bf16, fp16=cfg.model.fp16, check_against_flags=pretraining)

    def pretraining_backend(self, module) -> DeepSpeedBackend:
        """The pretraining engine over `module`, with the run's optimizer and schedule."""
        training = self.cfg.training
        backend = DeepSpeedBackend(module, self.cfg.optim, self._stage_settings(), train_iters=training.train_iters,
                                   samples_per_step=self.global_batch_size, pg_collection=self.pgs)
        log_engine(backend, "pretraining")
        return backend

    def prepass_backend(self, module, optim_cfg: OptimConfig, steps: int) -> DeepSpeedBackend:
        """The pre-pass's own engine (its optimizer is discarded afterwards, as on the default
        backend): a microbatch is one rank's share of a contrastive pool's words."""
        align = self.cfg.align
        words = 2 * align.pairs_per_batch // (align.num_microbatches * self.pgs.dp.size())
        settings = self._stage_settings(micro_batch_size=max(words, 1), num_microbatches=align.num_microbatches,
                                        clip_grad=optim_cfg.clip_grad)
        backend = DeepSpeedBackend(module, optim_cfg, settings, train_iters=steps, samples_per_step=1,
                                   pg_collection=self.pgs)
        log_engine(backend, "alignment pre-pass")
        return backend

    # -- checkpoints -----------------------------------------------------------------------

    def save(self, root: str | Path, *, module, backend: DeepSpeedBackend | None, state: dict[str, Any],
             iteration: int, replaceable=()) -> Path:
        """A checkpoint of `module` [with the engine's optimizer and the LR schedule] (collective);
        `replaceable` as in `checkpointing.save_checkpoint`."""
        return save_checkpoint(root, model=module, iteration=iteration, pg_collection=self.pgs, replaceable=replaceable,
                               state={**state, "backend": BACKEND, "zero_stage": self.zero_stage},
                               scheduler=backend.scheduler if backend is not None else None,
                               write_optimizer=backend.save_optimizer if backend is not None else None,
                               model_context=lambda: full_parameters(module.parameters()))

    def check_resumable(self, path: str | Path, meta: dict[str, Any]) -> None:
        """Refuse optimizer state DeepSpeed cannot load: another ZeRO stage or layout."""
        saved = meta.get("layout", {})
        ours = {"tensor_model_parallel_size": self.pgs.tp.size(), "data_parallel_size": self.pgs.dp.size()}
        theirs = {key: saved.get(key) for key in ours}
        if meta.get("zero_stage") != self.zero_stage or theirs != ours:
            raise CheckpointError(
                f"{path} holds DeepSpeed ZeRO-{meta.get('zero_stage')} optimizer state for TP={theirs['tensor_model_parallel_size']} "
                f"DP={theirs['data_parallel_size']}; this run is ZeRO-{self.zero_stage} at TP={ours['tensor_model_parallel_size']} "
                f"DP={ours['data_parallel_size']}, which DeepSpeed cannot load: resume with the same "
                f"--deepspeed-config and layout, or start from its weights with --pretrained-checkpoint")

    def load_optimizer(self, path: str | Path, backend: DeepSpeedBackend) -> None:
        """Restore the engine's optimizer state and the LR schedule of checkpoint `path`."""
        ckpt = resolve_checkpoint_dir(path)
        backend.load_optimizer(ckpt, load_scheduler_state(ckpt))
