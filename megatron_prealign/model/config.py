"""Model architecture config (Megatron-LM flag names) and its mapping to megatron-core."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """A GPT/Llama-style decoder. Field names follow Megatron-LM's flags (dashes -> underscores)."""

    num_layers: int = 2
    """Transformer layers (--num-layers)."""
    hidden_size: int = 64
    """Model width (--hidden-size)."""
    num_attention_heads: int = 4
    """Query heads (--num-attention-heads)."""
    num_query_groups: int | None = None
    """Key/value heads for grouped-query attention; None = one per query head (--num-query-groups)."""
    kv_channels: int | None = None
    """Width of one attention head; None = hidden_size / num_attention_heads (--kv-channels).
    Qwen3 and Mistral-Nemo-style models set it independently of the hidden size."""
    ffn_hidden_size: int | None = None
    """MLP width; None = 4 x hidden_size (--ffn-hidden-size)."""
    seq_length: int = 128
    """Training sequence length (--seq-length)."""
    max_position_embeddings: int | None = None
    """Position table size for learned positions; None = seq_length (--max-position-embeddings)."""
    position_embedding_type: str = "rope"
    """`rope` or `learned_absolute` (--position-embedding-type)."""
    rotary_base: int = 10000
    """RoPE theta (--rotary-base)."""
    use_rope_scaling: bool = False
    """Llama 3.x frequency-dependent RoPE scaling (--use-rope-scaling), with megatron-core's fixed
    low/high frequency factors 1 and 4 and original context 8192 (Llama 3.1/3.2/3.3's values)."""
    rope_scaling_factor: float = 8.0
    """Scaling factor of --use-rope-scaling (--rope-scaling-factor): 8 for Llama 3.1, 32 for 3.2."""
    normalization: str = "RMSNorm"
    """`RMSNorm` or `LayerNorm` (--normalization)."""
    norm_epsilon: float = 1e-5
    """Normalization epsilon (--norm-epsilon)."""
    swiglu: bool = True
    """Gated SiLU MLP as in Llama (--swiglu)."""
    add_bias_linear: bool = False
    """Biases in linear layers (--add-bias-linear / --disable-bias-linear)."""
    add_qkv_bias: bool = False
    """Biases on the query/key/value projection only, as in Qwen2 (--add-qkv-bias)."""
    qk_layernorm: bool = False
    """--normalization applied per head to queries and keys before RoPE, as in Qwen3 (--qk-layernorm)."""
    window_size: tuple[int, ...] | None = None
    """Sliding-window attention as (left, right) (--window-size LEFT RIGHT): a query attends to
    the LEFT keys before it and RIGHT after (0 for causal); Mistral's sliding_window W is (W-1, 0).
    Needs --attention-backend local or TransformerEngine."""
    untie_embeddings_and_output_weights: bool = True
    """Separate output layer instead of reusing the input embedding (--untie-embeddings-and-output-weights)."""
    vocab_size: int = 256
    """Tokenizer vocabulary size; padded to make_vocab_size_divisible_by x TP for the model."""
    make_vocab_size_divisible_by: int = 128
    """Padding multiple for the embedding table (--make-vocab-size-divisible-by)."""
    init_method_std: float = 0.02
    """Std of the normal weight init (--init-method-std)."""
    hidden_dropout: float = 0.0
    """Dropout after attention/MLP (--hidden-dropout)."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities (--attention-dropout)."""
    bf16: bool = False
    """bf16 parameters and compute (--bf16); needs CUDA."""
    fp16: bool = False
    """fp16 parameters and compute with loss scaling (--fp16); needs CUDA."""
    transformer_impl: str = "auto"
    """`transformer_engine`, `local`, or `auto` (TE when importable and CUDA is present)."""
    attention_backend: str = "auto"
    """Core attention (--attention-backend): `sdpa` (torch's fused
    scaled_dot_product_attention: FlashAttention/cuDNN kernels on CUDA, no [s, s] scores kept),
    `local` (megatron-core's DotProductAttention), `te` (TransformerEngine's fused attention; needs
    TE and CUDA), or `auto` (TE's attention with TE, else sdpa on CUDA and local on CPU)."""
    recompute_granularity: str | None = None
    """Activation recomputation (--recompute-granularity): `selective` recomputes the core
    attention in backward, `full` whole layers (with --recompute-method/--recompute-num-layers)."""
    recompute_method: str | None = None
    """`uniform` (recompute every --recompute-num-layers chunk) or `block` (the first
    --recompute-num-layers layers of each stage); only with --recompute-granularity full
    (--recompute-method)."""
    recompute_num_layers: int | None = None
    """Layers per recompute chunk (uniform) or recomputed layers per stage (block)
    (--recompute-num-layers)."""

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0")
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ValueError("--hidden-size must be divisible by --num-attention-heads (or set --kv-channels)")
        if self.kv_channels is not None and self.kv_channels <= 0:
            raise ValueError("--kv-channels must be > 0")
        groups = self.num_query_groups or self.num_attention_heads
        if self.num_attention_heads % groups:
            raise ValueError("--num-attention-heads must be divisible by --num-query-groups")
        if self.position_embedding_type not in ("rope", "learned_absolute"):
            raise ValueError("--position-embedding-type must be rope or learned_absolute")
        if self.normalization not in ("RMSNorm", "LayerNorm"):
            raise ValueError("--normalization must be RMSNorm or LayerNorm")
        if self.use_rope_scaling and (self.position_embedding_type != "rope" or self.rope_scaling_factor <= 0):
            raise ValueError("--use-rope-scaling needs --position-embedding-type rope and --rope-scaling-factor > 0")
        self._check_window()
        if self.bf16 and self.fp16:
            raise ValueError("--bf16 and --fp16 are mutually exclusive")
        if self.transformer_impl not in ("auto", "local", "transformer_engine"):
            raise ValueError("--transformer-impl must be auto, local or transformer_engine")
        if self.attention_backend in ("flash", "fused", "unfused"):
            raise ValueError(f"--attention-backend {self.attention_backend} selects a TransformerEngine kernel; "
                             "without TransformerEngine use sdpa (torch's fused kernels) or local")
        if self.attention_backend not in ("auto", "sdpa", "local", "te"):
            raise ValueError("--attention-backend must be auto, sdpa, local or te")
        if self.attention_backend == "te" and self.transformer_impl == "local":
            raise ValueError("--attention-backend te needs --transformer-impl transformer_engine (or auto), "
                             "not --transformer-impl local")
        self._check_recompute()

    def _check_window(self) -> None:
        if self.window_size is None:
            return
        # A checkpoint's JSON state holds a list; keep the tuple the flags produce.
        object.__setattr__(self, "window_size", tuple(self.window_size))
        if len(self.window_size) != 2 or any(not isinstance(w, int) or w < 0 for w in self.window_size):
            raise ValueError(f"--window-size takes two integers >= 0 (LEFT RIGHT), got {self.window_size}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head (--kv-channels or hidden_size / num_attention_heads)."""
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    def _check_recompute(self) -> None:
        granularity, method, layers = self.recompute_granularity, self.recompute_method, self.recompute_num_layers
        if granularity not in (None, "selective", "full"):
            raise ValueError("--recompute-granularity must be selective or full")
        if method not in (None, "uniform", "block"):
            raise ValueError("--recompute-method must be uniform or block")
        if granularity == "full":
            if method is None or layers is None:
                raise ValueError("--recompute-granularity full needs --recompute-method (uniform or block) "
                                 "and --recompute-num-layers")
            if not 1 <= layers <= self.num_layers:
                raise ValueError(f"--recompute-num-layers must be in [1, --num-layers {self.num_layers}]")
        elif method is not None or layers is not None:
            raise ValueError("--recompute-method/--recompute-num-layers apply only to --recompute-granularity full")

    @property
    def params_dtype(self):
        """The torch dtype of parameters and compute (torch is imported only when asked)."""
        import torch

        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32

    def padded_vocab_size(self, tensor_model_parallel_size: int) -> int:
        """Embedding rows: vocab_size rounded up so every TP shard has equal, aligned rows."""
        multiple = self.make_vocab_size_divisible_by * tensor_model_parallel_size
        return -(-self.vocab_size // multiple) * multiple

    def num_parameters(self) -> int:
        """Parameter count of the unpadded model (for FLOP and size reports)."""
        h, layers = self.hidden_size, self.num_layers
        ffn = self.ffn_hidden_size or 4 * h
        heads = self.num_attention_heads
        q = heads * self.head_dim
        kv = (self.num_query_groups or heads) * self.head_dim
        attn = h * (q + 2 * kv) + q * h
        if self.add_qkv_bias:
            attn += q + 2 * kv
        if self.qk_layernorm:
            attn += 2 * self.head_dim
        mlp = h * ffn * (3 if self.swiglu else 2)
        norms = 2 * h
        embed = self.vocab_size * h * (2 if self.untie_embeddings_and_output_weights else 1)
        pos = (self.max_position_embeddings or self.seq_length) * h if self.position_embedding_type == "learned_absolute" else 0
        return layers * (attn + mlp + norms) + embed + pos + h

    def training_flops_per_token(self, seq_length: int | None = None) -> float:
        """Model FLOPs of one trained token, in Megatron-LM's convention for MFU: forward +
        backward = 3 x forward, every matmul (2 FLOPs per multiply-add), attention scores and
        context over the full sequence (not halved for the causal mask), logits over the padded
        vocabulary, recomputation not counted."""
        h, seq = self.hidden_size, seq_length or self.seq_length
        heads = self.num_attention_heads
        q = heads * self.head_dim
        kv = (self.num_query_groups or heads) * self.head_dim
        ffn = self.ffn_hidden_size or 4 * h
        per_layer = 2 * (h * (q + 2 * kv) + q * h + (3 if self.swiglu else 2) * h * ffn) + 2 * 2 * seq * q
        return 3.0 * (self.num_layers * per_layer + 2 * h * self.padded_vocab_size(1))
