"""Per-layer word representations from a stock megatron-core GPTModel, via forward hooks.

Layer *slots* of a model with L transformer layers (global numbering, independent of the
pipeline layout):

    slot 0        `embedding`         output of the embedding (first stage)
    slot 1..L     `layer_<n>`         output of transformer layer n (megatron's 1-based layer_number,
                                      before the final norm), on the stage that holds the layer
    slot L+1      `output_embedding`  the output-layer (LM head) rows of the word's tokens (last stage)

Hooks sit on `model.embedding`, on each `model.decoder.layers[i]` and on `model.decoder`; nothing
of GPTModel or TransformerLayer is forked. The hook on the decoder may replace the stage's output
with `InjectAuxLoss(output, aux)` (see `LayerTap.stage_end`), which is how a non-last pipeline
stage puts its own loss terms into its backward pass.

Sequence parallelism: hidden states arrive as this rank's slice of the positions; pooling sums
each rank's slice and adds the partial sums over the tensor-parallel group (`pool_hidden`).

Full activation recomputation: megatron-core runs a checkpointed chunk of layers without
autograd in the forward and again, with autograd, inside the backward. A layer hook therefore
fires twice per microbatch. The first firing captures the pooled values (no graph); the loss
terms are computed from them and their gradient with respect to each such representation is
kept (`WordForward.rep_grads`, see prepass.py); the second firing, during the recomputation,
injects exactly that gradient into the recomputed layer output and captures nothing. Pending
first firings are matched to recomputations in order (the schedules run backward passes of a
stage in the order of its forward passes), and any mismatch is an error, never a silent double
count.
"""
from __future__ import annotations

from collections import deque
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from megatron.core.tensor_parallel.random import is_checkpointing
from megatron.core.utils import make_viewless_tensor

from megatron_prealign.align.data import WordMicrobatch
from megatron_prealign.align.loss import InjectAuxLoss, pool_hidden, pool_vocab_rows
from megatron_prealign.deepspeed.engine import full_parameters

__all__ = ["ChunkTaps", "LayerTap", "WordForward", "slot_names", "unwrap_model"]


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
    """slot -> fp32 [b, h] pooled representations (in the autograd graph unless captured without
    autograd: under no_grad, or inside a chunk that full recomputation checkpoints)."""
    rep_grads: dict[int, torch.Tensor] = field(default_factory=dict)
    """slot -> gradient of this rank's loss terms with respect to `reps[slot]`, for the slots
    captured inside a checkpointed chunk; injected when the chunk is recomputed."""


class LayerTap:
    """Forward hooks that pool word representations per slot on this pipeline stage.

    Args:
        model: this rank's model chunk (GPTModel, possibly DDP-wrapped).
        tp_group: tensor-parallel group (the output layer's vocabulary is split across it, and
            under sequence parallelism the positions too).
    """

    def __init__(self, model, tp_group=None):
        self.module = unwrap_model(model)
        config = self.module.config
        if getattr(config, "context_parallel_size", 1) > 1:
            raise ValueError("the alignment pre-pass does not support --context-parallel-size > 1")
        self.config = config
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
        self.sequence_group = tp_group if getattr(config, "sequence_parallel", False) else None
        self.current: WordForward | None = None
        self.stage_end: Callable[[WordForward], torch.Tensor | None] | None = None
        """Called with the stage's output on stages that are not the last one; may return an
        auxiliary loss to inject into that output."""
        self.grad_scale: Callable[[], float | torch.Tensor] = lambda: 1.0
        self._pending: dict[int, deque[WordForward]] = {slot: deque() for slot in self.layer_slots}
        self.recomputed_injections = 0
        """Recomputed layer outputs that received their slot's gradient (tests read it)."""

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

    def _pool(self, hidden: torch.Tensor, batch: WordMicrobatch) -> torch.Tensor:
        return pool_hidden(hidden, batch.word_mask, self.sequence_group)

    def _inject(self, output, hidden: torch.Tensor, aux: torch.Tensor):
        injected = InjectAuxLoss.apply(hidden, aux, self.grad_scale())
        # The pipeline schedule frees a stage's output storage after sending it and requires
        # a tensor that is not a view; Function outputs that return an input are views.
        injected = make_viewless_tensor(inp=injected, requires_grad=True, keep_graph=True)
        return (injected, *output[1:]) if isinstance(output, tuple) else injected

    def _embedding_hook(self, module, args, output):
        forward = self.current
        if forward is not None and 0 in forward.slots:
            forward.reps[0] = self._pool(output, forward.batch)
        return None

    def _make_layer_hook(self, slot: int):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output  # [s, b, h]
            if is_checkpointing() and torch.is_grad_enabled():
                return self._recomputed(slot, output, hidden)
            forward = self.current
            if forward is None or slot not in forward.slots:
                return None
            forward.reps[slot] = self._pool(hidden, forward.batch)
            if self.module.training and not torch.is_grad_enabled():
                # Inside a chunk that full recomputation checkpoints: its gradient comes later.
                self._pending[slot].append(forward)
            return None

        return hook

    def _recomputed(self, slot: int, output, hidden: torch.Tensor):
        """A layer output recomputed in backward: inject the gradient its first firing earned."""
        pending = self._pending[slot]
        if not pending:
            raise RuntimeError(
                f"alignment pre-pass: layer slot {slot} was recomputed with no pending capture; the "
                "recomputation does not follow the order of the forward passes")
        forward = pending.popleft()
        grad = forward.rep_grads.pop(slot, None)
        if grad is None:
            raise RuntimeError(f"alignment pre-pass: layer slot {slot} was recomputed before its loss terms "
                               "were computed")
        self.recomputed_injections += 1
        aux = (self._pool(hidden, forward.batch) * grad).sum()
        return self._inject(output, hidden, aux)

    def _decoder_hook(self, module, args, output):
        forward = self.current
        if forward is None or self.post_process or self.stage_end is None:
            return None
        aux = self.stage_end(forward)
        if aux is None or not aux.requires_grad:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        return self._inject(output, hidden, aux)

    def check_drained(self) -> None:
        """After a step's backward: every capture inside a checkpointed chunk got its
        recomputation."""
        left = {slot: len(queue) for slot, queue in self._pending.items() if queue}
        if left:
            raise RuntimeError(f"alignment pre-pass: layer captures without a recomputation: {left}")

    @contextmanager
    def attached(self) -> Iterator["LayerTap"]:
        """Register the hooks for the duration of the block."""
        handles = []
        try:
            if self.pre_process:
                handles.append(self.module.embedding.register_forward_hook(self._embedding_hook))
            for layer, slot in zip(self.layers, self.layer_slots):
                handles.append(layer.register_forward_hook(self._make_layer_hook(slot)))
            handles.append(self.module.decoder.register_forward_hook(self._decoder_hook))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.current = None
            for queue in self._pending.values():
                queue.clear()

    @contextmanager
    def forward(self, batch: WordMicrobatch, slots) -> Iterator[WordForward]:
        """Mark one model forward over `batch`, collecting `slots` that live on this stage."""
        record = WordForward(batch=batch, slots=frozenset(slots) & frozenset(self.stage_slots))
        self.current = record
        try:
            yield record
        finally:
            self.current = None


class ChunkTaps:
    """One `LayerTap` per model chunk of this rank (one chunk, or the chunks of the interleaved
    pipeline, each holding its own slots); the schedule's forward step finds its chunk's tap.

    Args:
        model: a model chunk or the list of this rank's chunks (possibly DDP-wrapped).
        tp_group: tensor-parallel group.
    """

    def __init__(self, model, tp_group=None):
        self.chunks = list(model) if isinstance(model, (list, tuple)) else [model]
        self.taps = [LayerTap(chunk, tp_group=tp_group) for chunk in self.chunks]
        self._by_id = {}
        for chunk, tap in zip(self.chunks, self.taps):
            self._by_id[id(chunk)] = self._by_id[id(tap.module)] = tap
        self.num_layers = self.taps[0].num_layers
        self.stage_slots = sorted(slot for tap in self.taps for slot in tap.stage_slots)
        self.output_tap = next((tap for tap in self.taps if tap.post_process), None)
        """The tap of the chunk holding the output layer (last stage), if this rank has it."""

    def __iter__(self):
        return iter(self.taps)

    def for_model(self, chunk) -> LayerTap:
        """The tap of `chunk` (as the schedule passes it to the forward step)."""
        return self._by_id[id(chunk)]

    @property
    def recomputed_injections(self) -> int:
        return sum(tap.recomputed_injections for tap in self.taps)

    def check_drained(self) -> None:
        for tap in self.taps:
            tap.check_drained()

    @contextmanager
    def attached(self) -> Iterator["ChunkTaps"]:
        with ExitStack() as stack:
            for tap in self.taps:
                stack.enter_context(tap.attached())
            yield self
