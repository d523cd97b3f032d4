"""State-dict adapter: Hugging Face Llama <-> megatron-core GPTModel (pure functions, no files
or process groups; files.py does the reading and writing).

* `model_config_from_hf` / `hf_config_from_model_config`: config.json <-> ModelConfig, with a
  ConversionError naming the field for anything the model would not reproduce exactly.
* `hf_to_mcore_state` / `mcore_to_hf_state`: tensors by HF name <-> full tensors by megatron-core's
  global dist-checkpoint name (the form `checkpointing.read_full_checkpoint` returns).

Tensor layout differences handled here (verified against megatron-core 0.16.1's local spec):

* Layers are stacked: `decoder.layers.<name>` has a leading axis of size num_layers.
* `linear_qkv.weight` interleaves per key/value group: for each group g, the group's query heads,
  then its key head, then its value head ([groups * (heads/groups + 2) * head_dim, hidden]).
* `linear_fc1.weight` is [gate; up] (megatron's SwiGLU applies SiLU to the first half). The
  SwiGLU sharded factory stores it in that order for every TP degree.
* The embedding (and untied output layer) has `ModelConfig.padded_vocab_size(TP)` rows. Import
  appends zero rows (a padded row is never an input token, and its output logit starts at 0);
  export drops every row past `vocab_size`. megatron-core itself loads these two tensors at
  another padding (`allow_shape_mismatch`: missing rows zero), so the target TP is not binding.
* Tied embeddings: megatron stores no `output_layer.weight`; HF stores no `lm_head.weight`.

Precision: the dist checkpoint holds float32 parameters (the trainer casts to its own precision).
Export writes the source model's dtype (recorded at import) or, for checkpoints that did not
come from Hugging Face, the stored dtype; bf16/fp16 -> fp32 -> bf16/fp16 is exact, so an
unchanged model round-trips bit for bit.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from megatron_prealign.model.config import ModelConfig

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)

# HF tensor names.
HF_EMBED = "model.embed_tokens.weight"
HF_FINAL_NORM = "model.norm.weight"
HF_LM_HEAD = "lm_head.weight"
HF_LAYER = "model.layers.{}."
# Buffers that older transformers versions saved with the weights; recomputed from the config.
HF_IGNORED_SUFFIXES = ("self_attn.rotary_emb.inv_freq",)

# megatron-core global (dist-checkpoint) tensor names.
MC_EMBED = "embedding.word_embeddings.weight"
MC_FINAL_NORM = "decoder.final_layernorm.weight"
MC_OUTPUT = "output_layer.weight"
MC_QKV = "decoder.layers.self_attention.linear_qkv.weight"
MC_FC1 = "decoder.layers.mlp.linear_fc1.weight"
# Per-layer tensors that map one to one (megatron global name -> HF name within the layer).
LAYER_ONE_TO_ONE = {
    "decoder.layers.self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "decoder.layers.self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "decoder.layers.mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
    "decoder.layers.mlp.linear_fc2.weight": "mlp.down_proj.weight",
}


class ConversionError(ValueError):
    """A checkpoint or config cannot be converted; the message names the field or tensor."""


# ------------------------------------------------------------------------------------------
# Config mapping
# ------------------------------------------------------------------------------------------

def _require(hf: Mapping[str, Any], name: str) -> Any:
    if hf.get(name) is None:
        raise ConversionError(f"config.json has no `{name}`, which a Llama config needs")
    return hf[name]


def _rope_theta(hf: Mapping[str, Any]) -> int:
    """RoPE base from either config convention: transformers 4.x (`rope_theta`, `rope_scaling`)
    or 5.x (`rope_parameters`). Only unscaled RoPE is supported."""
    theta = hf.get("rope_theta", 10000.0)
    params = hf.get("rope_parameters")
    if params is not None:
        if not isinstance(params, Mapping) or any(isinstance(v, Mapping) for v in params.values()):
            raise ConversionError(
                f"unsupported `rope_parameters` {params!r}: only one RoPE setting for all layers is supported")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type != "default":
            raise ConversionError(
                f"unsupported `rope_parameters.rope_type` {rope_type!r}: only unscaled RoPE ('default') "
                f"is supported")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise ConversionError("unsupported `rope_parameters.partial_rotary_factor` (only 1.0)")
        theta = params.get("rope_theta", theta)
    scaling = hf.get("rope_scaling")
    if scaling is not None:
        rope_type = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, Mapping) else scaling
        if rope_type != "default":
            raise ConversionError(
                f"unsupported `rope_scaling` {scaling!r}: only unscaled RoPE is supported")
    if float(theta) != int(theta):
        raise ConversionError(f"unsupported `rope_theta` {theta}: --rotary-base must be an integer")
    return int(theta)


def model_config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
    """ModelConfig for a Hugging Face Llama config (the parsed config.json).

    Raises ConversionError naming the field for architectures and options megatron_prealign's
    model does not reproduce exactly (attention/MLP biases, other activations, scaled RoPE,
    a head_dim other than hidden_size / num_attention_heads).
    """
    architectures = hf.get("architectures") or []
    if architectures:
        unsupported = [a for a in architectures if a not in SUPPORTED_ARCHITECTURES]
        if unsupported:
            raise ConversionError(
                f"unsupported architecture {', '.join(unsupported)} (config.json `architectures`); "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    model_type = hf.get("model_type", "llama")
    if model_type != "llama":
        raise ConversionError(f"unsupported `model_type` {model_type!r}; supported: 'llama'")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"unsupported `hidden_act` {hf['hidden_act']!r}: SwiGLU needs 'silu'")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise ConversionError(f"unsupported `{flag}`=true: the model has no biases in linear layers")
    hidden = _require(hf, "hidden_size")
    heads = _require(hf, "num_attention_heads")
    if hidden % heads:
        raise ConversionError(f"`hidden_size` {hidden} is not divisible by `num_attention_heads` {heads}")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != hidden // heads:
        raise ConversionError(
            f"unsupported `head_dim` {head_dim}: must equal hidden_size / num_attention_heads = {hidden // heads}")
    positions = _require(hf, "max_position_embeddings")
    groups = hf.get("num_key_value_heads") or heads
    return ModelConfig(
        num_layers=_require(hf, "num_hidden_layers"),
        hidden_size=hidden,
        num_attention_heads=heads,
        # None (the ModelConfig default) means one group per head, i.e. plain multi-head attention.
        num_query_groups=groups if groups != heads else None,
        ffn_hidden_size=_require(hf, "intermediate_size"),
        seq_length=positions,
        max_position_embeddings=positions,
        position_embedding_type="rope",
        rotary_base=_rope_theta(hf),
        normalization="RMSNorm",
        norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
        swiglu=True,
        add_bias_linear=False,
        untie_embeddings_and_output_weights=not hf.get("tie_word_embeddings", False),
        vocab_size=_require(hf, "vocab_size"),
        init_method_std=float(hf.get("initializer_range", 0.02)),
        attention_dropout=float(hf.get("attention_dropout") or 0.0),
    )


def check_llama_compatible(cfg: ModelConfig) -> None:
    """Raise ConversionError naming the ModelConfig field that has no Llama equivalent."""
    wanted = {"position_embedding_type": "rope", "normalization": "RMSNorm", "swiglu": True,
              "add_bias_linear": False}
    for name, value in wanted.items():
        if getattr(cfg, name) != value:
            raise ConversionError(
                f"the checkpoint's model is not a Llama: {name}={getattr(cfg, name)!r} (Llama needs {value!r})")


def hf_config_from_model_config(cfg: ModelConfig, base: Mapping[str, Any] | None = None,
                                dtype: torch.dtype | None = None):
    """A transformers `LlamaConfig` for `cfg`.

    `base` (the source model's config.json, when the checkpoint came from Hugging Face) supplies
    everything the architecture does not determine (token ids, generation defaults, ...);
    architecture fields always come from `cfg`.
    """
    check_llama_compatible(cfg)
    try:
        from transformers import LlamaConfig
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConversionError("writing a Hugging Face config needs transformers: "
                              "pip install -e '.[hf]'") from exc
    rope_keys = ("rope_theta", "rope_scaling", "rope_parameters")
    merged = {k: v for k, v in (base or {}).items() if k not in rope_keys}
    merged.update(
        architectures=list(SUPPORTED_ARCHITECTURES),
        model_type="llama",
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size or 4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_query_groups or cfg.num_attention_heads,
        head_dim=cfg.hidden_size // cfg.num_attention_heads,
        hidden_act="silu",
        max_position_embeddings=cfg.max_position_embeddings or cfg.seq_length,
        rms_norm_eps=cfg.norm_epsilon,
        rope_theta=float(cfg.rotary_base),
        tie_word_embeddings=not cfg.untie_embeddings_and_output_weights,
        attention_bias=False,
        mlp_bias=False,
    )
    if "initializer_range" not in merged:
        merged["initializer_range"] = cfg.init_method_std
    if dtype is not None:
        merged.pop("torch_dtype", None)
        merged["dtype"] = str(dtype).removeprefix("torch.")
    return LlamaConfig.from_dict(merged)


def hf_dtype(hf: Mapping[str, Any]) -> torch.dtype | None:
    """The parameter dtype a config.json declares (`dtype`, or `torch_dtype` before v5)."""
    name = hf.get("dtype") or hf.get("torch_dtype")
    if name is None:
        return None
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ConversionError(f"unknown `dtype` {name!r} in config.json")
    return dtype


def check_target_layout(cfg: ModelConfig, tensor_model_parallel_size: int,
                        pipeline_model_parallel_size: int) -> None:
    """Raise ConversionError when the model cannot be split at the target layout."""
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    if tp < 1 or pp < 1:
        raise ConversionError("--target-tensor-parallel-size and --target-pipeline-parallel-size must be >= 1")
    groups = cfg.num_query_groups or cfg.num_attention_heads
    for what, value in (("num_attention_heads", cfg.num_attention_heads),
                        ("num_key_value_heads (query groups)", groups),
                        ("intermediate_size", cfg.ffn_hidden_size or 4 * cfg.hidden_size)):
        if value % tp:
            raise ConversionError(
                f"--target-tensor-parallel-size {tp} does not divide {what}={value}; "
                f"choose one of {_divisors(value)}")
    if cfg.num_layers % pp:
        raise ConversionError(
            f"--target-pipeline-parallel-size {pp} does not divide num_hidden_layers={cfg.num_layers}; "
            f"choose one of {_divisors(cfg.num_layers)}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ------------------------------------------------------------------------------------------
# Tensor mapping
# ------------------------------------------------------------------------------------------

def _dims(cfg: ModelConfig) -> tuple[int, int, int, int, int]:
    heads = cfg.num_attention_heads
    groups = cfg.num_query_groups or heads
    head_dim = cfg.hidden_size // heads
    return cfg.hidden_size, heads, groups, head_dim, cfg.ffn_hidden_size or 4 * cfg.hidden_size


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name a Llama with this config has, with its shape."""
    h, heads, groups, d, ffn = _dims(cfg)
    per_layer = {
        "input_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (heads * d, h),
        "self_attn.k_proj.weight": (groups * d, h),
        "self_attn.v_proj.weight": (groups * d, h),
        "self_attn.o_proj.weight": (h, heads * d),
        "post_attention_layernorm.weight": (h,),
        "mlp.gate_proj.weight": (ffn, h),
        "mlp.up_proj.weight": (ffn, h),
        "mlp.down_proj.weight": (h, ffn),
    }
    shapes = {HF_EMBED: (cfg.vocab_size, h), HF_FINAL_NORM: (h,)}
    for i in range(cfg.num_layers):
        shapes.update({HF_LAYER.format(i) + name: shape for name, shape in per_layer.items()})
    if cfg.untie_embeddings_and_output_weights:
        shapes[HF_LM_HEAD] = (cfg.vocab_size, h)
    return shapes


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_query_groups: int) -> torch.Tensor:
    """HF q/k/v projections -> megatron's group-interleaved linear_qkv weight."""
    hidden = q.shape[-1]
    qg = q.reshape(num_query_groups, -1, hidden)
    kg = k.reshape(num_query_groups, -1, hidden)
    vg = v.reshape(num_query_groups, -1, hidden)
    return torch.cat([qg, kg, vg], dim=1).reshape(-1, hidden)


def split_qkv(qkv: torch.Tensor, num_attention_heads: int, num_query_groups: int,
              head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `fuse_qkv`."""
    hidden = qkv.shape[-1]
    per_group = num_attention_heads // num_query_groups * head_dim
    grouped = qkv.reshape(num_query_groups, per_group + 2 * head_dim, hidden)
    q, k, v = torch.split(grouped, [per_group, head_dim, head_dim], dim=1)
    return q.reshape(-1, hidden), k.reshape(-1, hidden), v.reshape(-1, hidden)


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    if weight.shape[0] == rows:
        return weight
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], *weight.shape[1:])])


def validate_hf_state(hf_state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> None:
    """Check names and shapes against the config; errors name the tensor."""
    expected = expected_hf_shapes(cfg)
    missing = [name for name in expected if name not in hf_state]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ConversionError(f"checkpoint is missing tensor(s) {', '.join(missing[:5])}{more}")
    for name, shape in expected.items():
        if tuple(hf_state[name].shape) != shape:
            raise ConversionError(
                f"tensor {name} has shape {tuple(hf_state[name].shape)}, but config.json implies {shape}")
    extra = [name for name in hf_state if name not in expected
             and not name.endswith(HF_IGNORED_SUFFIXES)]
    if extra == [HF_LM_HEAD]:
        # Tied model saved with an explicit copy of the embedding.
        if not torch.equal(hf_state[HF_LM_HEAD], hf_state[HF_EMBED]):
            raise ConversionError(
                f"tensor {HF_LM_HEAD} differs from {HF_EMBED} but config.json sets tie_word_embeddings=true")
        extra = []
    if extra:
        more = f" (and {len(extra) - 5} more)" if len(extra) > 5 else ""
        raise ConversionError(
            f"unexpected tensor(s) {', '.join(extra[:5])}{more}: not part of a Llama with this config "
            f"(biases or another architecture?)")


def hf_to_mcore_state(hf_state: Mapping[str, torch.Tensor], cfg: ModelConfig,
                      tensor_model_parallel_size: int = 1) -> dict[str, torch.Tensor]:
    """HF Llama tensors -> full megatron-core tensors by global name (vocab padded for the TP
    degree, layers stacked). Dtypes are kept."""
    validate_hf_state(hf_state, cfg)
    _, _, groups, _, _ = _dims(cfg)
    rows = cfg.padded_vocab_size(tensor_model_parallel_size)
    layers = range(cfg.num_layers)

    def stack(fn) -> torch.Tensor:
        return torch.stack([fn(HF_LAYER.format(i)) for i in layers])

    full = {
        MC_EMBED: _pad_rows(hf_state[HF_EMBED], rows),
        MC_FINAL_NORM: hf_state[HF_FINAL_NORM],
        MC_QKV: stack(lambda p: fuse_qkv(hf_state[p + "self_attn.q_proj.weight"],
                                         hf_state[p + "self_attn.k_proj.weight"],
                                         hf_state[p + "self_attn.v_proj.weight"], groups)),
        MC_FC1: stack(lambda p: torch.cat([hf_state[p + "mlp.gate_proj.weight"],
                                           hf_state[p + "mlp.up_proj.weight"]])),
    }
    for mc_name, hf_suffix in LAYER_ONE_TO_ONE.items():
        full[mc_name] = stack(lambda p: hf_state[p + hf_suffix])
    if cfg.untie_embeddings_and_output_weights:
        full[MC_OUTPUT] = _pad_rows(hf_state[HF_LM_HEAD], rows)
    return full


def expected_mcore_shapes(cfg: ModelConfig, padded_vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every global megatron-core tensor name of this model, with its full shape."""
    h, heads, groups, d, ffn = _dims(cfg)
    layers = cfg.num_layers
    shapes = {
        MC_EMBED: (padded_vocab_size, h),
        MC_FINAL_NORM: (h,),
        MC_QKV: (layers, (heads + 2 * groups) * d, h),
        MC_FC1: (layers, 2 * ffn, h),
        "decoder.layers.self_attention.linear_qkv.layer_norm_weight": (layers, h),
        "decoder.layers.self_attention.linear_proj.weight": (layers, h, heads * d),
        "decoder.layers.mlp.linear_fc1.layer_norm_weight": (layers, h),
        "decoder.layers.mlp.linear_fc2.weight": (layers, h, ffn),
    }
    if cfg.untie_embeddings_and_output_weights:
        shapes[MC_OUTPUT] = (padded_vocab_size, h)
    return shapes


def mcore_to_hf_state(full: Mapping[str, torch.Tensor], cfg: ModelConfig,
                      dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Full megatron-core tensors -> HF Llama tensors (vocab padding removed), each a separate
    contiguous tensor in `dtype` (default: as stored)."""
    check_llama_compatible(cfg)
    if MC_EMBED not in full:
        raise ConversionError(f"checkpoint has no tensor {MC_EMBED}")
    padded = full[MC_EMBED].shape[0]
    if padded < cfg.vocab_size:
        raise ConversionError(
            f"tensor {MC_EMBED} has {padded} rows, fewer than the model's vocab_size {cfg.vocab_size}")
    for name, shape in expected_mcore_shapes(cfg, padded).items():
        if name not in full:
            raise ConversionError(f"checkpoint has no tensor {name}")
        if tuple(full[name].shape) != shape:
            raise ConversionError(
                f"tensor {name} has shape {tuple(full[name].shape)}, but the checkpoint's model config implies {shape}")
    _, heads, groups, d, ffn = _dims(cfg)

    def out(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype or t.dtype).clone(memory_format=torch.contiguous_format)

    hf = {HF_EMBED: out(full[MC_EMBED][:cfg.vocab_size]), HF_FINAL_NORM: out(full[MC_FINAL_NORM])}
    for i in range(cfg.num_layers):
        p = HF_LAYER.format(i)
        q, k, v = split_qkv(full[MC_QKV][i], heads, groups, d)
        gate, up = torch.split(full[MC_FC1][i], [ffn, ffn])
        hf.update({p + "self_attn.q_proj.weight": out(q), p + "self_attn.k_proj.weight": out(k),
                   p + "self_attn.v_proj.weight": out(v), p + "mlp.gate_proj.weight": out(gate),
                   p + "mlp.up_proj.weight": out(up)})
        for mc_name, hf_suffix in LAYER_ONE_TO_ONE.items():
            hf[p + hf_suffix] = out(full[mc_name][i])
    if cfg.untie_embeddings_and_output_weights:
        hf[HF_LM_HEAD] = out(full[MC_OUTPUT][:cfg.vocab_size])
    return hf


__all__ = [
    "SUPPORTED_ARCHITECTURES", "ConversionError", "check_llama_compatible", "check_target_layout",
    "expected_hf_shapes", "expected_mcore_shapes", "fuse_qkv", "hf_config_from_model_config",
    "hf_dtype", "hf_to_mcore_state", "mcore_to_hf_state", "model_config_from_hf", "split_qkv",
    "validate_hf_state",
]
