"""Forward-only scoring on a megatron-core GPTModel: continuation log-probabilities and the
per-token loss of token streams. Single process (the evaluator loads any checkpoint at TP=PP=1).

The model's forward with labels returns per-token cross-entropy ``[b, s]`` (GPTModel's
``compute_language_model_loss``), so both functions read losses directly instead of logits.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from megatron_prealign.platform import compute_device

__all__ = ["continuation_logprobs", "token_losses"]


def token_losses(model, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy of `labels` given `tokens` (both int64 ``[b, s]``) -> float ``[b, s]``."""
    device = compute_device()
    tokens = tokens.to(device)
    labels = labels.to(device)
    position_ids = torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens)
    return model(tokens, position_ids, None, labels=labels).float()


@torch.no_grad()
def continuation_logprobs(model, items: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                          batch_size: int = 64, pad_id: int = 0) -> np.ndarray:
    """Sum of log P(continuation token | everything before it) for each (prompt, continuation).

    Args:
        model: a bare (not pipeline-split) GPTModel; its train/eval mode is restored.
        items: ``(prompt ids, continuation ids)`` pairs; prompts and continuations non-empty.
        batch_size: sequences per forward.
        pad_id: id used to right-pad shorter sequences (never scored).

    Returns:
        float64 ``(len(items),)``.
    """
    out = np.zeros(len(items), dtype=np.float64)
    for i, (prompt, continuation) in enumerate(items):
        if not prompt or not continuation:
            raise ValueError(f"item {i}: empty prompt or continuation")
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            length = max(len(items[i][0]) + len(items[i][1]) for i in batch) - 1
            tokens = torch.full((len(batch), length), pad_id, dtype=torch.int64)
            labels = torch.full((len(batch), length), pad_id, dtype=torch.int64)
            score_mask = torch.zeros((len(batch), length), dtype=torch.float64)
            for row, i in enumerate(batch):
                prompt, continuation = items[i]
                ids = torch.tensor(list(prompt) + list(continuation), dtype=torch.int64)
                n = len(ids) - 1
                tokens[row, :n] = ids[:-1]
                labels[row, :n] = ids[1:]
                # Position p predicts ids[p + 1]; the continuation starts at ids[len(prompt)].
                score_mask[row, len(prompt) - 1 : n] = 1.0
            losses = token_losses(model, tokens, labels).double().cpu()
            sums = -(losses * score_mask).sum(dim=1)
            out[batch] = sums.numpy()
    finally:
        model.train(was_training)
    return out
