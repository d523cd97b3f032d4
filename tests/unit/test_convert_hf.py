"""Tier 2 (in process, no process groups): the HF Llama / Mistral / Qwen2 / Qwen3 <-> megatron-core
state-dict adapter.

Config mapping and its errors, the QKV/SwiGLU/bias/QK-norm/vocab-padding tensor layouts,
in-memory round trips on real `transformers` state dicts, llama3 RoPE frequencies against
transformers', and reading the HF weight file formats. The logits parity and the file round
trip through a real dist checkpoint are in tests/distributed/test_convert_parity.py.
"""
from __future__ import annotations

import json

import pytest
import torch

from megatron_prealign.checkpointing import CheckpointError
from megatron_prealign.convert import ConversionError, convert_mcore_to_hf
from megatron_prealign.convert.files import (
    check_assets_tokenizer,
    find_hf_assets,
    hf_weight_files,
    read_hf_config,
    read_hf_state,
)
from megatron_prealign.convert.hf import (
    HF_LM_HEAD,
    SUPPORTED_MODEL_TYPES,
    MC_EMBED,
    MC_FC1,
    MC_OUTPUT,
    MC_QKV,
    check_hf_compatible,
    check_target_layout,
    expected_hf_shapes,
    expected_mcore_shapes,
    fuse_qkv,
    hf_config_from_model_config,
    hf_dtype,
    hf_model_type,
    hf_to_mcore_state,
    mcore_to_hf_state,
    model_config_from_hf,
    split_qkv,
)
from megatron_prealign.model import ModelConfig

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB = 300  # not a multiple of 128: padding differs between TP=1 (384) and TP=2 (512)


def llama_config(**overrides):
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                bos_token_id=5, eos_token_id=6, pad_token_id=0, initializer_range=0.03)
    base.update(overrides)
    return transformers.LlamaConfig(**base)


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def family_config(family: str, **overrides):
    """A tiny config of each supported family (Llama 3 = Llama with llama3-scaled RoPE)."""
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=5, eos_token_id=6)
    if family == "llama3":
        return llama_config(**{"max_position_embeddings": 16384, "rope_parameters": dict(LLAMA3_ROPE), **overrides})
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "qwen3": transformers.Qwen3Config, "mistral": transformers.MistralConfig}[family]
    extra = {"qwen3": {"head_dim": 12}, "mistral": {"sliding_window": 8}}.get(family, {})
    return cls(**{**base, **extra, **overrides})


FAMILIES = ("llama", "llama3", "qwen2", "qwen3", "mistral")


def llama_state(config, seed=0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return {k: v.detach().to(dtype).clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------- config


def test_model_config_from_v5_and_v4_style_configs():
    v5 = llama_config().to_dict()
    assert "rope_parameters" in v5 and "rope_theta" not in v5
    v4 = {k: v for k, v in v5.items() if k != "rope_parameters"}
    v4.update(rope_theta=500000.0, rope_scaling=None, torch_dtype="float32")
    for hf in (v5, v4):
        cfg = model_config_from_hf(hf)
        assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_query_groups,
                cfg.ffn_hidden_size, cfg.vocab_size) == (2, 32, 4, 2, 48, VOCAB)
        assert cfg.rotary_base == 500000 and cfg.norm_epsilon == 1e-5
        assert cfg.untie_embeddings_and_output_weights and cfg.swiglu and not cfg.add_bias_linear
        assert (cfg.normalization, cfg.position_embedding_type) == ("RMSNorm", "rope")
        assert cfg.max_position_embeddings == 64 and cfg.init_method_std == 0.03
    assert not model_config_from_hf(llama_config(tie_word_embeddings=True).to_dict()) \
        .untie_embeddings_and_output_weights
    # Multi-head attention maps to ModelConfig's default (no query groups), and back.
    mha = model_config_from_hf(llama_config(num_key_value_heads=4).to_dict())
    assert mha.num_query_groups is None
    assert hf_config_from_model_config(mha).num_key_value_heads == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_family_features_map_to_megatron_core_options(family):
    cfg = model_config_from_hf(family_config(family).to_dict())
    assert (cfg.add_qkv_bias, cfg.qk_layernorm) == (family == "qwen2", family == "qwen3")
    assert cfg.window_size == ((7, 0) if family == "mistral" else None)
    assert cfg.use_rope_scaling == (family == "llama3")
    assert cfg.rope_scaling_factor == (32.0 if family == "llama3" else ModelConfig.rope_scaling_factor)
    assert cfg.rotary_base == (500000 if family == "llama3" else 10000)
    # Qwen3's head_dim (12) is not hidden/heads (8): --kv-channels; the others keep the default.
    assert (cfg.kv_channels, cfg.head_dim) == ((12, 12) if family == "qwen3" else (None, 8))
    assert hf_model_type(cfg) == ("llama" if family == "llama3" else family)


def test_llama3_rope_of_transformers_4_configs():
    v4 = {k: v for k, v in family_config("llama3").to_dict().items() if k != "rope_parameters"}
    v4.update(rope_theta=500000.0, rope_scaling={k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"})
    cfg = model_config_from_hf(v4)
    assert cfg.use_rope_scaling and cfg.rope_scaling_factor == 32.0 and cfg.rotary_base == 500000


@pytest.mark.parametrize("factor", [8.0, 32.0])
def test_llama3_inverse_frequencies_equal_transformers_bit_for_bit(factor):
    """megatron-core's RotaryEmbedding with rope_scaling, as build_model configures it, computes
    exactly the inverse frequencies transformers' llama3 RoPE computes (head_dim 128, theta 5e5:
    all three frequency bands occur)."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = family_config("llama3", hidden_size=1024, num_attention_heads=8, num_key_value_heads=8,
                           rope_parameters={**LLAMA3_ROPE, "factor": factor})
    theirs, scale = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    cfg = model_config_from_hf(config.to_dict())
    ours = RotaryEmbedding(kv_channels=cfg.head_dim, rotary_percent=1.0, rotary_base=cfg.rotary_base,
                           rope_scaling=cfg.use_rope_scaling, rope_scaling_factor=cfg.rope_scaling_factor,
                           use_cpu_initialization=True).inv_freq
    assert scale == 1.0 and ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    plain = 1.0 / (500000 ** (torch.arange(0, 128, 2, dtype=torch.float32) / 128))
    assert torch.equal(ours[:4], plain[:4]) and torch.equal(ours[-1], plain[-1] / factor)
    assert not torch.equal(ours, plain)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tied", [False, True])
def test_every_family_config_round_trips(family, tied):
    source = family_config(family, tie_word_embeddings=tied, dtype="bfloat16").to_dict()
    source["architectures"] = [SUPPORTED_MODEL_TYPES[source["model_type"]]]
    back = hf_config_from_model_config(model_config_from_hf(source), base=source, dtype=torch.bfloat16)
    assert back.to_dict() == transformers.AutoConfig.for_model(**source).to_dict()
    # Without the source config the family and its architecture fields still come back.
    bare = hf_config_from_model_config(model_config_from_hf(source)).to_dict()
    assert bare["model_type"] == source["model_type"]
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "rope_parameters", "tie_word_embeddings",
                "max_position_embeddings", "head_dim", "sliding_window"):
        assert bare.get(key) == source.get(key), key


@pytest.mark.parametrize("tied", [False, True])
def test_hf_config_round_trip_preserves_every_field(tied):
    source = llama_config(tie_word_embeddings=tied, dtype="bfloat16", architectures=["LlamaForCausalLM"]).to_dict()
    cfg = model_config_from_hf(source)
    dtype = hf_dtype(source)
    assert dtype is torch.bfloat16
    back = hf_config_from_model_config(cfg, base=source, dtype=dtype)
    assert back.to_dict() == transformers.LlamaConfig.from_dict(source).to_dict()
    # Without the source config the architecture still comes back exactly.
    bare = hf_config_from_model_config(cfg).to_dict()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "rope_parameters",
                "tie_word_embeddings", "max_position_embeddings", "head_dim"):
        assert bare[key] == source[key], key


@pytest.mark.parametrize("family, change, field", [
    ("llama", {"architectures": ["GemmaForCausalLM"]}, "architectures"),
    ("llama", {"architectures": ["MistralForCausalLM"]}, "architectures"),
    ("llama", {"model_type": "gemma"}, "model_type"),
    ("llama", {"attention_bias": True}, "attention_bias"),
    ("llama", {"mlp_bias": True}, "mlp_bias"),
    ("qwen3", {"attention_bias": True}, "attention_bias"),
    ("llama", {"hidden_act": "gelu"}, "hidden_act"),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_parameters.rope_type"),
    ("llama", {"rope_parameters": None, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling.rope_type"),
    ("llama", {"rope_parameters": None, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
     "rope_scaling.low_freq_factor"),
    ("llama3", {"rope_parameters": {**LLAMA3_ROPE, "high_freq_factor": 2.0}}, "rope_parameters.high_freq_factor"),
    ("llama3", {"rope_parameters": {**LLAMA3_ROPE, "original_max_position_embeddings": 4096}},
     "rope_parameters.original_max_position_embeddings"),
    ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "rope_parameters.partial_rotary_factor"),
    ("llama", {"rope_parameters": None, "rope_theta": 10000.5}, "rope_theta"),
    ("qwen2", {"use_sliding_window": True}, "use_sliding_window"),
    ("qwen3", {"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
    ("llama", {"sliding_window": 16}, "sliding_window"),
    ("llama", {"hidden_size": None}, "hidden_size"),
])
def test_unsupported_or_incomplete_configs_name_the_field(family, change, field):
    hf = family_config(family).to_dict()
    hf["architectures"] = [SUPPORTED_MODEL_TYPES[hf["model_type"]]]
    hf.update(change)
    with pytest.raises(ConversionError, match=f"`{field}`"):
        model_config_from_hf(hf)


def test_export_refuses_what_no_hf_family_expresses():
    with pytest.raises(ConversionError, match="add_qkv_bias=True, which Hugging Face's 'qwen3' cannot express"):
        hf_model_type(ModelConfig(add_qkv_bias=True, qk_layernorm=True))
    with pytest.raises(ConversionError, match=r"window_size=\(4, 0\), which Hugging Face's 'qwen2'"):
        hf_model_type(ModelConfig(add_qkv_bias=True, window_size=(4, 0)))
    with pytest.raises(ConversionError, match="looks ahead"):
        hf_model_type(ModelConfig(window_size=(4, 2)))
    # A model converted from a Llama and later given q/k/v biases cannot go back as a Llama.
    with pytest.raises(ConversionError, match="'llama' cannot express"):
        hf_model_type(ModelConfig(add_qkv_bias=True), base={"model_type": "llama"})


def test_non_llama_model_config_is_refused_for_export():
    with pytest.raises(ConversionError, match="normalization='LayerNorm'"):
        check_hf_compatible(ModelConfig(normalization="LayerNorm"))
    with pytest.raises(ConversionError, match="position_embedding_type"):
        hf_config_from_model_config(ModelConfig(position_embedding_type="learned_absolute"))


def test_target_layout_errors_name_the_flag():
    cfg = model_config_from_hf(llama_config(num_attention_heads=8, num_key_value_heads=2).to_dict())
    check_target_layout(cfg, 2, 2)
    with pytest.raises(ConversionError, match=r"--target-tensor-parallel-size 4 .*num_key_value_heads.*=2; choose one of \[1, 2\]"):
        check_target_layout(cfg, 4, 1)
    with pytest.raises(ConversionError, match=r"--target-tensor-parallel-size 3 .*num_attention_heads=8"):
        check_target_layout(cfg, 3, 1)
    with pytest.raises(ConversionError, match=r"--target-pipeline-parallel-size 3 .*num_hidden_layers=2"):
        check_target_layout(cfg, 1, 3)


# ---------------------------------------------------------------------------------- layouts


def test_fuse_qkv_interleaves_heads_per_query_group():
    # 4 query heads in 2 groups, head_dim 1: row value = its name's code.
    q = torch.tensor([[10.0], [11.0], [12.0], [13.0]])
    k = torch.tensor([[20.0], [21.0]])
    v = torch.tensor([[30.0], [31.0]])
    fused = fuse_qkv(q, k, v, num_query_groups=2)
    assert fused.flatten().tolist() == [10, 11, 20, 30, 12, 13, 21, 31]


@pytest.mark.parametrize("heads, groups", [(4, 4), (4, 2), (8, 1)])
def test_split_qkv_inverts_fuse(heads, groups):
    d, h = 3, 5
    q, k, v = torch.randn(heads * d, h), torch.randn(groups * d, h), torch.randn(groups * d, h)
    back = split_qkv(fuse_qkv(q, k, v, groups), heads, groups, d)
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v)))


@pytest.mark.parametrize("tied, dtype, tp", [(False, torch.float32, 1), (False, torch.bfloat16, 2),
                                             (True, torch.float16, 2)])
def test_state_round_trip_is_bit_identical_and_padding_is_undone(tied, dtype, tp):
    config = llama_config(tie_word_embeddings=tied)
    cfg = model_config_from_hf(config.to_dict())
    hf = llama_state(config, dtype=dtype)
    full = hf_to_mcore_state(hf, cfg, tensor_model_parallel_size=tp)
    rows = cfg.padded_vocab_size(tp)
    assert rows == (384 if tp == 1 else 512)
    assert {k: tuple(v.shape) for k, v in full.items()} == expected_mcore_shapes(cfg, rows)
    assert (MC_OUTPUT in full) == (not tied)
    assert torch.equal(full[MC_EMBED][:VOCAB], hf["model.embed_tokens.weight"])
    assert not full[MC_EMBED][VOCAB:].any()
    # SwiGLU: [gate; up]; QKV group 0 starts with query heads 0-1, then key 0, then value 0.
    assert torch.equal(full[MC_FC1][1, :48], hf["model.layers.1.mlp.gate_proj.weight"])
    assert torch.equal(full[MC_FC1][1, 48:], hf["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(full[MC_QKV][0, 16:24], hf["model.layers.0.self_attn.k_proj.weight"][:8])
    back = mcore_to_hf_state(full, cfg, dtype=dtype)
    expected = {k: v for k, v in hf.items() if not (tied and k == HF_LM_HEAD)}
    assert back.keys() == expected.keys()
    for key, tensor in expected.items():
        assert back[key].dtype == dtype and torch.equal(back[key], tensor), key
        assert back[key].is_contiguous()


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral", "llama3"])
def test_family_state_round_trip_is_bit_identical(family):
    config = family_config(family, tie_word_embeddings=family == "qwen2")
    cfg = model_config_from_hf(config.to_dict())
    hf = llama_state(config, dtype=torch.bfloat16)
    assert hf.keys() - {HF_LM_HEAD} == expected_hf_shapes(cfg).keys() - {HF_LM_HEAD}
    full = hf_to_mcore_state(hf, cfg, tensor_model_parallel_size=2)
    assert {k: tuple(v.shape) for k, v in full.items()} == expected_mcore_shapes(cfg, 512)
    d = cfg.head_dim
    if family == "qwen2":
        # The bias is interleaved per group like the weight: group 1 = q heads 2-3, k 1, v 1.
        bias = full["decoder.layers.self_attention.linear_qkv.bias"][1]
        group = slice(4 * d, 8 * d)
        assert torch.equal(bias[group][:2 * d], hf["model.layers.1.self_attn.q_proj.bias"][2 * d:])
        assert torch.equal(bias[group][2 * d:3 * d], hf["model.layers.1.self_attn.k_proj.bias"][d:])
        assert torch.equal(bias[group][3 * d:], hf["model.layers.1.self_attn.v_proj.bias"][d:])
    if family == "qwen3":
        assert torch.equal(full["decoder.layers.self_attention.k_layernorm.weight"][0],
                           hf["model.layers.0.self_attn.k_norm.weight"])
        assert full["decoder.layers.self_attention.linear_proj.weight"].shape == (2, 32, 4 * 12)
    back = mcore_to_hf_state(full, cfg, dtype=torch.bfloat16)
    expected = {k: v for k, v in hf.items() if not (not cfg.untie_embeddings_and_output_weights and k == HF_LM_HEAD)}
    assert back.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(back[key], tensor), key


def test_hf_shape_mismatch_names_the_tensor():
    config = llama_config()
    cfg = model_config_from_hf(config.to_dict())
    hf = llama_state(config)
    hf["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(24, 32)  # 3 key heads, config says 2
    with pytest.raises(ConversionError, match=r"tensor model\.layers\.1\.self_attn\.k_proj\.weight has "
                                              r"shape \(24, 32\), but config\.json implies \(16, 32\)"):
        hf_to_mcore_state(hf, cfg)
    hf = llama_state(config)
    hf["model.layers.0.mlp.down_proj.weight"] = torch.zeros(32, 40)
    with pytest.raises(ConversionError, match=r"model\.layers\.0\.mlp\.down_proj\.weight has shape \(32, 40\), "
                                              r"but config\.json implies \(32, 48\)"):
        hf_to_mcore_state(hf, cfg)


def test_missing_unexpected_and_inconsistent_tensors_are_named():
    config = llama_config()
    cfg = model_config_from_hf(config.to_dict())
    hf = llama_state(config)
    del hf["model.layers.1.post_attention_layernorm.weight"]
    with pytest.raises(ConversionError, match=r"missing .*model\.layers\.1\.post_attention_layernorm\.weight"):
        hf_to_mcore_state(hf, cfg)
    hf = llama_state(config)
    hf["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    with pytest.raises(ConversionError, match=r"unexpected .*model\.layers\.0\.self_attn\.q_proj\.bias"):
        hf_to_mcore_state(hf, cfg)
    # Old checkpoints carry RoPE buffers: ignored.
    hf = llama_state(config)
    hf["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    hf_to_mcore_state(hf, cfg)
    tied = llama_config(tie_word_embeddings=True)
    hf = llama_state(tied)
    hf[HF_LM_HEAD] = hf[HF_LM_HEAD] + 1
    with pytest.raises(ConversionError, match="lm_head.weight differs from model.embed_tokens.weight"):
        hf_to_mcore_state(hf, model_config_from_hf(tied.to_dict()))


def test_mcore_shape_mismatch_names_the_tensor():
    config = llama_config()
    cfg = model_config_from_hf(config.to_dict())
    full = hf_to_mcore_state(llama_state(config), cfg)
    full[MC_QKV] = full[MC_QKV][:, :-8]
    with pytest.raises(ConversionError, match=r"tensor decoder\.layers\.self_attention\.linear_qkv\.weight has shape \(2, 56, 32\)"):
        mcore_to_hf_state(full, cfg)
    del full[MC_QKV]
    with pytest.raises(ConversionError, match="no tensor decoder.layers.self_attention.linear_qkv.weight"):
        mcore_to_hf_state(full, cfg)


# ---------------------------------------------------------------------------------- files


def _write_config(path, config):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config.to_json_string())


def test_reads_single_sharded_safetensors_and_bin_alike(tmp_path):
    config = llama_config()
    hf = llama_state(config)
    single, sharded, binary = tmp_path / "single", tmp_path / "sharded", tmp_path / "bin"
    for d in (single, sharded, binary):
        _write_config(d, config)
    safetensors_torch.save_file(hf, str(single / "model.safetensors"))
    names = sorted(hf)
    halves = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for file, keys in halves.items():
        safetensors_torch.save_file({k: hf[k] for k in keys}, str(sharded / file))
    weight_map = {k: file for file, keys in halves.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    torch.save(hf, binary / "pytorch_model.bin")
    assert [f.name for f in hf_weight_files(sharded)] == sorted(halves)
    for d in (single, sharded, binary):
        state = read_hf_state(d)
        assert state.keys() == hf.keys() and all(torch.equal(state[k], hf[k]) for k in hf), d.name
    assert read_hf_config(single)["num_key_value_heads"] == 2


def test_missing_files_are_reported_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_hf_config(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        read_hf_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected model.safetensors, model.safetensors.index.json, "
                                                "pytorch_model.bin or pytorch_model.bin.index.json"):
        hf_weight_files(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "part-1.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="part-1.safetensors"):
        hf_weight_files(tmp_path)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        convert_mcore_to_hf(tmp_path, tmp_path / "out")


def test_export_refuses_non_llama_checkpoint_and_stale_outputs(tmp_path):
    from megatron_prealign.convert.files import check_output_dir

    with pytest.raises(ConversionError, match="normalization='LayerNorm'"):
        check_hf_compatible(ModelConfig(normalization="LayerNorm"))
    out = tmp_path / "hf"
    out.mkdir()
    check_output_dir(out, overwrite=False)  # empty: fine
    (out / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(ConversionError, match="is not empty .*model.safetensors.index.json.*--overwrite"):
        check_output_dir(out, overwrite=False)
    check_output_dir(out, overwrite=True)


def test_carried_tokenizer_is_found_and_checked_against_the_trained_one(tmp_path):
    import shutil

    from megatron_prealign.lexicon import build_tokenizer
    from tests.conftest import ASSETS

    root, recorded = tmp_path / "root", tmp_path / "converted" / "hf_assets"
    (root / "iter_0000004").mkdir(parents=True)
    recorded.mkdir(parents=True)
    shutil.copyfile(ASSETS / "tiny_sp.model", recorded / "tokenizer.model")
    state = {"source": {"assets_dir": str(recorded)}}
    # A training root has no hf_assets of its own: the one recorded at conversion is used.
    assert find_hf_assets(root / "iter_0000004", state) == recorded
    (root / "hf_assets").mkdir()
    assert find_hf_assets(root / "iter_0000004", state) == root / "hf_assets"
    assert find_hf_assets(root / "iter_0000004", {}) == root / "hf_assets"
    fingerprint = build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model").fingerprint
    trained = {"tokenizer_fingerprint": fingerprint, "config": {"data": {"tokenizer_type": "SentencePieceTokenizer",
                                                                         "tokenizer_model": "tok.model"}}}
    check_assets_tokenizer(recorded, trained)
    with pytest.raises(ConversionError, match=r"not the one the checkpoint was trained with .*--hf-assets"):
        check_assets_tokenizer(recorded, {**trained, "tokenizer_fingerprint": "0" * 64})
    with pytest.raises(ConversionError, match="do not load as the run's SentencePieceTokenizer"):
        check_assets_tokenizer(root / "hf_assets", trained)

