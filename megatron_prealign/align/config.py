"""Config of the alignment pre-pass (`--align-*` flags), read without torch."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class AlignConfig:
    """Alignment pre-pass knobs. Defaults follow the authors' runs unless a field says otherwise
    (see align/README.md for the reasons)."""

    steps: int = 5000
    """Optimizer steps of the pre-pass; 0 skips training (--align-steps). Authors: ~5,000."""
    token_budget: int | None = None
    """Size the pre-pass by the word tokens it computes on instead of by steps
    (--align-token-budget; an alternative to --align-steps): each step runs 2 x pairs words, each
    padded to the step's longest word, so steps = budget / the mean padded tokens of a step,
    measured on the run's own sampler (`steps_for_token_budget`). Compare it with pretraining's
    tokens (--train-iters x global batch x sequence length) to give the pre-pass a share."""
    lr: float = 5e-4
    """Peak learning rate (--align-lr). Authors: 5e-4."""
    min_lr: float = 0.0
    """LR at the end of the linear decay (--align-min-lr); the authors' HF Trainer decays to 0."""
    warmup_fraction: float = 0.05
    """Share of `steps` spent in linear warmup (--align-warmup-fraction). Authors: 5%."""
    weight_decay: float = 0.1
    """Decoupled weight decay (--align-weight-decay). Authors: 0.1."""
    clip_grad: float = 1.0
    """Global gradient-norm clip, 0 disables (--align-clip-grad); the HF Trainer default."""
    temperature: float = 0.1
    """InfoNCE temperature τ on cosine similarities (--align-temperature). Authors: 0.1."""
    align_weight: float = 0.5
    """Weight of the contrastive term (--align-weight). Authors: 0.1 (Jul-2024), 0.5 (Dec-2024);
    0.5 measured better here (README)."""
    lm_weight: float = 1.0
    """Weight of the next-token loss on the word sequences (--align-lm-weight)."""
    collapse_weight: float = 0.0
    """Weight of max(0, mean pairwise cosine) per layer, the Dec-2024 anti-collapse term; 0 turns
    it off as in the Jul-2024 code (--align-collapse-weight)."""
    layers: str = "all"
    """Layer slots to align (--align-layers): `all`; `top` (the last transformer layer's output);
    or comma-separated slot indices, 0 = embedding output, 1..L = transformer layer outputs,
    L+1 = output-embedding rows."""
    pairs_per_batch: int = 256
    """Translation pairs per optimizer step over all data-parallel ranks (2 words each)
    (--align-pairs-per-batch). Authors: 256 per GPU."""
    num_microbatches: int = 1
    """Microbatches per step (--align-num-microbatches); each one, gathered over data-parallel
    ranks, is one contrastive pool. Use >= the pipeline size to keep 1F1B busy."""
    max_word_tokens: int = 16
    """Entries with more tokens are not trained on or evaluated (--align-max-word-tokens)."""
    heldout_fraction: float = 0.05
    """Share of translation groups kept out of training to measure the alignment gap on unseen
    words (--align-heldout-fraction); 0 measures it on training entries instead."""
    eval_max_words: int = 2048
    """At most this many words (whole groups) are used to measure the gap (--align-eval-max-words)."""
    log_interval: int = 50
    """Log the losses every this many steps (--align-log-interval)."""
    seed: int = 1234
    """Seed of the pair sampling and the held-out split (--align-seed); a run without the flag
    uses its --seed, so runs with different seeds also differ in the split and the pairs."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("--align-steps must be >= 0")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError("--align-token-budget must be >= 1 (word tokens)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError("--align-lr must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError("--align-min-lr must be in [0, --align-lr]")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("--align-warmup-fraction must be in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError("--align-weight-decay must be >= 0")
        if self.clip_grad < 0:
            raise ValueError("--align-clip-grad must be >= 0")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError("--align-temperature must be > 0")
        for name, flag in (("align_weight", "--align-weight"), ("lm_weight", "--align-lm-weight"),
                           ("collapse_weight", "--align-collapse-weight")):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{flag} must be a finite number >= 0")
        if self.align_weight == 0 and self.lm_weight == 0 and self.collapse_weight == 0:
            raise ValueError("--align-weight, --align-lm-weight and --align-collapse-weight are all 0")
        self._parse_layers()
        if self.pairs_per_batch < 1:
            raise ValueError("--align-pairs-per-batch must be >= 1")
        if self.num_microbatches < 1 or self.pairs_per_batch % self.num_microbatches:
            raise ValueError("--align-num-microbatches must be >= 1 and divide --align-pairs-per-batch")
        if self.max_word_tokens < 1:
            raise ValueError("--align-max-word-tokens must be >= 1")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError("--align-heldout-fraction must be in [0, 1)")
        if self.eval_max_words < 2:
            raise ValueError("--align-eval-max-words must be >= 2")
        if self.log_interval < 1:
            raise ValueError("--align-log-interval must be >= 1")

    def _parse_layers(self) -> tuple[int, ...] | str:
        value = self.layers.strip().lower()
        if value in ("all", "top"):
            return value
        try:
            indices = tuple(int(part) for part in value.split(","))
        except ValueError:
            raise ValueError(f"--align-layers must be all, top or comma-separated slot indices, got {self.layers!r}") from None
        if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
            raise ValueError(f"--align-layers indices must be distinct and >= 0, got {self.layers!r}")
        return tuple(sorted(indices))

    def layer_slots(self, num_layers: int) -> tuple[int, ...]:
        """Selected slot indices for a model with `num_layers` transformer layers."""
        parsed = self._parse_layers()
        if parsed == "all":
            return tuple(range(num_layers + 2))
        if parsed == "top":
            return (num_layers,)
        if max(parsed) > num_layers + 1:
            raise ValueError(f"--align-layers {self.layers}: slot indices go up to {num_layers + 1} "
                             f"for a {num_layers}-layer model")
        return parsed
