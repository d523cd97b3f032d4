"""Evaluating a checkpoint: loading it as a bare single-process model, per-token scoring, and
held-out perplexity of token datasets (see README.md in this folder). The alignment gap is
`megatron_prealign.align.alignment_gap`.

Public names are loaded on first use: importing the package imports neither torch nor
megatron-core.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LoadedModel": "loading",
    "free_port": "loading",
    "load_model": "loading",
    "single_process_group": "loading",
    "continuation_logprobs": "scoring",
    "token_losses": "scoring",
    "dataset_perplexities": "perplexity",
    "heldout_perplexity": "perplexity",
    "read_stream": "perplexity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
