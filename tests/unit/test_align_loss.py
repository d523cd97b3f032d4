"""Tier 1 (no devices, no process groups): align/loss.py against slow, obviously-correct loops.

The references below spell each formula out element by element in float64 Python; the
vectorized code must match them in value and, through autograd, in gradient.
"""
from __future__ import annotations

import math

import pytest
import torch

from megatron_prealign.align.loss import (
    InjectAuxLoss,
    all_gather_with_grad,
    collapse_penalty,
    info_nce,
    pool_hidden,
    pool_vocab_rows,
)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def reference_info_nce(anchors, pool, positive, negative, temperature) -> list[list[float]]:
    """[K][b] per-word losses: mean over positives p of
    -log(exp(c_ip/τ) / (exp(c_ip/τ) + sum_n exp(c_in/τ)))."""
    out = []
    for k in range(len(anchors)):
        row_losses = []
        for i, anchor in enumerate(anchors[k]):
            sims = [cosine(anchor, other) / temperature for other in pool[k]]
            negs = [sims[j] for j in range(len(pool[k])) if negative[i][j]]
            terms = []
            for j in range(len(pool[k])):
                if positive[i][j]:
                    denominator = math.exp(sims[j]) + sum(math.exp(s) for s in negs)
                    terms.append(-math.log(math.exp(sims[j]) / denominator))
            row_losses.append(sum(terms) / len(terms) if terms else 0.0)
        out.append(row_losses)
    return out


def reference_collapse(pool) -> list[float]:
    """[K]: max(0, mean cosine over ordered pairs of distinct pool words)."""
    out = []
    for words in pool:
        sims = [cosine(words[i], words[j]) for i in range(len(words)) for j in range(len(words)) if i != j]
        out.append(max(0.0, sum(sims) / len(sims)))
    return out


def _random_case(seed: int, layers: int = 3, words: int = 7, hidden: int = 5):
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(layers, words, hidden, generator=g, dtype=torch.float64)
    positive = torch.rand(words, words, generator=g) < 0.25
    negative = (torch.rand(words, words, generator=g) < 0.6) & ~positive
    eye = torch.eye(words, dtype=torch.bool)
    positive &= ~eye
    negative &= ~eye
    positive[0] = False  # a word without positives
    negative[1] = False  # a word without negatives
    positive[1, 2] = True
    positive[3, 4] = positive[3, 5] = True  # several positives
    negative[3, 4] = negative[3, 5] = False
    return pool, positive, negative


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_info_nce_matches_reference(seed, temperature):
    pool, positive, negative = _random_case(seed)
    got = info_nce(pool, pool, positive, negative, temperature)
    expected = reference_info_nce(pool.tolist(), pool.tolist(), positive.tolist(), negative.tolist(), temperature)
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    assert torch.all(got[:, 0] == 0), "a word without positives contributes nothing"


def test_info_nce_gradient_matches_reference_by_finite_differences():
    pool, positive, negative = _random_case(5, layers=1, words=6, hidden=3)

    def reference_total(values: torch.Tensor) -> float:
        rows = reference_info_nce(values.tolist(), values.tolist(), positive.tolist(), negative.tolist(), 0.5)
        return sum(sum(r) for r in rows)

    x = pool.clone().requires_grad_(True)
    info_nce(x, x, positive, negative, 0.5).sum().backward()
    eps = 1e-6
    for index in [(0, 0, 0), (0, 1, 2), (0, 3, 1), (0, 4, 0), (0, 2, 2)]:
        up, down = pool.clone(), pool.clone()
        up[index] += eps
        down[index] -= eps
        numeric = (reference_total(up) - reference_total(down)) / (2 * eps)
        assert x.grad[index].item() == pytest.approx(numeric, rel=1e-3, abs=1e-5), index


def test_info_nce_is_finite_without_negatives_and_zero_for_perfect_alignment():
    anchors = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], requires_grad=True)
    positive = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    negative = torch.zeros(3, 3, dtype=torch.bool)
    loss = info_nce(anchors, anchors, positive, negative, 0.1)
    loss.sum().backward()
    assert torch.all(torch.isfinite(anchors.grad))
    # -log(e^a / e^a) = 0 when there is nothing to compete with.
    torch.testing.assert_close(loss, torch.zeros(1, 3))


def test_info_nce_of_anchor_subset_equals_rows_of_full_pool():
    """A data-parallel rank holding pool rows 3..5 computes exactly those rows' losses."""
    pool, positive, negative = _random_case(7)
    full = info_nce(pool, pool, positive, negative, 0.1)
    part = info_nce(pool[:, 3:6], pool, positive[3:6], negative[3:6], 0.1)
    torch.testing.assert_close(part, full[:, 3:6])


@pytest.mark.parametrize("seed", [0, 3])
def test_collapse_penalty_matches_reference_and_splits_across_ranks(seed):
    pool, _, _ = _random_case(seed, words=6)
    pool = pool + 0.8  # mostly positive cosines, so the clamp is active for some layers
    pool[1, 1::2] = -pool[1, 1::2]  # half the words flipped: negative mean, clamp inactive
    expected = torch.tensor(reference_collapse(pool.tolist()), dtype=torch.float64)
    assert (expected > 0).any() and (expected == 0).any()

    full_x = pool.clone().requires_grad_(True)
    full = collapse_penalty(full_x, full_x, 0)
    full.sum().backward()
    torch.testing.assert_close(full.double(), expected, rtol=1e-6, atol=1e-9)

    # Two "ranks" holding words 0..2 and 3..5 of the same pool: shares and gradients add up.
    split_x = pool.clone().requires_grad_(True)
    shares = collapse_penalty(split_x[:, :3], split_x, 0) + collapse_penalty(split_x[:, 3:], split_x, 3)
    shares.sum().backward()
    torch.testing.assert_close(shares, full.detach())
    torch.testing.assert_close(split_x.grad, full_x.grad)


def test_pool_hidden_means_over_word_positions_only():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 3, 2, generator=g)  # [s, b, h]
    word_mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    got = pool_hidden(hidden, word_mask)
    for b, length in enumerate([2, 1, 4]):
        expected = sum(hidden[t, b] for t in range(length)) / length
        torch.testing.assert_close(got[b], expected)


def test_pool_vocab_rows_over_shards_sums_to_unsharded():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 3, generator=g)
    tokens = torch.tensor([[1, 6, 0], [7, 0, 0]])
    word_mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float32)
    full = pool_vocab_rows(weight, tokens, word_mask, vocab_start=0)
    torch.testing.assert_close(full[0], (weight[1] + weight[6]) / 2)
    torch.testing.assert_close(full[1], weight[7])
    # Two tensor-parallel shards, each pooling the rows it holds; the TP all-reduce is a sum.
    shards = [pool_vocab_rows(weight[:4], tokens, word_mask, vocab_start=0),
              pool_vocab_rows(weight[4:], tokens, word_mask, vocab_start=4)]
    torch.testing.assert_close(shards[0] + shards[1], full)


def test_inject_aux_loss_passes_activation_and_adds_aux_gradient():
    w = torch.tensor([2.0, -1.0], requires_grad=True)
    activation = w * 3
    aux = (w ** 2).sum()
    out = InjectAuxLoss.apply(activation, aux, 1.0)
    assert torch.equal(out, activation)
    out.sum().backward()
    # d/dw [sum(3w)] + d/dw [sum(w^2)] = 3 + 2w
    torch.testing.assert_close(w.grad, torch.tensor([3.0 + 4.0, 3.0 - 2.0]))

    w.grad = None
    InjectAuxLoss.apply(w * 3, (w ** 2).sum(), 4.0).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([3.0 + 16.0, 3.0 - 8.0]))


def test_all_gather_without_group_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x, None) is x
