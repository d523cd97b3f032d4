"""Per-layer word representations from a stock megatron-core GPTModel, via forward hooks.

Layer *slots* of a model with L transformer layers (global numbering, independent of the
pipeline layout):

    slot 0        `embedding`         output of the embedding (first stage)
    slot 1..L     `layer_<n>`         output of transformer layer n (megatron's 1-based layer_number,
                                      before the final norm), on the stage that holds the layer
    slot L+1      `output_embedding`  the output-layer (LM head) rows of the word's tokens (last stage)

Hooks sit on `model.embedding` and on each `model.decoder.layers[i]`; nothing of GPTModel or
TransformerLayer is forked. A hook on the stage's last layer may replace the layer's output with
`InjectAuxLoss(output, aux)` (see `LayerTap.stage_end`), which is how a non-last pipeline stage
puts its own loss terms into its backward pass.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from megatron_prealign.align.data import WordMicrobatch
from megatron_prealign.align.loss import InjectAuxLoss, pool_hidden, pool_vocab_rows
from megatron_prealign.deepspeed.engine import full_parameters

__all__ = ["LayerTap", "WordForward", "slot_names", "unwrap_model"]


def slot_names(num_layers: int) -> list[str]:
    """Names of all layer slots, by slot index."""
    return ["embedding", *(f"layer_{n}" for n in range(1, num_layers + 1)), "output_embedding"]


def unwrap_model(model):
    """The GPTModel inside megatron-core's DDP (or any `.module` wrapper)."""
    while hasattr(model, "module"):
        model = model.module
    return model


@dataclass
class WordForward:
    """State of one model forward over one word microbatch."""

    batch: WordMicrobatch
    slots: frozenset[int]
    """Slots whose pooled representation this forward wants."""
    reps: dict[int, torch.Tensor] = field(default_factory=dict)
    """slot -> fp32 [b, h] pooled representations (in the autograd graph unless under no_grad)."""


class LayerTap:
    """Forward hooks that pool word representations per slot on this pipeline stage.

    Args:
        model: this rank's model chunk (GPTModel, possibly DDP-wrapped).
        tp_group: tensor-parallel group (the output layer's vocabulary is split across it).
    """

    def __init__(self, model, tp_group=None):
        self.module = unwrap_model(model)
        config = self.module.config
        if getattr(config, "sequence_parallel", False):
            raise ValueError(
                "the alignment pre-pass does not support --sequence-parallel: hidden states would be "
                "split along the word positions it pools over; run the pre-pass without it"
            )
        if getattr(config, "context_parallel_size", 1) > 1:
            raise ValueError("the alignment pre-pass does not support --context-parallel-size > 1")
        self.num_layers = config.num_layers
        self.pre_process = bool(self.module.pre_process)
        self.post_process = bool(self.module.post_process)
        self.layers = list(self.module.decoder.layers)
        if not self.layers:
            raise ValueError("the alignment pre-pass needs at least one transformer layer on every pipeline stage")
        self.layer_slots = [int(layer.layer_number) for layer in self.layers]
        self.stage_slots = ([0] if self.pre_process else []) + self.layer_slots + (
            [self.num_layers + 1] if self.post_process else [])
        self.tp_group = tp_group
        self.current: WordForward | None = None
        self.stage_end: Callable[[WordForward], torch.Tensor | None] | None = None
        """Called after the stage's last layer on stages that are not the last one; may return an
        auxiliary loss to inject into the layer's output."""
        self.grad_scale: Callable[[], float | torch.Tensor] = lambda: 1.0

    @property
    def output_slot(self) -> int:
        return self.num_layers + 1

    def output_embedding_rep(self, batch: WordMicrobatch) -> torch.Tensor:
        """fp32 [b, h]: pooled output-layer rows of the batch's words (last stage only)."""
        module = self.module
        if module.share_embeddings_and_output_weights:
            weight = module.shared_embedding_or_output_weight()
        else:
            weight = module.output_layer.weight
        tp_rank = dist.get_rank(self.tp_group) if self.tp_group is not None and dist.is_initialized() else 0
        # Read after the forward: under DeepSpeed ZeRO-3 the rows are partitioned again by then.
        # The lookup's backward needs only the indices, so the gathered rows may be released.
        with full_parameters([weight]):
            vocab_start = tp_rank * weight.shape[0]
            return pool_vocab_rows(weight, batch.tokens, batch.word_mask, vocab_start=vocab_start,
                                   tp_group=self.tp_group)

    def _embedding_hook(self, module, args, output):
        forward = self.current
        if forward is not None and 0 in forward.slots:
            forward.reps[0] = pool_hidden(output, forward.batch.word_mask)
        return None

    def _make_layer_hook(self, slot: int, stage_last: bool):
        def hook(module, args, output):
            forward = self.current
            if forward is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output  # [s, b, h]
            if slot in forward.slots:
                forward.reps[slot] = pool_hidden(hidden, forward.batch.word_mask)
            if not (stage_last and not self.post_process and self.stage_end is not None):
                return None
            aux = self.stage_end(forward)
            if aux is None:
                return None
            from megatron.core.utils import make_viewless_tensor

            injected = InjectAuxLoss.apply(hidden, aux, self.grad_scale())
            # The pipeline schedule frees a stage's output storage after sending it and requires
            # a tensor that is not a view; Function outputs that return an input are views.
            injected = make_viewless_tensor(inp=injected, requires_grad=True, keep_graph=True)
            return (injected, *output[1:]) if isinstance(output, tuple) else injected

        return hook

    @contextmanager
    def attached(self) -> Iterator["LayerTap"]:
        """Register the hooks for the duration of the block."""
        handles = []
        try:
            if self.pre_process:
                handles.append(self.module.embedding.register_forward_hook(self._embedding_hook))
            for index, (layer, slot) in enumerate(zip(self.layers, self.layer_slots)):
                hook = self._make_layer_hook(slot, stage_last=index == len(self.layers) - 1)
                handles.append(layer.register_forward_hook(hook))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.current = None

    @contextmanager
    def forward(self, batch: WordMicrobatch, slots) -> Iterator[WordForward]:
        """Mark one model forward over `batch`, collecting `slots` that live on this stage."""
        record = WordForward(batch=batch, slots=frozenset(slots) & frozenset(self.stage_slots))
        self.current = record
        try:
            yield record
        finally:
            self.current = None
