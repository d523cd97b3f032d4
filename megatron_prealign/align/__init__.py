"""Stage `align`: the PreAlign alignment pre-pass (see README.md in this folder).

`run_align_prepass(model, lexicon, AlignConfig(...), pg_collection)` trains a built (and
possibly checkpoint-loaded) model on dictionary word pairs; `alignment_gap` measures the result.
"""

from megatron_prealign._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "LayerTap": "capture",
    "slot_names": "capture",
    "WordMicrobatch": "data",
    "WordPairSampler": "data",
    "build_microbatches": "data",
    "clone_lexicon": "data",
    "pad_words": "data",
    "pool_masks": "data",
    "split_entries": "data",
    "steps_for_token_budget": "data",
    "tokens_per_step": "data",
    "InjectAuxLoss": "loss",
    "all_gather_with_grad": "loss",
    "collapse_penalty": "loss",
    "info_nce": "loss",
    "pool_hidden": "loss",
    "pool_vocab_rows": "loss",
    "alignment_gap": "metrics",
    "evaluation_pairs": "metrics",
    "gap_words": "metrics",
    "write_gap_plot": "metrics",
    "AlignmentObjective": "prepass",
    "AlignReport": "prepass",
    "PrepassResume": "prepass",
    "PrepassStop": "prepass",
    "run_align_prepass": "prepass",
    "AlignConfig": "config",
})
