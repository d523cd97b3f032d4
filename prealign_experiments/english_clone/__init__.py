"""The English-Clone benchmark: the setting (clone language, dictionary, knowledge and transfer
sets), its evaluation suite, and the demo comparing training arms on it (see README.md in this
folder). ``python -m prealign_experiments.english_clone`` runs the demo.

Public names are loaded on first use: building the setting needs neither torch nor megatron-core.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CLONE_MARK": "clone",
    "build_clone_model": "clone",
    "from_clone_text": "clone",
    "to_clone_text": "clone",
    "train_english_tokenizer": "clone",
    "verify_clone_model": "clone",
    "DEFAULT_CORPUS": "setting",
    "CloneSetting": "setting",
    "CloneSettingConfig": "setting",
    "build_setting": "setting",
    "build_sources": "setting",
    "existing_setting": "setting",
    "finalize": "setting",
    "load_setting": "setting",
    "KnowledgeSet": "knowledge",
    "evaluate_knowledge": "knowledge",
    "make_knowledge_set": "knowledge",
    "TransferProbe": "transfer",
    "evaluate_transfer": "transfer",
    "make_transfer_probe": "transfer",
    "EvalConfig": "suite",
    "TASKS": "suite",
    "evaluate_checkpoint": "suite",
    "evaluate_model": "suite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
