"""Pretraining data with input-only code-switching (see README.md in this folder).

Public names are loaded on first use so that importing the light pure-NumPy parts
(``codeswitch``) does not import torch and megatron-core.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodeSwitchStats": "codeswitch",
    "LexiconArrays": "codeswitch",
    "STATS_KEYS": "codeswitch",
    "SidecarError": "sidecar",
    "SidecarMeta": "sidecar",
    "SidecarWriter": "sidecar",
    "CodeSwitchSidecar": "sidecar",
    "sidecar_prefix": "sidecar",
    "validate_sidecar": "sidecar",
    "CodeSwitchGPTDataset": "dataset",
    "CodeSwitchGPTDatasetConfig": "dataset",
    "MegatronTokenizerView": "dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
