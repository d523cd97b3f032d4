"""The DeepSpeed ZeRO backend (`--deepspeed-config`): the same megatron-core GPTModel, data and
pre-pass as the default backend, trained by a DeepSpeed engine (see README.md in this folder).
"""

from megatron_prealign._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "DeepSpeedConfig": "config",
    "read_deepspeed_json": "config",
    "stage_deepspeed_json": "config",
    "ModelParallelGroups": "mpu",
    "DeepSpeedBackend": "engine",
    "full_parameters": "engine",
    "is_engine": "engine",
    "prepare_runtime": "engine",
    "run_microbatches": "engine",
    "DeepSpeedStages": "stages",
})
