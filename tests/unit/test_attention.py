"""Tier 2: the SDPA core attention against megatron-core's local DotProductAttention (the oracle),
as a module and inside a whole GPTModel."""
from __future__ import annotations

import importlib.util

import pytest
import torch

ATOL = 2e-6  # fp32; both compute the same softmax(QK^T / sqrt(d)) V, in different orders


@pytest.fixture(scope="module")
def pgs():
    from megatron_prealign.distributed import single_process_world

    with single_process_world(seed=3) as groups:
        yield groups


def _config(heads=4, groups=2, dropout=0.0):
    from megatron.core.transformer import TransformerConfig

    return TransformerConfig(num_layers=1, hidden_size=32, num_attention_heads=heads, num_query_groups=groups,
                             attention_dropout=dropout, use_cpu_initialization=True, masked_softmax_fusion=False)


def _qkv(seq=12, batch=3, heads=4, groups=2, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(seq, batch, heads, dim, generator=gen, requires_grad=True)
    k = torch.randn(seq, batch, groups, dim, generator=gen, requires_grad=True)
    v = torch.randn(seq, batch, groups, dim, generator=gen, requires_grad=True)
    return q, k, v


def _run(module, q, k, v, mask):
    out = module(q, k, v, mask)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    return out.detach(), [t.grad.clone() for t in (q, k, v)]


@pytest.mark.parametrize("heads,groups", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_matches_local_attention(pgs, heads, groups, masked):
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_prealign.model.attention import SDPAttention

    config = _config(heads, groups)
    if masked:
        # An explicit mask (True = not allowed), as with --reset-attention-mask: causal within two
        # documents of a packed sample, nothing across the boundary.
        seq = 12
        allowed = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
        allowed[7:, :7] = False
        mask, mask_type = (~allowed).expand(3, 1, seq, seq), AttnMaskType.padding
    else:
        mask, mask_type = None, AttnMaskType.causal
    outputs = []
    for cls in (DotProductAttention, SDPAttention):
        module = cls(config, layer_number=1, attn_mask_type=mask_type, attention_type="self", pg_collection=pgs)
        outputs.append(_run(module, *_qkv(heads=heads, groups=groups), mask))
    (local, local_grads), (sdpa, sdpa_grads) = outputs
    assert sdpa.shape == local.shape == (12, 3, heads * 8)
    torch.testing.assert_close(sdpa, local, atol=ATOL, rtol=0)
    for got, want in zip(sdpa_grads, local_grads):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_sdpa_refuses_what_it_does_not_implement(pgs):
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_prealign.model.attention import SDPAttention

    config = TransformerConfig(num_layers=1, hidden_size=32, num_attention_heads=4, window_size=(4, 0),
                               use_cpu_initialization=True)
    with pytest.raises(ValueError, match="sliding-window attention.*--attention-backend local"):
        SDPAttention(config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self",
                     pg_collection=pgs)


def test_gpt_model_with_sdpa_equals_local(pgs):
    """The whole model: same initial weights, logits and gradients to fp32 round-off."""
    from megatron_prealign.model import ModelConfig, build_model
    from megatron_prealign.parallel import ParallelConfig

    results = []
    for backend in ("local", "sdpa"):
        torch.manual_seed(5)
        cfg = ModelConfig(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, seq_length=16,
                          vocab_size=64, make_vocab_size_divisible_by=8, attention_backend=backend)
        model = build_model(cfg, ParallelConfig(), pgs)
        tokens = torch.arange(32).reshape(2, 16) % 64
        positions = torch.arange(16).expand(2, 16)
        losses = model(tokens, positions, None, labels=(tokens + 1) % 64)
        losses.sum().backward()
        results.append((losses.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (local, local_grads), (sdpa, sdpa_grads) = results
    torch.testing.assert_close(sdpa, local, atol=1e-5, rtol=0)
    assert sdpa_grads.keys() == local_grads.keys()
    for name in local_grads:
        torch.testing.assert_close(sdpa_grads[name], local_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_attention_backend_flag():
    from megatron_prealign.model import ModelConfig
    from megatron_prealign.model.specs import resolve_attention_backend

    assert resolve_attention_backend(ModelConfig(attention_backend="sdpa")) == "sdpa"
    # auto: SDPA with CUDA and no TransformerEngine, megatron-core's local attention on the CPU.
    assert resolve_attention_backend(ModelConfig()) == ("sdpa" if torch.cuda.is_available() else "local")
    with pytest.raises(ValueError, match="TransformerEngine kernel.*sdpa"):
        ModelConfig(attention_backend="flash")
    with pytest.raises(ValueError, match="--attention-backend te needs --transformer-impl"):
        ModelConfig(attention_backend="te", transformer_impl="local")
    if not importlib.util.find_spec("transformer_engine") or not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--attention-backend te needs TransformerEngine.*sdpa"):
            resolve_attention_backend(ModelConfig(attention_backend="te"))
    with pytest.raises(ValueError, match="--recompute-granularity full needs --recompute-method"):
        ModelConfig(recompute_granularity="full")
    with pytest.raises(ValueError, match="only to --recompute-granularity full"):
        ModelConfig(recompute_granularity="selective", recompute_num_layers=2)


def test_fused_kernels_only_requested_when_importable(monkeypatch):
    """On CUDA without Apex/TE the model must not ask megatron-core for the fused softmax or the
    persistent LayerNorm: their kernels are imported at call time and are absent (every build
    failed this way on the first GPU run). Simulated here by leaving the CPU layer's path."""
    from megatron_prealign.model import ModelConfig, builder
    from megatron_prealign.parallel import ParallelConfig

    monkeypatch.setattr(builder, "cpu_compat_active", lambda: False)
    config = builder.transformer_config(ModelConfig(), ParallelConfig())
    assert config.persist_layer_norm is builder.HAVE_PERSIST_LAYER_NORM is False
    assert config.masked_softmax_fusion is False  # scaled_masked_softmax_cuda is not installed
    assert config.use_cpu_initialization is False  # the GPU path: per-shard initialization
