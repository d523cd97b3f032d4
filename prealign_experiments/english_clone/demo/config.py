"""What the demo runs: the arms, the model, the token budget, and the data mix.

Every run has two phases, both through the trainer (`megatron_prealign.pretrain.run`):

1. **Pretraining** on English and clone text (the setting's clone share): the arm's method
   (pre-pass and/or input-only code-switching) applies here.
2. **English-only new material** (`phase2_iters`, identical for every arm), started from the
   phase-1 weights with a fresh optimizer (``pretrained_checkpoint``): the knowledge facts and
   the transfer skill at high weight, mixed with the same English and clone text; code-switching
   arms keep switching. Facts spread thinly over pretraining were not learned even in English by
   the 4-layer model (250 exposures each at 7% of the tokens: chance accuracy), while a short
   dense phase teaches them.

Perplexity and the alignment gap are measured at the end of phase 1 (the pretraining comparison);
knowledge and transfer at the end of phase 2.

Budget rule (docs/DESIGN.md §5: the pre-pass feeds the model extra tokens, so equal token
budgets count them): every arm processes the same number of tokens. An arm with the
alignment pre-pass spends ``align_steps x 2 x align_pairs x (mean dictionary-word length)``
tokens there and ``train_iters`` iterations of phase 1; an arm without it runs phase 1 for
``train_iters + extra`` iterations, ``extra`` being the pre-pass tokens in whole iterations.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ARMS", "Arm", "DemoConfig", "RunSpec", "blend_weights", "exposures", "prepass_tokens"]


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    prepass: bool
    codeswitch: bool


ARMS = {
    "joint": Arm("joint", "joint training", prepass=False, codeswitch=False),
    "prepass": Arm("prepass", "pre-pass only", prepass=True, codeswitch=False),
    "codeswitch": Arm("codeswitch", "code-switching only", prepass=False, codeswitch=True),
    "prealign": Arm("prealign", "PreAlign", prepass=True, codeswitch=True),
}
"""The four arms of ``--full``; the default demo runs ``joint`` and ``prealign``."""


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Knobs of `python -m prealign_experiments.english_clone` (each is a flag of the same name)."""

    out: str = "runs/demo"
    """Output directory: setting/, one folder per arm and seed, report.md, PNG plots (--out)."""
    arms: tuple[str, ...] = ("joint", "prealign")
    """Arms to run, from joint, prepass, codeswitch, prealign (--arms)."""
    seeds: tuple[int, ...] = (1234,)
    """One run per arm per seed (--seeds)."""
    # model (docs/DESIGN.md §5 trial: 4 layers, d=160, context 128, untied)
    num_layers: int = 4
    """Transformer layers (--num-layers)."""
    hidden_size: int = 160
    """Model width (--hidden-size)."""
    ffn_hidden_size: int = 640
    """MLP width (--ffn-hidden-size)."""
    num_attention_heads: int = 4
    """Attention heads (--num-attention-heads)."""
    seq_length: int = 128
    """Context length (--seq-length)."""
    # training
    micro_batch_size: int = 16
    """Sequences per microbatch (--micro-batch-size)."""
    global_batch_size: int = 16
    """Sequences per iteration (--global-batch-size)."""
    train_iters: int = 450
    """Phase-1 (pretraining) iterations of the arms with the pre-pass (--train-iters)."""
    phase2_iters: int = 150
    """Phase-2 (English-only new material) iterations, every arm (--phase2-iters)."""
    lr: float = 1e-3
    """Peak learning rate of both phases, cosine decay (--lr)."""
    min_lr: float = 1e-4
    """Final learning rate (--min-lr)."""
    lr_warmup_iters: int = 30
    """Warmup iterations (at most a tenth of a phase) (--lr-warmup-iters)."""
    weight_decay: float = 0.1
    """AdamW weight decay (--weight-decay)."""
    clip_grad: float = 1.0
    """Gradient-norm clip (--clip-grad)."""
    codeswitch_ratio: float = 0.05
    """Switch probability of the code-switching arms; the authors' 0.05 (--codeswitch-ratio)."""
    # pre-pass
    align_steps: int = 200
    """Pre-pass steps of the arms with the pre-pass (--align-steps)."""
    align_pairs: int = 256
    """Translation pairs per pre-pass step (--align-pairs)."""
    align_lr: float = 5e-4
    """Pre-pass peak learning rate; the authors' 5e-4 (--align-lr)."""
    # phase-2 data mix
    knowledge_share: float = 0.4
    """Share of phase-2 tokens that are knowledge facts (--knowledge-share)."""
    transfer_share: float = 0.3
    """Share of phase-2 tokens that are transfer-skill examples (--transfer-share)."""
    # evaluation
    curve_points: int = 4
    """Intermediate checkpoints per run for the per-language loss curves (--curve-points)."""
    curve_tokens: int = 16384
    """Held-out tokens per language at each curve point (--curve-tokens)."""
    eval_tokens: int = 65536
    """Held-out tokens per language for the final perplexity (--eval-tokens)."""
    # setting (flags of python -m prealign_experiments.english_clone.setting)
    setting_args: tuple[str, ...] = ()
    """Extra flags for the setting builder (python -m prealign_experiments.english_clone.setting),
    e.g. ("--knowledge-entities", "20")."""
    threads: int = 0
    """CPU threads per process (OMP_NUM_THREADS of the trainers, torch threads of the evaluation);
    0 keeps torch's default (one per core). On a machine busy with other work, 1 can be several
    times faster than 2: OpenMP threads spin-wait for each other (--threads)."""
    keep_checkpoints: bool = False
    """Keep intermediate checkpoints (otherwise only each run's final one stays) (--keep-checkpoints)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown or not self.arms:
            raise ValueError(f"--arms must be a non-empty subset of {sorted(ARMS)}, got {list(self.arms)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("--seeds must be distinct and non-empty")
        for name in ("train_iters", "phase2_iters", "micro_batch_size", "global_batch_size", "seq_length",
                     "curve_tokens", "eval_tokens", "align_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.align_steps < 0 or self.curve_points < 0 or self.threads < 0:
            raise ValueError("--align-steps, --curve-points and --threads must be >= 0")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError("--global-batch-size must be a multiple of --micro-batch-size")
        if not 0.0 < self.codeswitch_ratio <= 1.0:
            raise ValueError("--codeswitch-ratio must be in (0, 1]")
        if self.knowledge_share <= 0 or self.transfer_share <= 0 or self.knowledge_share + self.transfer_share >= 1:
            raise ValueError("--knowledge-share and --transfer-share must be > 0 and sum to less than 1")
        if any(ARMS[a].prepass for a in self.arms) and self.align_steps == 0:
            raise ValueError("arms with the pre-pass need --align-steps > 0")

    @property
    def tokens_per_iteration(self) -> int:
        return self.global_batch_size * self.seq_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prepass_tokens(cfg: DemoConfig, mean_word_tokens: float) -> int:
    """Tokens the pre-pass feeds the model: steps x words per step x mean word length."""
    return int(round(cfg.align_steps * 2 * cfg.align_pairs * mean_word_tokens))


def blend_weights(cfg: DemoConfig, tokens: dict[str, int]) -> dict[str, dict[str, float]]:
    """Blend weights of the two phases, ``{"phase1": {prefix: w}, "phase2": {prefix: w}}``.

    English and clone text keep their natural proportion (the setting's clone share) in both
    phases; phase 2 adds the knowledge facts and the transfer examples at their shares.

    Args:
        tokens: token counts of the setting's prefixes (manifest ``stats.tokens``).
    """
    clone_share = tokens["clone_train"] / (tokens["en_train"] + tokens["clone_train"])
    text = 1.0 - cfg.knowledge_share - cfg.transfer_share
    return {
        "phase1": {"en_train": 1.0 - clone_share, "clone_train": clone_share},
        "phase2": {"en_train": text * (1 - clone_share), "clone_train": text * clone_share,
                   "knowledge_en": cfg.knowledge_share, "transfer_en": cfg.transfer_share},
    }


def exposures(cfg: DemoConfig, tokens: dict[str, int]) -> dict[str, float]:
    """How often phase 2 shows each knowledge document and the transfer set (expected)."""
    phase2_tokens = cfg.phase2_iters * cfg.tokens_per_iteration
    return {"knowledge_document": cfg.knowledge_share * phase2_tokens / tokens["knowledge_en"],
            "transfer_epochs": cfg.transfer_share * phase2_tokens / tokens["transfer_en"]}


@dataclass
class RunSpec:
    """One training run: an arm at a seed, with its iterations and output folder."""

    arm: Arm
    seed: int
    train_iters: int
    """Phase-1 iterations."""
    directory: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.arm.name}-s{self.seed}"
