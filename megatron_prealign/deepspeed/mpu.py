"""The `mpu` object DeepSpeed asks for model- and data-parallel groups, answered from the run's
megatron-core `ProcessGroupCollection`.

DeepSpeed still calls Megatron-LM's old `mpu` names (`get_model_parallel_rank`,
`get_data_parallel_group`, ...), which megatron-core's `parallel_state` no longer has. On this
backend the pipeline is one stage, so "model parallel" is tensor parallel. Sequence-parallel
methods are deliberately absent: DeepSpeed switches its own sequence handling on when it finds
them, and sequence parallelism is refused on this backend.
"""
from __future__ import annotations

import torch.distributed as dist


class ModelParallelGroups:
    """DeepSpeed's `mpu` interface over `pg_collection` (`.tp`, `.dp`, `.pp`; PP size 1)."""

    def __init__(self, pg_collection):
        if pg_collection.pp.size() != 1:
            raise ValueError("the DeepSpeed backend runs one pipeline stage (--pipeline-model-parallel-size 1)")
        self._tp, self._dp, self._pp = pg_collection.tp, pg_collection.dp, pg_collection.pp

    # tensor (= model) parallel
    def get_tensor_model_parallel_group(self):
        return self._tp

    def get_tensor_model_parallel_rank(self) -> int:
        return self._tp.rank()

    def get_tensor_model_parallel_world_size(self) -> int:
        return self._tp.size()

    def get_tensor_model_parallel_src_rank(self) -> int:
        return dist.get_global_rank(self._tp, 0)

    get_model_parallel_group = get_tensor_model_parallel_group
    get_model_parallel_rank = get_tensor_model_parallel_rank
    get_model_parallel_world_size = get_tensor_model_parallel_world_size

    # data parallel
    def get_data_parallel_group(self):
        return self._dp

    def get_data_parallel_rank(self) -> int:
        return self._dp.rank()

    def get_data_parallel_world_size(self) -> int:
        return self._dp.size()

    def get_data_parallel_group_ranks(self) -> list[int]:
        return dist.get_process_group_ranks(self._dp)

    # pipeline (one stage)
    def get_pipeline_model_parallel_group(self):
        return self._pp

    def get_pipeline_model_parallel_rank(self) -> int:
        return 0

    def get_pipeline_model_parallel_world_size(self) -> int:
        return 1

    get_pipe_parallel_group = get_pipeline_model_parallel_group
    get_pipe_parallel_rank = get_pipeline_model_parallel_rank
    get_pipe_parallel_world_size = get_pipeline_model_parallel_world_size
