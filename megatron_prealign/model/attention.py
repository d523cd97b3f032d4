"""Core attention on `torch.nn.functional.scaled_dot_product_attention` (fused, no TransformerEngine).

megatron-core's local `DotProductAttention` materializes the [b, heads, s, s] score matrix and
runs an unfused softmax (its fused softmax kernels come with Apex or TransformerEngine only).
On a GPU that costs memory quadratic in the sequence length and most of the attention time.
PyTorch's SDPA dispatches to FlashAttention / memory-efficient / cuDNN kernels on CUDA (and a
fused CPU kernel elsewhere) and never materializes the scores, so this module is the `sdpa`
choice of `--attention-backend`: the same interface as `DotProductAttention` (megatron-core's
`core_attention` slot of the self-attention spec), injected through `ModuleSpec`.

Tensors in and out, as megatron-core's attention passes them (p = TP size):
    query [s, b, heads/p, d], key/value [s, b, groups/p, d]  ->  context [s, b, heads/p * d]
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


class SDPAttention(MegatronModule):
    """Drop-in for megatron-core's `DotProductAttention` (causal or padding-masked self-attention,
    grouped-query attention, dropout under the model-parallel RNG stream)."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: Optional[float] = None,
                 softmax_scale: Optional[float] = None, cp_comm_type: Optional[str] = None,
                 pg_collection=None):
        super().__init__(config=config)
        unsupported = {
            "context parallelism": config.context_parallel_size > 1,
            "--apply-query-key-layer-scaling": config.apply_query_key_layer_scaling,
            "sliding-window attention": config.window_size is not None,
            f"softmax type {config.softmax_type!r}": config.softmax_type != "vanilla",
        }
        for what, present in unsupported.items():
            if present:
                raise ValueError(f"--attention-backend sdpa does not support {what}; use --attention-backend local")
        if pg_collection is None:
            from megatron.core.process_groups_config import ProcessGroupCollection

            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.attn_mask_type = attn_mask_type
        self.heads_per_partition = divide(config.num_attention_heads, tp)
        self.groups_per_partition = divide(config.num_query_groups, tp)
        self.softmax_scale = softmax_scale  # None: SDPA's 1/sqrt(d), megatron-core's default too
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor], attn_mask_type: Optional[AttnMaskType] = None,
                attention_bias: Optional[torch.Tensor] = None, packed_seq_params=None) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("--attention-backend sdpa supports neither packed sequences nor attention bias")
        mask_type = attn_mask_type or self.attn_mask_type
        seq, batch = query.shape[0], query.shape[1]
        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if attention_mask is not None:
            # megatron-core's masks are True where attention is *not* allowed; SDPA's the opposite.
            kwargs = {"attn_mask": ~attention_mask.bool(), "is_causal": False}
        else:
            kwargs = {"attn_mask": None, "is_causal": mask_type == AttnMaskType.causal}
        dropout = self.dropout_p if self.training else 0.0
        if self.groups_per_partition != self.heads_per_partition:
            kwargs["enable_gqa"] = True
        if dropout > 0 and not self.config.sequence_parallel:
            # As DotProductAttention: attention dropout draws from the TP-rank-specific stream.
            with tensor_parallel.get_cuda_rng_tracker().fork():
                context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.softmax_scale,
                                                         **kwargs)
        else:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.softmax_scale,
                                                     **kwargs)
        # [b, n, s, d] -> [s, b, n * d]
        return context.permute(2, 0, 1, 3).reshape(seq, batch, -1)
