"""Evaluating a checkpoint: loading it as a bare single-process model, per-token scoring, and
held-out perplexity of token datasets (see README.md in this folder). The alignment gap is
`megatron_prealign.align.alignment_gap`.

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
})
