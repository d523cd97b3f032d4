"""Configs of the pretraining stage (Megatron-LM flag names), read without torch: the loop and
checkpoint cadence (`TrainingConfig`, consumed by loop.py) and the data (`DataConfig`, consumed
by data.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingConfig:
    """Loop, batch, checkpoint and logging knobs (Megatron-LM flag names)."""

    micro_batch_size: int = 1
    """Samples per microbatch per data-parallel rank (--micro-batch-size)."""
    global_batch_size: int | None = None
    """Samples per optimizer step over all ranks; None = micro-batch-size x DP (--global-batch-size)."""
    train_iters: int = 100
    """Optimizer steps of pretraining (--train-iters); see --train-samples."""
    train_samples: int | None = None
    """Size the run in samples instead of steps: train until this many samples are consumed
    (--train-samples; the learning-rate schedule is then given in samples too)."""
    rampup_batch_size: tuple[int, ...] | None = None
    """START INCREMENT SAMPLES: grow the global batch from START by INCREMENT in equal intervals
    over the first SAMPLES samples (--rampup-batch-size; needs --train-samples)."""
    seed: int = 1234
    """Seed of initialization, data order and code-switching (--seed)."""
    save: str | None = None
    """Checkpoint root to write (--save)."""
    load: str | None = None
    """Checkpoint root to resume from (model, optimizer, iteration, data position) (--load)."""
    pretrained_checkpoint: str | None = None
    """Weights to start from with a fresh optimizer at iteration 0 (--pretrained-checkpoint).
    With --load too, as in Megatron-LM: --load when it holds a checkpoint (a requeued job
    resumes), this otherwise (its first start)."""
    save_interval: int | None = None
    """Save every N iterations; a final checkpoint is always written with --save (--save-interval)."""
    async_save: bool = False
    """Write checkpoints in a background process while training goes on; the tracker moves to a
    checkpoint once it is complete on every rank (--async-save)."""
    eval_interval: int | None = None
    """Evaluate every N iterations; None = only at the end (--eval-interval)."""
    eval_iters: int = 10
    """Global batches per evaluation and dataset (--eval-iters)."""
    log_interval: int = 10
    """Log every N iterations (--log-interval)."""
    metrics_log: str | None = None
    """JSON-lines file with one record per logged iteration and per evaluation (--metrics-log)."""
    tensorboard_dir: str | None = None
    """TensorBoard event directory (--tensorboard-dir)."""
    align_only: bool = False
    """Run the alignment pre-pass, save, and stop (--align-only)."""
    use_checkpoint_args: bool = False
    """Take the architecture from the --load/--pretrained-checkpoint checkpoint instead of the
    model flags, e.g. for a converted Hugging Face model (--use-checkpoint-args)."""
    override_checkpoint_mismatch: bool = False
    """Resume even if the checkpoint's lexicon or tokenizer differs (--override-checkpoint-mismatch)."""
    exit_signal_handler: bool = True
    """On SIGTERM/SIGUSR1 finish the step, save and exit 0 (--exit-signal-handler)."""
    exit_interval: int | None = None
    """Save and exit 0 after every N-th iteration, e.g. to fit a time slot (--exit-interval)."""
    exit_duration_in_mins: float | None = None
    """Save and exit 0 once the training loop has run this many minutes; a requeued job continues
    (--exit-duration-in-mins)."""

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1:
            raise ValueError("--micro-batch-size must be >= 1")
        if self.global_batch_size is not None and self.global_batch_size % self.micro_batch_size:
            raise ValueError("--global-batch-size must be a multiple of --micro-batch-size")
        if self.train_iters < 0:
            raise ValueError("--train-iters must be >= 0")
        if self.train_samples is not None and self.train_samples < 0:
            raise ValueError("--train-samples must be >= 0")
        if self.rampup_batch_size is not None:
            if len(self.rampup_batch_size) != 3 or min(self.rampup_batch_size) < 0 or self.rampup_batch_size[:2].count(0):
                raise ValueError("--rampup-batch-size takes START INCREMENT SAMPLES (positive START and INCREMENT)")
            if self.train_samples is None:
                raise ValueError("--rampup-batch-size needs --train-samples (the ramp is counted in samples)")
            start, increment, _ = self.rampup_batch_size
            final = self.global_batch_size
            if final is None or final < start or (final - start) % increment:
                raise ValueError(f"--rampup-batch-size {start} {increment} ...: --global-batch-size must be given, "
                                 f">= START and reachable from it in INCREMENT steps")
        if self.exit_duration_in_mins is not None and self.exit_duration_in_mins <= 0:
            raise ValueError("--exit-duration-in-mins must be > 0")
        for name in ("save_interval", "eval_interval", "log_interval", "exit_interval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")


@dataclass(frozen=True)
class DataConfig:
    """What the model reads and how it is code-switched (Megatron-LM flag names)."""

    data_path: tuple[str, ...] = ()
    """Dataset prefixes, optionally weighted: `PREFIX` or `W1 PREFIX1 W2 PREFIX2 ...` (--data-path)."""
    split: str = "969,30,1"
    """Train/valid/test proportions of each prefix's documents (--split)."""
    train_data_path: tuple[str, ...] = ()
    """The training split's own prefixes, written as --data-path's, instead of --data-path and
    --split (--train-data-path)."""
    valid_data_path: tuple[str, ...] = ()
    """The validation split's own prefixes, with --train-data-path (--valid-data-path)."""
    test_data_path: tuple[str, ...] = ()
    """The test split's own prefixes, with --train-data-path (--test-data-path)."""
    tokenizer_type: str = "SentencePieceTokenizer"
    """`SentencePieceTokenizer` or `HuggingFaceTokenizer`; Megatron-LM's `GPTSentencePieceTokenizer`
    and `Llama2Tokenizer` name the first (--tokenizer-type)."""
    tokenizer_model: str | None = None
    """Tokenizer file or directory (--tokenizer-model)."""
    lexicon: str | None = None
    """Compiled lexicon from tools/build_lexicon.py (--lexicon): the dictionary words the sidecar
    spans refer to; enables code-switching and the pre-pass."""
    codeswitch_ratio: float = 0.0
    """Probability that each dictionary-word occurrence of the input is replaced by one of its
    translations, input-only (--codeswitch-ratio); the PreAlign authors use 0.05. 0 switches
    nothing: samples are then exactly megatron-core GPTDataset's (plus switch statistics when
    --lexicon is given)."""
    codeswitch_seed: int | None = None
    """Seed of the switching hash, in [0, 2**64) (--codeswitch-seed); None = --seed. Set it to
    vary the switches without changing the order of the samples."""
    num_workers: int = 1
    """DataLoader worker processes per data-reading rank (--num-workers)."""
    data_cache_path: str | None = None
    """Where megatron-core caches its sample indices; None = next to the data (--data-cache-path)."""

    def __post_init__(self) -> None:
        ratio, seed = self.codeswitch_ratio, self.codeswitch_seed
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise ValueError(f"--codeswitch-ratio must be a number, got {ratio!r}")
        if not 0.0 <= ratio <= 1.0:  # also refuses NaN
            raise ValueError(f"--codeswitch-ratio must be in [0, 1], got {ratio!r}")
        if ratio > 0 and not self.lexicon:
            raise ValueError(f"--codeswitch-ratio > 0 needs --lexicon (got ratio {ratio})")
        valid_seed = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**64
        if seed is not None and not valid_seed:
            raise ValueError(f"--codeswitch-seed must be an integer in [0, 2**64), got {seed!r}")
        if self.num_workers < 0:
            raise ValueError("--num-workers must be >= 0")
        from megatron_prealign.lexicon.tokenizer import canonical_tokenizer_type

        object.__setattr__(self, "tokenizer_type", canonical_tokenizer_type(self.tokenizer_type))
        per_split = self.train_data_path or self.valid_data_path or self.test_data_path
        if self.data_path and per_split:
            raise ValueError("--data-path and --train-data-path/--valid-data-path/--test-data-path are alternatives: "
                             "one blend split by --split, or one blend per split")
        if per_split and not self.train_data_path:
            raise ValueError("--valid-data-path/--test-data-path need --train-data-path")
        # Parsed here, so a bad value stops the run at its command line rather than in
        # megatron-core's dataset builder after the model is built.
        for flag, items in (("--data-path", self.data_path), ("--train-data-path", self.train_data_path),
                            ("--valid-data-path", self.valid_data_path), ("--test-data-path", self.test_data_path)):
            if items:
                _blend(items, flag)
        split_proportions(self.split)

    def blend(self) -> tuple[list[str], list[float] | None]:
        """(prefixes, weights) from `--data-path`, as megatron-core's `blend` expects."""
        if not self.data_path:
            raise ValueError("--data-path (or --train-data-path) is required for pretraining")
        return _blend(self.data_path, "--data-path")

    def blend_per_split(self) -> list | None:
        """[train, valid, test] blends from --train/valid/test-data-path (None for an absent split),
        or None when the data comes from --data-path and --split."""
        if not self.train_data_path:
            return None
        return [_blend(items, f"--{name}-data-path") if items else None
                for name, items in (("train", self.train_data_path), ("valid", self.valid_data_path),
                                    ("test", self.test_data_path))]

    def prefixes(self) -> list[str]:
        """Every dataset prefix the run reads."""
        if self.data_path:
            return self.blend()[0]
        return [p for blend in self.blend_per_split() or [] if blend for p in blend[0]]


def split_proportions(split: str) -> tuple[float, float, float]:
    """`--split` as three proportions (train, valid, test), e.g. ``969,30,1``.

    Raises:
        ValueError: not three comma-separated non-negative numbers with a positive sum.
    """
    parts = [p.strip() for p in str(split).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values) or not sum(values) > 0:
        raise ValueError(f"--split {split!r}: expected three comma-separated proportions TRAIN,VALID,TEST "
                         f"(non-negative, not all 0), e.g. 969,30,1")
    return values


def _blend(items, flag: str) -> tuple[list[str], list[float] | None]:
    items = list(items)
    if len(items) == 1:
        return items, None
    if len(items) % 2:
        raise ValueError(f"{flag} with several prefixes needs weight/prefix pairs: W1 P1 W2 P2 ...")
    try:
        weights = [float(w) for w in items[0::2]]
    except ValueError:
        raise ValueError(f"{flag}: expected `W1 PREFIX1 W2 PREFIX2 ...` with numeric weights") from None
    for i, w in enumerate(weights):
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"{flag}: blend weight {items[2 * i]} of {items[2 * i + 1]} must be a positive number "
                             f"(weights are relative shares of the samples); leave a prefix out rather than "
                             f"weighting it 0")
    return items[1::2], weights
