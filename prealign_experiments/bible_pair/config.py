"""What the English–Spanish benchmark runs: the arms, the model, the token budget.

One pretraining phase per run (`megatron_prealign.pretrain.run`) on the setting's English-heavy
mix (about 10% Spanish tokens). The four arms are the English-Clone demo's (`ARMS`): joint
training, pre-pass only, code-switching only, PreAlign.

Budget rule (the English-Clone demo's, docs/DESIGN.md §5: the pre-pass feeds the model extra
tokens, so equal budgets count them): an arm with the pre-pass spends ``align_steps x 2 x
align_pairs x (mean dictionary-word length)`` tokens there and then ``train_iters`` iterations;
an arm without it runs ``train_iters + extra`` iterations, ``extra`` being those pre-pass tokens
in whole iterations. The other convention, the authors' (the pre-pass is free: every arm runs
``train_iters``), is stated in the report next to it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from prealign_experiments.english_clone.demo.config import ARMS, Arm

__all__ = ["ARMS", "Arm", "BenchConfig", "QUICK", "RunSpec", "prepass_tokens"]


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Knobs of `python -m prealign_experiments.bible_pair` (each is a flag of the same name)."""

    out: str = "runs/bible"
    """Output directory: setting/, one folder per arm and seed, report.md, PNG plots (--out)."""
    arms: tuple[str, ...] = ("joint", "prepass", "codeswitch", "prealign")
    """Arms to run, from joint, prepass, codeswitch, prealign (--arms)."""
    seeds: tuple[int, ...] = (1234, 2345, 3456)
    """One run per arm per seed (--seeds)."""
    num_layers: int = 4
    """Transformer layers (--num-layers)."""
    hidden_size: int = 128
    """Model width (--hidden-size)."""
    ffn_hidden_size: int = 512
    """MLP width (--ffn-hidden-size)."""
    num_attention_heads: int = 4
    """Attention heads (--num-attention-heads)."""
    seq_length: int = 128
    """Context length (--seq-length)."""
    micro_batch_size: int = 16
    """Sequences per microbatch (--micro-batch-size)."""
    global_batch_size: int = 16
    """Sequences per iteration (--global-batch-size)."""
    train_iters: int = 120
    """Pretraining iterations of the arms with the pre-pass (--train-iters)."""
    lr: float = 1e-3
    """Peak learning rate, cosine decay (--lr)."""
    min_lr: float = 1e-4
    """Final learning rate (--min-lr)."""
    lr_warmup_iters: int = 12
    """Warmup iterations (at most a tenth of the run) (--lr-warmup-iters)."""
    weight_decay: float = 0.1
    """AdamW weight decay (--weight-decay)."""
    clip_grad: float = 1.0
    """Gradient-norm clip (--clip-grad)."""
    codeswitch_ratio: float = 0.05
    """Switch probability of the code-switching arms; the authors' 0.05 (--codeswitch-ratio)."""
    align_steps: int = 60
    """Pre-pass steps of the arms with the pre-pass (--align-steps)."""
    align_pairs: int = 128
    """Translation pairs per pre-pass step (--align-pairs)."""
    align_lr: float = 5e-4
    """Pre-pass peak learning rate; the authors' 5e-4 (--align-lr)."""
    curve_points: int = 3
    """Intermediate checkpoints per run for the per-language perplexity curves (--curve-points)."""
    curve_tokens: int = 8192
    """Held-out tokens per language at each curve point (--curve-tokens)."""
    eval_tokens: int = 32768
    """Held-out tokens per language for the final perplexity (--eval-tokens)."""
    retrieval_candidates: int = 100
    """N: each English verse's Spanish translation is looked for among N verses (--retrieval-candidates)."""
    alignment_words: int = 1000
    """Dictionary words (whole translation groups, seeded) for the dictionary alignment gap (--alignment-words)."""
    setting_args: tuple[str, ...] = ()
    """Extra flags for python -m prealign_experiments.bible_pair.setting, e.g. ("--spanish-share", "0.2")."""
    threads: int = 1
    """CPU threads per process; on a shared 2-core machine 1 is fastest (OpenMP threads spin-wait
    for each other) (--threads)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown or not self.arms:
            raise ValueError(f"--arms must be a non-empty subset of {sorted(ARMS)}, got {list(self.arms)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("--seeds must be distinct and non-empty")
        for name in ("train_iters", "micro_batch_size", "global_batch_size", "seq_length", "curve_tokens",
                     "eval_tokens", "align_pairs", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.align_steps < 0 or self.curve_points < 0:
            raise ValueError("--align-steps and --curve-points must be >= 0")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError("--global-batch-size must be a multiple of --micro-batch-size")
        if not 0.0 < self.codeswitch_ratio <= 1.0:
            raise ValueError("--codeswitch-ratio must be in (0, 1]")
        if self.retrieval_candidates < 2 or self.alignment_words < 4:
            raise ValueError("--retrieval-candidates must be >= 2 and --alignment-words >= 4")
        if any(ARMS[a].prepass for a in self.arms) and self.align_steps == 0:
            raise ValueError("arms with the pre-pass need --align-steps > 0")

    @property
    def tokens_per_iteration(self) -> int:
        return self.global_batch_size * self.seq_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


QUICK = {"arms": ("joint", "prealign"), "seeds": (1,), "num_layers": 1, "hidden_size": 32, "ffn_hidden_size": 64,
         "num_attention_heads": 2, "seq_length": 32, "micro_batch_size": 4, "global_batch_size": 4,
         "train_iters": 6, "lr_warmup_iters": 1, "align_steps": 2, "align_pairs": 8, "curve_points": 1,
         "curve_tokens": 256, "eval_tokens": 512, "retrieval_candidates": 8, "alignment_words": 64,
         "setting_args": ("--vocab-size", "600", "--retrieval-pairs", "40", "--eval-every", "40")}
"""``--quick``: a tiny model and a few steps, every stage exercised in seconds (tests, smoke runs)."""


def prepass_tokens(cfg: BenchConfig, mean_word_tokens: float) -> int:
    """Tokens the pre-pass feeds the model: steps x words per step x mean word length."""
    return int(round(cfg.align_steps * 2 * cfg.align_pairs * mean_word_tokens))


@dataclass
class RunSpec:
    """One training run: an arm at a seed, with its iterations and output folder."""

    arm: Arm
    seed: int
    train_iters: int
    directory: str

    @property
    def name(self) -> str:
        return f"{self.arm.name}-s{self.seed}"
