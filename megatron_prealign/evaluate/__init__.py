"""Evaluating a checkpoint: loading it as a bare single-process model, per-token scoring,
perplexity of token datasets (whole, or the documents pretraining held out), the alignment gap
on a lexicon's dictionary and held-out words, and cross-lingual sentence retrieval per layer
(see README.md in this folder). The gap itself is `megatron_prealign.align.alignment_gap`.

Public names are loaded on first use: importing the package imports neither torch nor
megatron-core.
"""

from megatron_prealign._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "LoadedModel": "loading",
    "free_port": "loading",
    "load_model": "loading",
    "single_process_group": "loading",
    "continuation_logprobs": "scoring",
    "token_losses": "scoring",
    "dataset_perplexities": "perplexity",
    "heldout_perplexity": "perplexity",
    "read_stream": "perplexity",
    "GapSplit": "alignment",
    "gap_split_from_checkpoint": "alignment",
    "lexicon_alignment_gaps": "alignment",
    "heldout_status": "heldout",
    "split_documents": "heldout",
    "read_parallel": "retrieval",
    "retrieval_accuracy": "retrieval",
    "sentence_embeddings": "retrieval",
})
