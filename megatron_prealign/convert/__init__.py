"""Checkpoint conversion between Hugging Face Llama / Mistral / Qwen2 / Qwen3 models and
megatron_prealign checkpoints, and vocabulary extension for a new language.

`from_hf` / `to_hf` convert directories (files.py); the pure mappings in hf.py
(`model_config_from_hf`, `hf_to_mcore_state`, ...) work on in-memory configs and tensors and
document the tensor layouts. vocab.py extends a tokenizer and a checkpoint's vocabulary
(`extend_tokenizer`, `extend_checkpoint`); the stages are in README.md.
"""
from megatron_prealign.convert.files import convert_hf_to_mcore, convert_mcore_to_hf
from megatron_prealign.convert.hf import (
    SUPPORTED_ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    ConversionError,
    hf_config_from_model_config,
    hf_to_mcore_state,
    mcore_to_hf_state,
    model_config_from_hf,
)

from_hf = convert_hf_to_mcore
to_hf = convert_mcore_to_hf

__all__ = [
    "SUPPORTED_ARCHITECTURES", "SUPPORTED_MODEL_TYPES", "ConversionError", "convert_hf_to_mcore",
    "convert_mcore_to_hf", "from_hf", "hf_config_from_model_config", "hf_to_mcore_state",
    "mcore_to_hf_state", "model_config_from_hf", "to_hf",
]
