"""Pretraining data with input-only code-switching (see README.md in this folder).

Public names are loaded on first use so that importing the light pure-NumPy parts
(``codeswitch``) does not import torch and megatron-core. The preprocessing function is
``megatron_prealign.data.preprocess.preprocess`` (the package attribute ``preprocess`` is its
module).
"""

from megatron_prealign._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "CodeSwitchStats": "codeswitch",
    "LexiconArrays": "codeswitch",
    "STATS_KEYS": "codeswitch",
    "DataError": "integrity",
    "DatasetManifest": "integrity",
    "open_token_dataset": "integrity",
    "SidecarError": "sidecar",
    "SidecarMeta": "sidecar",
    "SidecarWriter": "sidecar",
    "CodeSwitchSidecar": "sidecar",
    "sidecar_prefix": "sidecar",
    "validate_sidecar": "sidecar",
    "CodeSwitchGPTDataset": "dataset",
    "CodeSwitchGPTDatasetConfig": "dataset",
    "MegatronTokenizerView": "dataset",
    "SpanDecision": "dataset",
    "PreviewConfig": "preview",
    "SamplePreview": "preview",
    "PreprocessConfig": "preprocess",
    "PreprocessSummary": "preprocess",
    "MergeError": "merge",
    "MergeSummary": "merge",
    "merge_datasets": "merge",
})
