"""The English-Clone benchmark: the setting (clone language, dictionary, knowledge and transfer
sets) and its evaluation (see README.md in this folder).

Public names are loaded on first use: building the setting needs neither torch nor megatron-core.
"""

from megatron_prealign._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "CLONE_MARK": "clone",
    "build_clone_model": "clone",
    "from_clone_text": "clone",
    "to_clone_text": "clone",
    "train_english_tokenizer": "clone",
    "verify_clone_model": "clone",
    "CloneSetting": "english_clone",
    "CloneSettingConfig": "english_clone",
    "build_sources": "english_clone",
    "finalize": "english_clone",
    "load_setting": "english_clone",
    "KnowledgeSet": "knowledge",
    "evaluate_knowledge": "knowledge",
    "make_knowledge_set": "knowledge",
    "TransferProbe": "transfer",
    "evaluate_transfer": "transfer",
    "make_transfer_probe": "transfer",
    "heldout_perplexity": "perplexity",
    "continuation_logprobs": "scoring",
    "LoadedModel": "loading",
    "load_model": "loading",
    "single_process_group": "loading",
    "EvalConfig": "suite",
    "TASKS": "suite",
    "evaluate_checkpoint": "suite",
    "evaluate_model": "suite",
})
