"""State-dict adapter: Hugging Face Llama-family models <-> megatron-core GPTModel (pure
functions, no files or process groups; files.py does the reading and writing).

Supported families (`model_type`): `llama` (Llama 2 and 3.x, scaled RoPE included), `mistral`
(sliding-window attention included), `qwen2` (Qwen2/2.5: bias on q/k/v) and `qwen3` (per-head
RMSNorm on queries and keys). All are the same megatron-core GPTModel on stock layer specs with
`--add-qkv-bias`, `--qk-layernorm`, `--use-rope-scaling`, `--window-size` and `--kv-channels`.

* `model_config_from_hf` / `hf_config_from_model_config`: config.json <-> ModelConfig, with a
  ConversionError naming the field for anything the model would not reproduce exactly.
* `hf_to_mcore_state` / `mcore_to_hf_state`: tensors by HF name <-> full tensors by megatron-core's
  global dist-checkpoint name (the form `checkpointing.read_full_checkpoint` returns).

Tensor layout differences handled here (verified against megatron-core 0.16.1's local spec):

* Layers are stacked: `decoder.layers.<name>` has a leading axis of size num_layers.
* `linear_qkv.weight` (and `linear_qkv.bias`) interleave per key/value group: for each group g,
  the group's query heads, then its key head, then its value head
  ([groups * (heads/groups + 2) * head_dim, hidden]).
* `linear_fc1.weight` is [gate; up] (megatron's SwiGLU applies SiLU to the first half). The
  SwiGLU sharded factory stores it in that order for every TP degree.
* Qwen3's `q_norm`/`k_norm` are megatron-core's `q_layernorm`/`k_layernorm` ([head_dim] each,
  applied per head before RoPE in both).
* The embedding (and untied output layer) has `ModelConfig.padded_vocab_size(TP)` rows. Import
  appends zero rows (a padded row is never an input token, and its output logit starts at 0);
  export drops every row past `vocab_size`. megatron-core itself loads these two tensors at
  another padding (`allow_shape_mismatch`: missing rows zero), so the target TP is not binding.
* Tied embeddings: megatron stores no `output_layer.weight`; HF stores no `lm_head.weight`.

RoPE: Llama 3.x's `llama3` scaling is megatron-core's `rope_scaling` (RotaryEmbedding's
`_apply_scaling`, the same formula as transformers' `_compute_llama3_parameters`, inverse
frequencies bit-identical), but megatron-core 0.16.1 hard-codes low_freq_factor=1,
high_freq_factor=4 and original_max_position_embeddings=8192 (every Llama 3.1/3.2/3.3 release
uses these): other values are refused rather than converted to a model with other logits.

Sliding windows: Mistral's `sliding_window` W becomes `--window-size (W-1, 0)` (a query sees
itself and the W-1 keys before it, transformers' rule); megatron-core's local attention (and
TransformerEngine's) apply it, SDPA does not (`--attention-backend auto` then picks local).
Qwen2/Qwen3's per-layer windows (`use_sliding_window`) are refused.

Precision: the dist checkpoint holds float32 parameters (the trainer casts to its own precision).
Export writes the source model's dtype (recorded at import) or, for checkpoints that did not
come from Hugging Face, the stored dtype; bf16/fp16 -> fp32 -> bf16/fp16 is exact, so an
unchanged model round-trips bit for bit.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from megatron_prealign.model.config import ModelConfig

# HF model_type -> the causal-LM architecture name written to config.json.
SUPPORTED_MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
SUPPORTED_ARCHITECTURES = tuple(SUPPORTED_MODEL_TYPES.values())

# The llama3 RoPE parameters megatron-core 0.16.1 fixes (RotaryEmbedding._apply_scaling defaults).
MCORE_LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

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
MC_QKV_BIAS = "decoder.layers.self_attention.linear_qkv.bias"
MC_FC1 = "decoder.layers.mlp.linear_fc1.weight"
# Per-layer tensors that map one to one (megatron global name -> HF name within the layer).
LAYER_ONE_TO_ONE = {
    "decoder.layers.self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "decoder.layers.self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "decoder.layers.mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
    "decoder.layers.mlp.linear_fc2.weight": "mlp.down_proj.weight",
}
QK_NORM_ONE_TO_ONE = {
    "decoder.layers.self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "decoder.layers.self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
}


class ConversionError(ValueError):
    """A checkpoint or config cannot be converted; the message names the field or tensor."""


# ------------------------------------------------------------------------------------------
# Config mapping
# ------------------------------------------------------------------------------------------

def _require(hf: Mapping[str, Any], name: str) -> Any:
    if hf.get(name) is None:
        raise ConversionError(f"config.json has no `{name}`, which a {hf.get('model_type', 'llama')} config needs")
    return hf[name]


def _rope(hf: Mapping[str, Any]) -> tuple[int, float | None]:
    """(RoPE base, llama3 scaling factor or None) from either config convention: transformers
    4.x (`rope_theta`, `rope_scaling`) or 5.x (`rope_parameters`)."""
    key = "rope_parameters" if hf.get("rope_parameters") is not None else "rope_scaling"
    settings = hf.get(key) or {}
    if not isinstance(settings, Mapping) or any(isinstance(v, Mapping) for v in settings.values()):
        raise ConversionError(f"unsupported `{key}` {settings!r}: only one RoPE setting for all layers is supported")
    legacy = hf.get("rope_scaling")
    if key == "rope_parameters" and legacy is not None and legacy != settings:
        raise ConversionError(f"`rope_scaling` {legacy!r} disagrees with `rope_parameters` {settings!r}")
    theta = settings.get("rope_theta", hf.get("rope_theta", 10000.0))
    if float(theta) != int(theta):
        raise ConversionError(f"unsupported `rope_theta` {theta}: --rotary-base must be an integer")
    for where, partial in ((f"{key}.partial_rotary_factor", settings.get("partial_rotary_factor")),
                           ("partial_rotary_factor", hf.get("partial_rotary_factor"))):
        if partial not in (None, 1.0):
            raise ConversionError(f"unsupported `{where}` {partial}: only full rotary (1.0) is supported")
    rope_type = settings.get("rope_type", settings.get("type", "default"))
    if rope_type == "default":
        return int(theta), None
    if rope_type != "llama3":
        raise ConversionError(f"unsupported `{key}.rope_type` {rope_type!r}: supported are 'default' "
                              f"(unscaled) and 'llama3' (Llama 3.x)")
    factor = settings.get("factor")
    if not isinstance(factor, (int, float)) or factor <= 0:
        raise ConversionError(f"`{key}.factor` {factor!r}: llama3 RoPE needs a positive scaling factor")
    for name, fixed in MCORE_LLAMA3_ROPE.items():
        if settings.get(name) is None:
            raise ConversionError(f"config.json has no `{key}.{name}`, which llama3 RoPE needs")
        if float(settings[name]) != fixed:
            raise ConversionError(
                f"unsupported `{key}.{name}` {settings[name]}: megatron-core 0.16.1's llama3 RoPE fixes "
                f"it at {fixed:g} (low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings "
                f"8192, as in every Llama 3.1-3.3 release)")
    return int(theta), float(factor)


def _window(hf: Mapping[str, Any], model_type: str) -> tuple[int, int] | None:
    """`--window-size` from the config's sliding-window fields."""
    layer_types = hf.get("layer_types")
    if layer_types and any(t != "full_attention" for t in layer_types):
        raise ConversionError(f"unsupported `layer_types` {sorted(set(layer_types))}: per-layer attention "
                              f"patterns are not supported (only full attention, or one window for all layers)")
    if model_type in ("qwen2", "qwen3"):
        if hf.get("use_sliding_window"):
            raise ConversionError("unsupported `use_sliding_window`=true: sliding windows on the layers from "
                                  "`max_window_layers` on are not supported")
        return None
    window = hf.get("sliding_window")
    if window is None:
        return None
    if model_type != "mistral":
        raise ConversionError(f"unsupported `sliding_window` {window} for model_type {model_type!r}")
    if not isinstance(window, int) or window < 1:
        raise ConversionError(f"`sliding_window` {window!r} must be a positive integer")
    return (window - 1, 0)


def model_config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
    """ModelConfig for a Hugging Face Llama / Mistral / Qwen2 / Qwen3 config (the parsed config.json).

    Raises ConversionError naming the field for architectures and options megatron_prealign's
    model does not reproduce exactly (biases other than Qwen2's q/k/v ones, other activations,
    RoPE scalings other than Llama 3's, per-layer sliding windows).
    """
    model_type = hf.get("model_type", "llama")
    architectures = hf.get("architectures") or []
    unsupported = [a for a in architectures if a not in SUPPORTED_ARCHITECTURES]
    if unsupported:
        raise ConversionError(
            f"unsupported architecture {', '.join(unsupported)} (config.json `architectures`); "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConversionError(f"unsupported `model_type` {model_type!r}; supported: "
                              f"{', '.join(repr(t) for t in SUPPORTED_MODEL_TYPES)}")
    mismatched = [a for a in architectures if a != SUPPORTED_MODEL_TYPES[model_type]]
    if mismatched:
        raise ConversionError(f"`architectures` {', '.join(mismatched)} does not match `model_type` {model_type!r}")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"unsupported `hidden_act` {hf['hidden_act']!r}: SwiGLU needs 'silu'")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise ConversionError(
                f"unsupported `{flag}`=true for model_type {model_type!r}: megatron-core's --add-qkv-bias "
                f"covers the q/k/v projections only (Qwen2's layout), and the MLP has no biases")
    hidden = _require(hf, "hidden_size")
    heads = _require(hf, "num_attention_heads")
    head_dim = hf.get("head_dim") or (128 if model_type == "qwen3" else None)
    if head_dim is None:
        if hidden % heads:
            raise ConversionError(f"`hidden_size` {hidden} is not divisible by `num_attention_heads` {heads} "
                                  f"and config.json has no `head_dim`")
        head_dim = hidden // heads
    positions = _require(hf, "max_position_embeddings")
    groups = hf.get("num_key_value_heads") or heads
    theta, rope_factor = _rope(hf)
    return ModelConfig(
        num_layers=_require(hf, "num_hidden_layers"),
        hidden_size=hidden,
        num_attention_heads=heads,
        # None (the ModelConfig default) means one group per head, i.e. plain multi-head attention.
        num_query_groups=groups if groups != heads else None,
        kv_channels=None if hidden % heads == 0 and head_dim == hidden // heads else head_dim,
        ffn_hidden_size=_require(hf, "intermediate_size"),
        seq_length=positions,
        max_position_embeddings=positions,
        position_embedding_type="rope",
        rotary_base=theta,
        use_rope_scaling=rope_factor is not None,
        rope_scaling_factor=rope_factor if rope_factor is not None else ModelConfig.rope_scaling_factor,
        normalization="RMSNorm",
        norm_epsilon=float(hf.get("rms_norm_eps", 1e-6)),
        swiglu=True,
        add_bias_linear=False,
        add_qkv_bias=model_type == "qwen2",
        qk_layernorm=model_type == "qwen3",
        window_size=_window(hf, model_type),
        untie_embeddings_and_output_weights=not hf.get("tie_word_embeddings", False),
        vocab_size=_require(hf, "vocab_size"),
        init_method_std=float(hf.get("initializer_range", 0.02)),
        attention_dropout=float(hf.get("attention_dropout") or 0.0),
    )


def hf_model_type(cfg: ModelConfig, base: Mapping[str, Any] | None = None) -> str:
    """The HF `model_type` that expresses `cfg`: the source model's when it came from Hugging
    Face, otherwise the family its features name (QK norm: qwen3, q/k/v bias: qwen2, sliding
    window: mistral, else llama). Raises ConversionError naming the field HF cannot express."""
    wanted = {"position_embedding_type": "rope", "normalization": "RMSNorm", "swiglu": True,
              "add_bias_linear": False}
    for name, value in wanted.items():
        if getattr(cfg, name) != value:
            raise ConversionError(
                f"the checkpoint's model has no Hugging Face Llama-family equivalent: "
                f"{name}={getattr(cfg, name)!r} (needs {value!r})")
    if cfg.window_size is not None and cfg.window_size[1] != 0:
        raise ConversionError(f"window_size={cfg.window_size} looks ahead; Hugging Face sliding windows are causal")
    families = {  # model_type -> (add_qkv_bias, qk_layernorm, window allowed)
        "llama": (False, False, False), "mistral": (False, False, True),
        "qwen2": (True, False, False), "qwen3": (False, True, False),
    }
    model_type = (base or {}).get("model_type")
    if model_type not in families:
        model_type = ("qwen3" if cfg.qk_layernorm else "qwen2" if cfg.add_qkv_bias
                      else "mistral" if cfg.window_size is not None else "llama")
    bias, qk_norm, window = families[model_type]
    for name, have, allowed in (("add_qkv_bias", cfg.add_qkv_bias, bias), ("qk_layernorm", cfg.qk_layernorm, qk_norm)):
        if have != allowed:
            raise ConversionError(f"the checkpoint's model has {name}={have}, which Hugging Face's "
                                  f"{model_type!r} cannot express")
    if cfg.window_size is not None and not window:
        raise ConversionError(f"the checkpoint's model has window_size={cfg.window_size}, which Hugging Face's "
                              f"{model_type!r} cannot express")
    return model_type


def check_hf_compatible(cfg: ModelConfig) -> None:
    """Raise ConversionError naming the ModelConfig field that no supported HF family expresses."""
    hf_model_type(cfg)


def _rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": float(cfg.rotary_base)}
    if cfg.use_rope_scaling:
        params.update(rope_type="llama3", factor=float(cfg.rope_scaling_factor), **MCORE_LLAMA3_ROPE)
    return params


def hf_config_from_model_config(cfg: ModelConfig, base: Mapping[str, Any] | None = None,
                                dtype: torch.dtype | None = None):
    """A transformers config (`LlamaConfig`, `MistralConfig`, `Qwen2Config` or `Qwen3Config`) for `cfg`.

    `base` (the source model's config.json, when the checkpoint came from Hugging Face) supplies
    everything the architecture does not determine (token ids, generation defaults, ...);
    architecture fields always come from `cfg`.
    """
    model_type = hf_model_type(cfg, base)
    try:
        from transformers import CONFIG_MAPPING
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConversionError("writing a Hugging Face config needs transformers: "
                              "pip install -e '.[hf]'") from exc
    rope_keys = ("rope_theta", "rope_scaling", "rope_parameters")
    merged = {k: v for k, v in (base or {}).items() if k not in rope_keys}
    merged.update(
        architectures=[SUPPORTED_MODEL_TYPES[model_type]],
        model_type=model_type,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size or 4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_query_groups or cfg.num_attention_heads,
        hidden_act="silu",
        max_position_embeddings=cfg.max_position_embeddings or cfg.seq_length,
        rms_norm_eps=cfg.norm_epsilon,
        rope_parameters=_rope_parameters(cfg),
        tie_word_embeddings=not cfg.untie_embeddings_and_output_weights,
    )
    if model_type != "qwen2" or cfg.kv_channels is not None:
        # Qwen2Config has no head_dim field (its attention reads one when present).
        merged["head_dim"] = cfg.head_dim
    if model_type == "llama":
        merged.update(attention_bias=False, mlp_bias=False)
    elif model_type == "mistral":
        merged["sliding_window"] = None if cfg.window_size is None else cfg.window_size[0] + 1
    else:
        merged["use_sliding_window"] = False
        if model_type == "qwen3":
            merged["attention_bias"] = False
    if "initializer_range" not in merged:
        merged["initializer_range"] = cfg.init_method_std
    if dtype is not None:
        merged.pop("torch_dtype", None)
        merged["dtype"] = str(dtype).removeprefix("torch.")
    return CONFIG_MAPPING[model_type].from_dict(merged)


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
    return cfg.hidden_size, heads, groups, cfg.head_dim, cfg.ffn_hidden_size or 4 * cfg.hidden_size


def _hf_layer_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor names within one layer, with their shapes."""
    h, heads, groups, d, ffn = _dims(cfg)
    shapes = {
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
    if cfg.add_qkv_bias:
        shapes.update({"self_attn.q_proj.bias": (heads * d,), "self_attn.k_proj.bias": (groups * d,),
                       "self_attn.v_proj.bias": (groups * d,)})
    if cfg.qk_layernorm:
        shapes.update({"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)})
    return shapes


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name a model with this config has, with its shape."""
    per_layer = _hf_layer_tensors(cfg)
    shapes = {HF_EMBED: (cfg.vocab_size, cfg.hidden_size), HF_FINAL_NORM: (cfg.hidden_size,)}
    for i in range(cfg.num_layers):
        shapes.update({HF_LAYER.format(i) + name: shape for name, shape in per_layer.items()})
    if cfg.untie_embeddings_and_output_weights:
        shapes[HF_LM_HEAD] = (cfg.vocab_size, cfg.hidden_size)
    return shapes


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_query_groups: int) -> torch.Tensor:
    """HF q/k/v projections (weights [rows, hidden] or biases [rows]) -> megatron's
    group-interleaved linear_qkv tensor."""
    rest = q.shape[1:]
    qg, kg, vg = (t.reshape(num_query_groups, -1, *rest) for t in (q, k, v))
    return torch.cat([qg, kg, vg], dim=1).reshape(-1, *rest)


def split_qkv(qkv: torch.Tensor, num_attention_heads: int, num_query_groups: int,
              head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `fuse_qkv`."""
    rest = qkv.shape[1:]
    per_group = num_attention_heads // num_query_groups * head_dim
    grouped = qkv.reshape(num_query_groups, per_group + 2 * head_dim, *rest)
    q, k, v = torch.split(grouped, [per_group, head_dim, head_dim], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def _one_to_one(cfg: ModelConfig) -> dict[str, str]:
    """Per-layer megatron name -> HF name within the layer, for tensors copied unchanged."""
    return {**LAYER_ONE_TO_ONE, **(QK_NORM_ONE_TO_ONE if cfg.qk_layernorm else {})}


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
            f"unexpected tensor(s) {', '.join(extra[:5])}{more}: not part of a {hf_model_type(cfg)} model "
            f"with this config (biases or another architecture?)")


def hf_to_mcore_state(hf_state: Mapping[str, torch.Tensor], cfg: ModelConfig,
                      tensor_model_parallel_size: int = 1) -> dict[str, torch.Tensor]:
    """HF tensors -> full megatron-core tensors by global name (vocab padded for the TP
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
        MC_QKV: stack(lambda p: fuse_qkv(*(hf_state[f"{p}self_attn.{x}_proj.weight"] for x in "qkv"), groups)),
        MC_FC1: stack(lambda p: torch.cat([hf_state[p + "mlp.gate_proj.weight"],
                                           hf_state[p + "mlp.up_proj.weight"]])),
    }
    if cfg.add_qkv_bias:
        full[MC_QKV_BIAS] = stack(lambda p: fuse_qkv(*(hf_state[f"{p}self_attn.{x}_proj.bias"] for x in "qkv"), groups))
    for mc_name, hf_suffix in _one_to_one(cfg).items():
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
    if cfg.add_qkv_bias:
        shapes[MC_QKV_BIAS] = (layers, (heads + 2 * groups) * d)
    if cfg.qk_layernorm:
        shapes.update({name: (layers, d) for name in QK_NORM_ONE_TO_ONE})
    if cfg.untie_embeddings_and_output_weights:
        shapes[MC_OUTPUT] = (padded_vocab_size, h)
    return shapes


def mcore_to_hf_state(full: Mapping[str, torch.Tensor], cfg: ModelConfig,
                      dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Full megatron-core tensors -> HF tensors (vocab padding removed), each a separate
    contiguous tensor in `dtype` (default: as stored)."""
    check_hf_compatible(cfg)
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
        if cfg.add_qkv_bias:
            for x, bias in zip("qkv", split_qkv(full[MC_QKV_BIAS][i], heads, groups, d)):
                hf[f"{p}self_attn.{x}_proj.bias"] = out(bias)
        for mc_name, hf_suffix in _one_to_one(cfg).items():
            hf[p + hf_suffix] = out(full[mc_name][i])
    if cfg.untie_embeddings_and_output_weights:
        hf[HF_LM_HEAD] = out(full[MC_OUTPUT][:cfg.vocab_size])
    return hf


__all__ = [
    "SUPPORTED_ARCHITECTURES", "SUPPORTED_MODEL_TYPES", "ConversionError", "check_hf_compatible",
    "check_target_layout", "expected_hf_shapes", "expected_mcore_shapes", "fuse_qkv",
    "hf_config_from_model_config", "hf_dtype", "hf_model_type", "hf_to_mcore_state", "mcore_to_hf_state",
    "model_config_from_hf", "split_qkv", "validate_hf_state",
]
