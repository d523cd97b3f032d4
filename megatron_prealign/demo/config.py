"""What the demo runs: the arms, the model, the token budget, and the data mix.

Budget rule (DESIGN.md §5: the pre-pass feeds the model extra tokens, so "identical token
budgets" must count them): every arm processes the same number of tokens. An arm with the
alignment pre-pass spends ``align_steps x 2 x align_pairs x (mean dictionary-word length)``
tokens there and ``train_iters`` iterations of pretraining; an arm without it pretrains for
``train_iters + extra`` iterations, ``extra`` being the pre-pass tokens in whole iterations.

Data mix (blend weights of the four training prefixes), computed once from the base budget
``train_iters x global_batch x seq_length`` and shared by every arm: the knowledge documents so
that each is seen about `knowledge_exposures` times, the transfer examples `transfer_epochs`
times, and the rest English and clone text in their natural proportion (the setting's clone
share). Arms with extra iterations read the same mix a little longer (slightly more fact
exposures for the baseline, which can only favour it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ARMS", "Arm", "DemoConfig", "RunSpec", "blend_weights", "prepass_tokens"]


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
    """Knobs of `python -m megatron_prealign.demo` (each is a flag of the same name)."""

    out: str = "runs/demo"
    """Output directory: setting/, one folder per arm and seed, report.md, PNG plots (--out)."""
    arms: tuple[str, ...] = ("joint", "prealign")
    """Arms to run, from joint, prepass, codeswitch, prealign (--arms)."""
    seeds: tuple[int, ...] = (1234,)
    """One run per arm per seed (--seeds)."""
    # model (DESIGN.md §5 trial: 4 layers, d=160, context 128, untied)
    num_layers: int = 4
    hidden_size: int = 160
    ffn_hidden_size: int = 640
    num_attention_heads: int = 4
    seq_length: int = 128
    # pretraining
    micro_batch_size: int = 16
    global_batch_size: int = 16
    train_iters: int = 600
    """Pretraining iterations of the arms with the pre-pass (--train-iters)."""
    lr: float = 1e-3
    min_lr: float = 1e-4
    lr_warmup_iters: int = 30
    weight_decay: float = 0.1
    clip_grad: float = 1.0
    codeswitch_ratio: float = 0.05
    """Switch probability of the code-switching arms; the authors' 0.05 (--codeswitch-ratio)."""
    # pre-pass
    align_steps: int = 200
    align_pairs: int = 256
    align_lr: float = 5e-4
    # data mix
    knowledge_exposures: float = 100.0
    """Target times each knowledge document is seen in the base budget (--knowledge-exposures)."""
    transfer_epochs: float = 1.0
    """Target passes over the transfer examples in the base budget (--transfer-epochs)."""
    # evaluation
    curve_points: int = 4
    """Intermediate checkpoints per run for the per-language loss curves (--curve-points)."""
    curve_tokens: int = 16384
    """Held-out tokens per language at each curve point (--curve-tokens)."""
    eval_tokens: int = 65536
    """Held-out tokens per language for the final perplexity (--eval-tokens)."""
    # setting (passed to tools/make_english_clone.py)
    setting_args: tuple[str, ...] = ()
    """Extra flags for tools/make_english_clone.py, e.g. ("--knowledge-entities", "20")."""
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
        for name in ("train_iters", "micro_batch_size", "global_batch_size", "seq_length", "curve_tokens",
                     "eval_tokens", "align_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.align_steps < 0 or self.curve_points < 0 or self.threads < 0:
            raise ValueError("--align-steps, --curve-points and --threads must be >= 0")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError("--global-batch-size must be a multiple of --micro-batch-size")
        if not 0.0 < self.codeswitch_ratio <= 1.0:
            raise ValueError("--codeswitch-ratio must be in (0, 1]")
        if self.knowledge_exposures < 0 or self.transfer_epochs < 0:
            raise ValueError("--knowledge-exposures and --transfer-epochs must be >= 0")
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


def blend_weights(cfg: DemoConfig, tokens: dict[str, int]) -> dict[str, float]:
    """Blend weights of en_train, clone_train, knowledge_en, transfer_en (see module docstring).

    Args:
        tokens: token counts of the setting's prefixes (manifest ``stats.tokens``).

    Raises:
        ValueError: the synthetic sets would take the whole budget.
    """
    budget = cfg.train_iters * cfg.tokens_per_iteration
    knowledge = cfg.knowledge_exposures * tokens["knowledge_en"] / budget
    transfer = cfg.transfer_epochs * tokens["transfer_en"] / budget
    text = 1.0 - knowledge - transfer
    if text <= 0.5:
        raise ValueError(
            f"knowledge ({knowledge:.1%}) and transfer ({transfer:.1%}) examples would take more than half of "
            f"the {budget} training tokens; lower --knowledge-exposures / --transfer-epochs or raise --train-iters"
        )
    clone_share = tokens["clone_train"] / (tokens["en_train"] + tokens["clone_train"])
    return {"en_train": text * (1 - clone_share), "clone_train": text * clone_share,
            "knowledge_en": knowledge, "transfer_en": transfer}


@dataclass
class RunSpec:
    """One training run: an arm at a seed, with its iterations and output folder."""

    arm: Arm
    seed: int
    train_iters: int
    directory: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.arm.name}-s{self.seed}"
