"""Model provisioning: ModelConfig -> megatron-core GPTModel (stock layer specs)."""
from megatron_prealign.model.builder import build_model, transformer_config
from megatron_prealign.model.config import ModelConfig

__all__ = ["ModelConfig", "build_model", "transformer_config"]
