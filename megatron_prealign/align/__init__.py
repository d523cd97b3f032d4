"""Stage `align`: the PreAlign alignment pre-pass (see README.md in this folder).

`run_align_prepass(model, lexicon, AlignConfig(...), pg_collection)` trains a built (and
possibly checkpoint-loaded) model on dictionary word pairs; `alignment_gap` measures the result.
"""
from megatron_prealign.align.capture import LayerTap, slot_names
from megatron_prealign.align.data import (
    WordMicrobatch,
    WordPairSampler,
    build_microbatches,
    clone_lexicon,
    pad_words,
    pool_masks,
    split_entries,
)
from megatron_prealign.align.loss import (
    InjectAuxLoss,
    all_gather_with_grad,
    collapse_penalty,
    info_nce,
    pool_hidden,
    pool_vocab_rows,
)
from megatron_prealign.align.metrics import alignment_gap, evaluation_pairs, write_gap_plot
from megatron_prealign.align.prepass import AlignConfig, AlignmentObjective, AlignReport, run_align_prepass

__all__ = [
    "AlignConfig",
    "AlignReport",
    "AlignmentObjective",
    "InjectAuxLoss",
    "LayerTap",
    "WordMicrobatch",
    "WordPairSampler",
    "alignment_gap",
    "all_gather_with_grad",
    "build_microbatches",
    "clone_lexicon",
    "collapse_penalty",
    "evaluation_pairs",
    "info_nce",
    "pad_words",
    "pool_hidden",
    "pool_masks",
    "pool_vocab_rows",
    "run_align_prepass",
    "slot_names",
    "split_entries",
    "write_gap_plot",
]
