"""Word representations and the contrastive alignment loss (pure torch + explicit groups).

Shapes: `s` sequence slots, `b` words on this rank, `W` words in the contrastive pool (one global
microbatch, gathered over the data-parallel group), `K` layers, `h` hidden size. Hidden states
arrive in megatron-core's [s, b, h] layout.

InfoNCE with several positives: for word i with positives P(i) and negatives N(i) in the pool,

    loss_i = 1/|P(i)| * sum_{p in P(i)} -log( e^{c_ip/τ} / (e^{c_ip/τ} + sum_{n in N(i)} e^{c_in/τ}) )

where c is cosine similarity. With a single translation in the pool this is the ordinary InfoNCE
term; with a multi-way group each member is its own positive and the other members never compete
in a positive's denominator. Same-group words that are not translations are neither positive nor
negative (no false negatives). A layer's loss is the mean of loss_i over the pool's words that
have a positive.

Every collective here takes an explicit `group`, so it runs (and is tested) on gloo.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "InjectAuxLoss",
    "all_gather_with_grad",
    "collapse_penalty",
    "info_nce",
    "pool_hidden",
    "pool_vocab_rows",
]

# Logit for masked-out pool words. Finite (unlike -inf) so that a row with no negatives still has
# a finite logsumexp and zero, not NaN, gradient; exp() of it underflows to exactly 0 in fp32.
_MASKED_LOGIT = -1e9


def _group_size(group) -> int:
    return dist.get_world_size(group) if group is not None and dist.is_initialized() else 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate equal-shaped dim-0 shards of every rank in `group`, keeping gradients.

    Backward: every rank's loss may depend on every rank's shard, so the gradient of a shard is
    the sum over ranks of their gradients w.r.t. it: an all-reduce, then this rank's slice.
    (all-reduce + slice instead of reduce-scatter: gloo has no reduce-scatter.)
    """

    @staticmethod
    def forward(ctx, shard: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.rows = shard.shape[0]
        parts = [torch.empty_like(shard) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, shard.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None


def all_gather_with_grad(shard: torch.Tensor, group) -> torch.Tensor:
    """[n, ...] on each of G ranks -> [G*n, ...] in rank order, differentiable w.r.t. every shard.

    `group=None` (or a single-rank group) returns `shard` unchanged.
    """
    if _group_size(group) == 1:
        return shard
    return _AllGatherWithGrad.apply(shard, group)


def pool_hidden(hidden: torch.Tensor, word_mask: torch.Tensor, sequence_parallel_group=None) -> torch.Tensor:
    """Mean of hidden states over each word's token positions.

    Args:
        hidden: [s, b, h] (megatron-core layout); under sequence parallelism this rank's
            [s / tp, b, h] slice of the positions.
        word_mask: [b, s], 1 on the word's tokens, 0 on padding (all positions).
        sequence_parallel_group: the tensor-parallel group when `hidden` is sequence-sharded.
            Each rank sums its own positions and megatron-core's
            `reduce_from_tensor_model_parallel_region` adds the partial sums (backward: identity,
            so each rank's positions get their own gradient).

    Returns:
        fp32 [b, h], identical on every rank of the group.
    """
    mask = word_mask
    sharded = _group_size(sequence_parallel_group) > 1
    if sharded:
        local = hidden.shape[0]
        start = dist.get_rank(sequence_parallel_group) * local
        mask = word_mask[:, start:start + local]
    weights = mask.t().unsqueeze(-1).to(torch.float32)  # [s_local, b, 1]
    summed = (hidden.float() * weights).sum(dim=0)  # [b, h]
    if sharded:
        from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region

        summed = reduce_from_tensor_model_parallel_region(summed, group=sequence_parallel_group)
    return summed / word_mask.sum(dim=1).clamp(min=1).unsqueeze(-1).to(torch.float32)


def pool_vocab_rows(weight: torch.Tensor, tokens: torch.Tensor, word_mask: torch.Tensor, *,
                    vocab_start: int, tp_group=None) -> torch.Tensor:
    """Mean of output-embedding rows over each word's tokens, for a vocab-sharded weight.

    Args:
        weight: [V_local, h], rows vocab_start .. vocab_start+V_local-1 of the full [V, h] matrix.
        tokens: int64 [b, s].
        word_mask: [b, s], 1 on the word's tokens.
        vocab_start: first vocabulary id held by this tensor-parallel rank.
        tp_group: the tensor-parallel group across which the rows are split (None: unsharded).

    Returns:
        fp32 [b, h], identical on every rank of `tp_group`. Each rank pools the rows it holds
        (others masked to zero) and megatron-core's `reduce_from_tensor_model_parallel_region`
        sums the partial means (backward: identity, so each rank's rows get their own gradient).
    """
    num_local = weight.shape[0]
    local = tokens - vocab_start  # [b, s]
    held = (local >= 0) & (local < num_local)
    rows = F.embedding(torch.where(held, local, torch.zeros_like(local)), weight)  # [b, s, h]
    mask = (word_mask * held).to(torch.float32).unsqueeze(-1)  # [b, s, 1]
    summed = (rows.float() * mask).sum(dim=1)  # [b, h]
    if _group_size(tp_group) > 1:
        from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region

        summed = reduce_from_tensor_model_parallel_region(summed, group=tp_group)
    return summed / word_mask.sum(dim=1).clamp(min=1).unsqueeze(-1).to(torch.float32)


def info_nce(anchors: torch.Tensor, pool: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Per-word InfoNCE loss (module docstring) for every layer.

    Args:
        anchors: [K, b, h] representations of this rank's words.
        pool: [K, W, h] representations of all pool words (this rank's included).
        positive: bool [b, W], translations of each anchor in the pool.
        negative: bool [b, W], negatives of each anchor in the pool.
        temperature: τ > 0.

    Returns:
        fp32 [K, b]; 0 for words without a positive in the pool.
    """
    q = F.normalize(anchors.float(), dim=-1)  # [K, b, h]
    k = F.normalize(pool.float(), dim=-1)  # [K, W, h]
    logits = torch.bmm(q, k.transpose(1, 2)) / temperature  # [K, b, W]
    negative_lse = torch.logsumexp(logits.masked_fill(~negative, _MASKED_LOGIT), dim=-1, keepdim=True)  # [K, b, 1]
    # -log(e^a / (e^a + e^n)) = softplus(n - a), n = logsumexp over the negatives.
    per_positive = F.softplus(negative_lse - logits)  # [K, b, W]
    positive = positive.to(per_positive.dtype)
    return (per_positive * positive).sum(dim=-1) / positive.sum(dim=-1).clamp(min=1)  # [K, b]


def collapse_penalty(anchors: torch.Tensor, pool: torch.Tensor, pool_offset: int) -> torch.Tensor:
    """This rank's share of `max(0, mean cosine over all ordered pairs of distinct pool words)`,
    per layer (the December-2024 anti-collapse term).

    Args:
        anchors: [K, b, h], this rank's words, which sit at pool rows pool_offset..pool_offset+b-1.
        pool: [K, W, h], all pool words.

    Returns:
        fp32 [K]. Summed over the ranks that share the pool it equals the penalty, and so does
        its gradient: each rank contributes the pairs whose first word it holds, and the
        clamp's on/off decision uses the whole pool's mean (identical on every rank).
    """
    q = F.normalize(anchors.float(), dim=-1)  # [K, b, h]
    k = F.normalize(pool.float(), dim=-1)  # [K, W, h]
    num_pool, num_local = k.shape[1], q.shape[1]
    num_pairs = max(num_pool * (num_pool - 1), 1)
    with torch.no_grad():
        # sum_{i != j} <k_i, k_j> = |sum_i k_i|^2 - sum_i |k_i|^2, without the [W, W] matrix.
        total = k.sum(dim=1)  # [K, h]
        full_mean = ((total * total).sum(-1) - (k * k).sum(dim=(1, 2))) / num_pairs  # [K]
    rows_total = torch.einsum("kbh,kh->kb", q, k.sum(dim=1))  # [K, b]: sum_j <q_i, k_j>, self included
    self_sim = (q * k[:, pool_offset:pool_offset + num_local]).sum(-1)  # [K, b]
    local = (rows_total - self_sim).sum(dim=1) / num_pairs  # [K]
    return local * (full_mean > 0).to(local.dtype)


class InjectAuxLoss(torch.autograd.Function):
    """Pass `activation` through unchanged; in backward, also seed `aux_loss` with gradient
    `grad_scale`, so d(aux_loss)/d(params) is added to the backward pass that flows through
    `activation` (megatron-core's MoEAuxLossAutoScaler pattern).

    This lets a pipeline stage add loss terms computed from its own activations without them
    being part of the tensor it sends on: when the next stage's gradient arrives and the
    backward reaches `activation`, the auxiliary gradients join it.
    """

    @staticmethod
    def forward(ctx, activation: torch.Tensor, aux_loss: torch.Tensor, grad_scale) -> torch.Tensor:
        """`grad_scale`: a float or a 0-d tensor (kept on the device: no host sync per call)."""
        ctx.save_for_backward(aux_loss)
        ctx.grad_scale = grad_scale
        return activation

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (aux_loss,) = ctx.saved_tensors
        return grad_output, torch.ones_like(aux_loss) * ctx.grad_scale, None
