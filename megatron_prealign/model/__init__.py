"""Model provisioning: ModelConfig -> megatron-core GPTModel (stock layer specs)."""

from megatron_prealign._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "ModelConfig": "config",
    "build_model": "builder",
    "transformer_config": "builder",
})
