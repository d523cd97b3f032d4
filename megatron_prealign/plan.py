"""Run planner: what a run costs before it is launched.

`plan_run(cfg, launch)` derives, for a `RunConfig` and a launch size, the exact parameter count
(total and per rank, as megatron-core's GPTModel allocates it), the memory of each rank, the
FLOPs and time of an iteration at a stated MFU, and the alignment pre-pass's share of the run.
`tools/plan_run.py` and `python -m megatron_prealign.pretrain --dry-run --plan` print it.

Memory per rank is a sum of terms, each derived from what the code allocates (none is fitted
to a measurement; bench/RESULTS.md compares the sums with measured peaks):

    weights      parameters in their dtype (bf16 runs keep the torch norms' weights in fp32)
    gradients    megatron-core DDP's contiguous fp32 main-grad buffer (grad_reduce_in_fp32)
    optimizer    Adam's two fp32 moments (SGD's one), plus fp32 master weights of half-precision
                 parameters; divided over data-parallel ranks with --use-distributed-optimizer
    buffers      megatron-core's persistent score buffer of the local attention
    activations  the tensors autograd keeps for backward, per layer and for the embedding and
                 loss, times the microbatches in flight (1F1B keeps pp - stage of them)
    transient    the largest short-lived extra on top: the half-precision logits beside their
                 fp32 copy in the loss, the attention backward, a recomputed layer, or the
                 optimizer step's temporaries (torch Adam's foreach `sqrt(v)` over a whole
                 parameter group on CUDA, two per-tensor temporaries on CPU)
    runtime      CPU plans only: the resident size of a process that has imported torch and
                 megatron-core (measured in the planning process)

The activation terms follow megatron-core 0.16's local layer spec with this package's SDPA
core attention; tests/unit/test_plan.py checks them against the tensors autograd saves in a
built model. TransformerEngine layers are planned as the local spec.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from megatron_prealign.model.config import ModelConfig

GIB = 2.0**30
SPEC_BF16_TFLOPS = 989.0
"""Dense bf16 TFLOP/s of an H100/H200 SXM (vendor datasheet): the default per-device peak."""
DEFAULT_MFU = 0.40
"""Default model-FLOPs utilization of the time estimates (Megatron-LM reports ~41% for a
1.7B GPT on H100)."""
DEFAULT_WORD_TOKENS = 3.0
"""Mean tokens per dictionary word assumed when no --lexicon is given."""


@dataclass(frozen=True)
class LaunchConfig:
    """What the planner needs beyond the run config."""

    world_size: int = 1
    """Processes (GPUs) of the launch (--world-size, or --nproc-per-node x --nnodes)."""
    device: str = "cuda"
    """`cuda` or `cpu`: whose kernels the activation and optimizer terms follow (--device)."""
    mfu: float = DEFAULT_MFU
    """Model-FLOPs utilization assumed by the time estimates (--mfu)."""
    peak_tflops: float = SPEC_BF16_TFLOPS
    """Peak TFLOP/s of one device, the MFU's denominator (--peak-tflops)."""

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError("--world-size must be >= 1")
        if self.device not in ("cuda", "cpu"):
            raise ValueError("--device must be cuda or cpu")
        if not 0 < self.mfu <= 1:
            raise ValueError("--mfu must be in (0, 1]")
        if self.peak_tflops <= 0:
            raise ValueError("--peak-tflops must be > 0")


# ------------------------------------------------------------------------------ parameters

def _dims(model: ModelConfig) -> dict[str, int]:
    heads = model.num_attention_heads
    groups = model.num_query_groups or heads
    head_dim = model.hidden_size // heads
    return {"h": model.hidden_size, "heads": heads, "groups": groups, "d": head_dim, "kv": groups * head_dim,
            "ffn": model.ffn_hidden_size or 4 * model.hidden_size}


def check_layout(model: ModelConfig, tp: int, pp: int) -> None:
    """The divisibility megatron-core's layers need (they would fail deep inside the build)."""
    dims = _dims(model)
    if dims["ffn"] % tp:
        raise ValueError(f"--ffn-hidden-size {dims['ffn']} must be divisible by --tensor-model-parallel-size {tp}")
    if dims["heads"] % tp or dims["groups"] % tp:
        raise ValueError(f"--num-attention-heads and --num-query-groups must be divisible by "
                         f"--tensor-model-parallel-size {tp}")
    if model.num_layers % pp:
        raise ValueError(f"--num-layers {model.num_layers} must be divisible by --pipeline-model-parallel-size {pp}")


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of one rank of a pipeline stage (every TP rank of a stage holds as many)."""

    total: int
    norms: int
    """Norm weights (and biases): fp32 even in half-precision runs."""
    matrices: int
    """Weights with two dimensions: the large Adam parameter group (the others get no decay)."""
    largest: int
    """Elements of the largest single parameter."""


def stage_parameters(model: ModelConfig, tp: int, pp: int, stage: int,
                     padded_vocab: int | None = None) -> ParameterCount:
    """Parameters that megatron-core's GPTModel allocates on one rank of pipeline stage `stage`.

    Column-parallel weights (QKV, FC1, the output layer and the embedding rows) and the input
    dimension of row-parallel ones are split over TP; norms and row-parallel biases are
    replicated. With tied embeddings and PP > 1 the last stage holds its own embedding copy.
    """
    check_layout(model, tp, pp)
    dims = _dims(model)
    h, kv, ffn = dims["h"], dims["kv"], dims["ffn"]
    vocab = model.padded_vocab_size(tp) if padded_vocab is None else padded_vocab
    norm = h * (2 if model.normalization == "LayerNorm" else 1)
    fc1_out = ffn * (2 if model.swiglu else 1)
    shapes = [(h + 2 * kv) // tp * h, h * (h // tp), fc1_out // tp * h, h * (ffn // tp)]
    biases = ((h + 2 * kv) // tp + h + fc1_out // tp + h) if model.add_bias_linear else 0
    layers = model.num_layers // pp
    norms, matrices, vectors, largest = layers * 2 * norm, layers * sum(shapes), layers * biases, max(shapes)
    rows = vocab // tp
    first, last = stage == 0, stage == pp - 1
    if first:
        matrices += rows * h
        largest = max(largest, rows * h)
        if model.position_embedding_type == "learned_absolute":
            positions = (model.max_position_embeddings or model.seq_length) * h
            matrices += positions
            largest = max(largest, positions)
    if last:
        norms += norm
        if model.untie_embeddings_and_output_weights or not first:
            matrices += rows * h
            largest = max(largest, rows * h)
    return ParameterCount(total=norms + matrices + vectors, norms=norms, matrices=matrices, largest=largest)


def total_parameters(model: ModelConfig, tp: int = 1) -> int:
    """Distinct parameters with the vocabulary padded for `tp` (what one rank holds at TP=1,
    PP=1; a tied embedding's last-stage copy is not counted twice)."""
    return stage_parameters(model, 1, 1, 0, padded_vocab=model.padded_vocab_size(tp)).total


# ------------------------------------------------------------------------------ activations

@dataclass(frozen=True)
class ActivationShape:
    """One microbatch on one rank."""

    seq: int
    micro_batch: int
    tp: int
    sequence_parallel: bool
    act_bytes: int
    """Bytes per activation element (2 for bf16/fp16, 4 for fp32)."""
    device: str
    attention: str
    """`sdpa` or `local` (resolved)."""

    @property
    def rows(self) -> int:
        """Token rows of the tensors between layers on this rank (sequence-sharded under SP)."""
        return self.seq * self.micro_batch // (self.tp if self.sequence_parallel else 1)


def resolve_attention(model: ModelConfig, device: str) -> str:
    """`--attention-backend auto` as the builder resolves it: SDPA on CUDA, local on CPU
    (TransformerEngine's attention is planned as SDPA: neither keeps the [s, s] scores)."""
    if model.attention_backend == "te":
        return "sdpa"
    if model.attention_backend != "auto":
        return model.attention_backend
    return "sdpa" if device == "cuda" else "local"


def _norm_bytes(model: ModelConfig, shape: ActivationShape) -> int:
    rows, h = shape.rows, model.hidden_size
    if model.normalization == "LayerNorm":
        return shape.act_bytes * rows * h + 8 * rows  # input, fp32 mean and rstd per row
    # torch.nn.RMSNorm runs its fused kernel only on CUDA and only when weight and input share a
    # dtype; the norms' weights stay fp32 in half-precision runs, so only fp32 CUDA runs fuse.
    # The composite path keeps the fp32 (upcast) input and the fp32 normalized input.
    fused = shape.device == "cuda" and shape.act_bytes == 4
    return (4 if fused else 8) * rows * h + 4 * rows


def _dropout_bytes(elements: int, shape: ActivationShape) -> int:
    # CUDA's fused dropout keeps a bool mask; the CPU kernel multiplies by a saved noise tensor.
    return elements if shape.device == "cuda" else shape.act_bytes * elements


def layer_terms(model: ModelConfig, shape: ActivationShape, recompute: str | None) -> dict[str, int]:
    """Bytes autograd keeps for one transformer layer and one microbatch, by tensor.

    `recompute` is None or `selective` (`full` keeps only the layer inputs, see
    `stage_memory`). A storage is counted once: V is a view of the fused QKV output, so keeping
    V keeps all of it.
    """
    dims = _dims(model)
    h, kv, ffn, d = dims["h"], dims["kv"], dims["ffn"], dims["d"]
    t, a, s, b = shape.tp, shape.act_bytes, shape.seq, shape.micro_batch
    heads = dims["heads"] // t
    rope = model.position_embedding_type == "rope"
    gqa = dims["groups"] < dims["heads"]
    scores = b * heads * s * s
    terms: dict[str, int] = {
        "input_norm": _norm_bytes(model, shape),
        "qkv_input": a * shape.rows * h,  # under SP the linear keeps its sequence shard and re-gathers
    }
    q_own = a * s * b * h // t if rope else 0  # RoPE writes new q/k; without it they are views of QKV
    k_own = a * s * b * kv // t if rope else 0
    fused_qkv = a * s * b * (h + 2 * kv) // t
    if rope:
        terms["rope_cos_sin"] = 4 * a * s * d  # cos and sin, for q and for k
    if recompute == "selective":
        # The checkpoint keeps its inputs q, k, v, a one-element tensor, and the attention output.
        terms.update(query=q_own, key=k_own, fused_qkv=fused_qkv, checkpoint_flag=4,
                     attention_output=a * s * b * h // t)
    elif shape.attention == "local":
        # DotProductAttention repeats K/V to every head for GQA (new tensors), keeps the fp32
        # softmax output and, in half precision, its cast copy for the context matmul. Its
        # [s, b*heads, d] reshape copies a grouped query that RoPE did not already copy.
        terms["query"] = q_own or (a * s * b * h // t if gqa else 0)
        terms["key"] = a * s * b * h // t if gqa else k_own
        terms["value"] = a * s * b * h // t if gqa else 0
        if not gqa:
            terms["fused_qkv"] = fused_qkv  # V is a view of it (and Q, K too without RoPE)
        terms["causal_mask"] = s * s  # bool, built per call
        terms["softmax_fp32"] = 4 * scores
        if model.attention_dropout > 0:
            terms["attention_dropout"] = _dropout_bytes(scores, shape) + a * scores
        elif a != 4:
            terms["softmax_cast"] = a * scores
        terms["attention_output"] = a * s * b * h // t  # the context, input of the projection
    else:
        # SDPA keeps q, k, v, its output and the fp32 log-sum-exp; the output's memory layout
        # follows the query's, so the projection's input is a view of it, not a copy.
        terms.update(query=q_own, key=k_own, fused_qkv=fused_qkv, attention_output=a * s * b * h // t,
                     logsumexp=4 * b * heads * s)
    if model.hidden_dropout > 0:
        terms["attention_residual_dropout"] = _dropout_bytes(shape.rows * h, shape)
    terms["pre_mlp_norm"] = _norm_bytes(model, shape)
    terms["fc1_input"] = a * shape.rows * h
    if model.swiglu:
        # FC1's output (both halves), silu(gate), the `up + offset` copy and their product (FC2's input).
        terms["mlp"] = a * s * b * 5 * ffn // t
    else:
        terms["mlp"] = a * s * b * 2 * ffn // t  # FC1's output (the activation's input) and FC2's input
    if model.hidden_dropout > 0:
        terms["mlp_residual_dropout"] = _dropout_bytes(shape.rows * h, shape)
    return {k: v for k, v in terms.items() if v}


def head_terms(model: ModelConfig, shape: ActivationShape, vocab: int, first: bool, last: bool,
               full_recompute: bool) -> dict[str, int]:
    """Bytes kept outside the transformer layers for one microbatch: the embedding's token ids,
    and on the last stage the final norm, the output layer's input and the loss's fp32 softmax
    over this rank's vocabulary shard."""
    s, b, t = shape.seq, shape.micro_batch, shape.tp
    terms: dict[str, int] = {}
    if first:
        terms["embedding_ids"] = 8 * s * b * (2 if model.position_embedding_type == "learned_absolute" else 1)
        if model.hidden_dropout > 0:
            terms["embedding_dropout"] = _dropout_bytes(shape.rows * model.hidden_size, shape)
    if full_recompute and model.position_embedding_type == "rope":
        terms["rope_frequencies"] = 4 * s * _dims(model)["d"]  # an input of every checkpoint, one tensor
    if last:
        terms["final_norm"] = _norm_bytes(model, shape)
        terms["output_layer_input"] = shape.act_bytes * shape.rows * model.hidden_size
        terms["loss_softmax_fp32"] = 4 * s * b * vocab // t
        terms["loss_targets"] = 9 * s * b  # bool mask and int64 targets
    return terms


# ------------------------------------------------------------------------------ memory

@dataclass
class StagePlan:
    """Memory of one rank of a pipeline stage, in bytes."""

    stage: int
    layers: int
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    buffers: int
    """Persistent non-parameter buffers (the local attention's score buffer)."""
    activations: int
    """All microbatches in flight at once."""
    in_flight: int
    transient: int
    transient_source: str
    runtime: int = 0
    activation_terms: dict[str, int] = field(default_factory=dict)
    """One microbatch, summed over this stage's layers, by tensor."""

    @property
    def static(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.buffers + self.runtime

    @property
    def peak(self) -> int:
        return self.static + self.activations + self.transient


def _global_batch(cfg, dp: int) -> int:
    return cfg.training.global_batch_size or cfg.training.micro_batch_size * dp


def runtime_bytes() -> int:
    """Resident bytes of this process, which has imported torch and megatron-core: what every
    CPU training process holds before it builds anything."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def stage_memory(cfg, launch: LaunchConfig, stage: int, *, recompute: str | None = "config",
                 sequence_parallel: bool | None = None, distributed_optimizer: bool | None = None,
                 runtime: int = 0) -> StagePlan:
    """Memory of one rank of `stage` for run `cfg` (a RunConfig); the keyword arguments
    override the config's recomputation (None, `selective`, `full` = uniform over 1 layer),
    sequence parallelism and optimizer sharding."""
    model: ModelConfig = cfg.model
    tp, pp = cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size
    dp = launch.world_size // (tp * pp)
    sp = cfg.parallel.sequence_parallel if sequence_parallel is None else sequence_parallel
    dist_opt = cfg.optim.use_distributed_optimizer if distributed_optimizer is None else distributed_optimizer
    granularity, method, chunk = model.recompute_granularity, model.recompute_method, model.recompute_num_layers
    if recompute != "config":
        granularity = recompute
        method, chunk = ("uniform", 1) if recompute == "full" else (None, None)
    half = model.bf16 or model.fp16
    act = 2 if half else 4
    counts = stage_parameters(model, tp, pp, stage)
    vocab = model.padded_vocab_size(tp)
    dims = _dims(model)

    # Model state: fp32 master copies exist only for half-precision parameters (fp32 norms are
    # stepped in place), and every gradient lands in DDP's fp32 buffer.
    weights = (2 if half else 4) * (counts.total - counts.norms) + 4 * counts.norms
    gradients = 4 * counts.total
    moments = 8 if cfg.optim.optimizer == "adam" else (4 if cfg.optim.sgd_momentum > 0 else 0)
    state = moments * counts.total + (4 * (counts.total - counts.norms) if half else 0)
    optimizer = math.ceil(state / dp) if dist_opt else state

    shape = ActivationShape(seq=model.seq_length, micro_batch=cfg.training.micro_batch_size, tp=tp,
                            sequence_parallel=sp, act_bytes=act, device=launch.device,
                            attention=resolve_attention(model, launch.device))
    layers = model.num_layers // pp
    full_layer = layer_terms(model, shape, None)
    if granularity == "full":
        # uniform: every layer, one checkpoint per `chunk` layers; block: the first `chunk`
        # layers of the stage, one checkpoint each, the others as usual.
        recomputed = layers if method == "uniform" else min(chunk, layers)
        checkpoints = math.ceil(layers / chunk) if method == "uniform" else recomputed
        kept = {"layer_inputs": checkpoints * act * shape.rows * model.hidden_size}
        if layers > recomputed:
            kept.update({name: (layers - recomputed) * value for name, value in full_layer.items()})
        recompute_chunk = chunk if method == "uniform" else 1
    else:
        kept = {name: layers * value for name, value in layer_terms(model, shape, granularity).items()}
        recompute_chunk = 0
    first, last = stage == 0, stage == pp - 1
    head = head_terms(model, shape, vocab, first, last, granularity == "full")
    terms = {**kept, **head}
    num_microbatches = _global_batch(cfg, dp) // (cfg.training.micro_batch_size * dp)
    in_flight = min(pp - stage, num_microbatches)
    pipeline_output = 0 if last else act * shape.rows * model.hidden_size  # kept by the schedule
    activations = in_flight * (sum(terms.values()) + pipeline_output)

    scores = shape.micro_batch * dims["heads"] // tp * shape.seq * shape.seq
    buffers = act * scores if shape.attention == "local" else 0  # megatron-core's global "mpu" buffer

    candidates: dict[str, int] = {}
    head_saved = sum(v for k, v in head.items() if k.startswith(("final_norm", "output_layer", "loss")))
    if last:
        logits = shape.seq * shape.micro_batch * vocab // tp
        # Half precision: the logits beside their fp32 copy (forward), the fp32 gradient beside
        # its cast (backward). fp32: the loss works in place; the output layer's gradients remain.
        candidates["loss"] = act * logits if half else 4 * (vocab // tp * model.hidden_size
                                                             + shape.rows * model.hidden_size)
    # The last layer's backward, once the loss (and, without full recompute, the layer's MLP)
    # released their tensors.
    after_attention = sum(full_layer.get(k, 0) for k in ("pre_mlp_norm", "fc1_input", "mlp", "mlp_residual_dropout"))
    attention_backward = _attention_backward(shape, model, act)
    if granularity == "full":
        candidates["recomputed layer"] = recompute_chunk * sum(full_layer.values()) + attention_backward - head_saved
    else:
        extra = attention_backward
        if granularity == "selective":  # the recomputed attention's own tensors exist again
            extra += sum(full_layer.get(k, 0) for k in ("causal_mask", "softmax_fp32", "softmax_cast", "logsumexp",
                                                        "attention_dropout"))
            if shape.attention == "local" and dims["groups"] < dims["heads"]:
                extra += 2 * act * shape.seq * shape.micro_batch * model.hidden_size // tp  # repeated K, V
        candidates["attention backward"] = extra - head_saved - after_attention
    # The optimizer step runs after every activation is released.
    if launch.device == "cuda":
        temp = 4 * (math.ceil(counts.matrices / dp) if dist_opt else counts.matrices)  # foreach sqrt(v)
    else:
        temp = 2 * 4 * counts.largest  # sqrt(v) and its quotient, one tensor at a time
    candidates["optimizer step"] = temp - activations
    source, transient = max(candidates.items(), key=lambda item: item[1])
    return StagePlan(stage=stage, layers=layers, parameters=counts.total, weights=weights, gradients=gradients,
                     optimizer=optimizer, buffers=buffers, activations=activations, in_flight=in_flight,
                     transient=max(transient, 0), transient_source=source, runtime=runtime,
                     activation_terms=terms)


def _attention_backward(shape: ActivationShape, model: ModelConfig, act: int) -> int:
    """Extra bytes while the last layer's core attention runs backward."""
    dims = _dims(model)
    t, s, b = shape.tp, shape.seq, shape.micro_batch
    if shape.attention == "local":
        scores = b * dims["heads"] // t * s * s
        # The fp32 gradients of the probabilities and of the scores at once; in half precision
        # the cast copy of the probabilities is released by then.
        return 8 * scores - (act * scores if act != 4 else 0)
    return act * s * b * (dims["h"] + 2 * dims["kv"]) // t  # gradients of q, k, v


# ------------------------------------------------------------------------------ the plan

@dataclass
class Plan:
    """Everything the planner reports; `to_dict()` is JSON-serializable."""

    model: dict[str, Any]
    layout: dict[str, Any]
    parameters_total: int
    stages: list[StagePlan]
    compute: dict[str, Any]
    prepass: dict[str, Any]
    alternatives: list[dict[str, Any]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for stage, plan in zip(out["stages"], self.stages):
            stage.update(static=plan.static, peak=plan.peak, peak_gib=round(plan.peak / GIB, 3))
        return out

    def render(self) -> str:
        return render(self)


def prepass_plan(cfg, launch: LaunchConfig, pretrain_flops: float,
                 lexicon_words: tuple[float, float] | None = None) -> dict[str, Any]:
    """The alignment pre-pass's cost and its share of the run's FLOPs.

    A step feeds 2 x --align-pairs-per-batch words (over all data-parallel ranks), each padded
    to the step's longest word. `lexicon_words` is (mean tokens per word, mean padded length)
    measured with the pre-pass's own sampler (`lexicon_word_lengths`), or None: then a stated
    default word length, padded to --align-max-word-tokens.
    """
    model, align = cfg.model, cfg.align
    words = 2 * align.pairs_per_batch
    if lexicon_words is None:
        mean_tokens, padded = DEFAULT_WORD_TOKENS, float(align.max_word_tokens)
        source = f"no --lexicon: {DEFAULT_WORD_TOKENS:g} tokens per word, padded to --align-max-word-tokens"
    else:
        (mean_tokens, padded), source = lexicon_words, "the lexicon, drawn by the pre-pass's sampler"
    seq = max(1, round(padded))
    flops = align.steps * words * seq * model.training_flops_per_token(seq_length=seq)
    total = flops + pretrain_flops
    seconds = flops / (launch.world_size * launch.peak_tflops * 1e12 * launch.mfu)
    return {"steps": align.steps, "words_per_step": words, "mean_word_tokens": mean_tokens,
            "padded_word_tokens": padded, "word_length_source": source,
            "tokens": align.steps * words * mean_tokens, "padded_tokens": align.steps * words * seq,
            "flops": flops, "hours": seconds / 3600, "share_of_run_flops_pct": 100 * flops / total if total else 0.0}


def lexicon_word_lengths(path: str, cfg, steps: int = 32) -> tuple[float, float]:
    """(mean tokens per word, mean longest word per step) over the pre-pass's first `steps`
    batches, drawn by its own sampler from the lexicon's training split."""
    import numpy as np

    from megatron_prealign.align.data import WordPairSampler, split_entries
    from megatron_prealign.lexicon import load_lexicon

    lexicon = load_lexicon(path)
    align = cfg.align
    train_ids, _ = split_entries(lexicon, align.heldout_fraction, align.seed)
    sampler = WordPairSampler(lexicon, train_ids, pairs_per_batch=align.pairs_per_batch, seed=align.seed,
                              max_word_tokens=align.max_word_tokens)
    lengths = np.diff(lexicon.entry_offsets)
    means, longest = [], []
    for step in range(steps):
        drawn = lengths[sampler.global_pairs(step).reshape(-1)]
        means.append(drawn.mean())
        longest.append(drawn.max())
    return float(np.mean(means)), float(np.mean(longest))


def plan_run(cfg, launch: LaunchConfig, *, lexicon_words: tuple[float, float] | None = None,
             align_steps: int | None = None, notes: list[str] | None = None) -> Plan:
    """The plan of run `cfg` (a RunConfig whose model carries the tokenizer's vocabulary size).

    `align_steps` overrides `cfg.align.steps` (a plan made without a lexicon file keeps the
    requested pre-pass length, which the config cannot carry without one).
    """
    model: ModelConfig = cfg.model
    tp, pp = cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size
    if launch.world_size % (tp * pp):
        raise ValueError(f"--world-size {launch.world_size} must be divisible by --tensor-model-parallel-size {tp} "
                         f"x --pipeline-model-parallel-size {pp}")
    check_layout(model, tp, pp)
    dp = launch.world_size // (tp * pp)
    gbs, mbs = _global_batch(cfg, dp), cfg.training.micro_batch_size
    if gbs % (mbs * dp):
        raise ValueError(f"--global-batch-size {gbs} must be a multiple of --micro-batch-size x data-parallel size "
                         f"= {mbs} x {dp}")
    if align_steps is not None:
        cfg = dataclasses.replace(cfg, align=dataclasses.replace(cfg.align, steps=align_steps))
    runtime = runtime_bytes() if launch.device == "cpu" else 0
    stages = [stage_memory(cfg, launch, stage, runtime=runtime) for stage in range(pp)]

    flops_per_token = model.training_flops_per_token()
    tokens_per_iteration = gbs * model.seq_length
    flops_per_iteration = flops_per_token * tokens_per_iteration
    seconds = flops_per_iteration / (launch.world_size * launch.peak_tflops * 1e12 * launch.mfu)
    pretrain_flops = flops_per_iteration * cfg.training.train_iters
    compute = {"flops_per_token": flops_per_token, "tokens_per_iteration": tokens_per_iteration,
               "flops_per_iteration": flops_per_iteration, "seconds_per_iteration": seconds,
               "tokens_per_second": tokens_per_iteration / seconds, "train_iters": cfg.training.train_iters,
               "pretrain_tokens": tokens_per_iteration * cfg.training.train_iters,
               "pretrain_hours": seconds * cfg.training.train_iters / 3600, "mfu": launch.mfu,
               "peak_tflops_per_device": launch.peak_tflops}
    prepass = prepass_plan(cfg, launch, pretrain_flops, lexicon_words)

    alternatives = []
    for dist_opt in (False, True):
        for sp in ((False, True) if tp > 1 else (False,)):
            for recompute in (None, "selective", "full"):
                peak = max(stage_memory(cfg, launch, s, recompute=recompute, sequence_parallel=sp,
                                        distributed_optimizer=dist_opt, runtime=runtime).peak for s in range(pp))
                alternatives.append({"distributed_optimizer": dist_opt, "sequence_parallel": sp,
                                     "recompute": recompute or "none", "peak_bytes": peak})
    notes = list(notes or [])
    if model.transformer_impl == "transformer_engine":
        notes.append("TransformerEngine layers are planned as the local spec (TE's fused layers keep fewer tensors)")
    if model.attention_dropout > 0 and resolve_attention(model, launch.device) == "sdpa":
        notes.append("attention dropout under SDPA is not modelled")
    if cfg.optim.use_distributed_optimizer and dp > 1:
        notes.append("the distributed optimizer's bucket padding (a few elements per bucket) is not counted")
    layout = {"world_size": launch.world_size, "tensor_parallel": tp, "pipeline_parallel": pp, "data_parallel": dp,
              "sequence_parallel": cfg.parallel.sequence_parallel, "micro_batch_size": mbs, "global_batch_size": gbs,
              "num_microbatches": gbs // (mbs * dp), "device": launch.device,
              "attention": resolve_attention(model, launch.device),
              "recompute": model.recompute_granularity or "none",
              "distributed_optimizer": cfg.optim.use_distributed_optimizer,
              "precision": "bf16" if model.bf16 else "fp16" if model.fp16 else "fp32"}
    dims = _dims(model)
    model_info = {"num_layers": model.num_layers, "hidden_size": model.hidden_size,
                  "num_attention_heads": model.num_attention_heads, "num_query_groups": dims["groups"],
                  "ffn_hidden_size": dims["ffn"], "seq_length": model.seq_length,
                  "vocab_size": model.vocab_size, "padded_vocab_size": model.padded_vocab_size(tp)}
    return Plan(model=model_info, layout=layout, parameters_total=total_parameters(model, tp), stages=stages,
                compute=compute, prepass=prepass, alternatives=alternatives, notes=notes)


# ------------------------------------------------------------------------------ rendering

def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.3f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def render(plan: Plan) -> str:
    """The human table."""
    m, lay = plan.model, plan.layout
    unit = "GPU" if lay["device"] == "cuda" else "process"
    lines = [
        f"Model: {m['num_layers']} layers x {m['hidden_size']} ({m['num_attention_heads']} heads, "
        f"{m['num_query_groups']} KV groups, FFN {m['ffn_hidden_size']}), seq {m['seq_length']}, "
        f"vocab {m['vocab_size']} (padded {m['padded_vocab_size']})",
        f"Layout: {lay['world_size']} x {unit} = TP {lay['tensor_parallel']} x PP {lay['pipeline_parallel']} x DP "
        f"{lay['data_parallel']}; micro-batch {lay['micro_batch_size']}, global batch {lay['global_batch_size']} "
        f"({lay['num_microbatches']} microbatches per step); {lay['precision']} on {lay['device']}, attention "
        f"{lay['attention']}, recompute {lay['recompute']}, SP {'on' if lay['sequence_parallel'] else 'off'}, "
        f"distributed optimizer {'on' if lay['distributed_optimizer'] else 'off'}",
        "",
        "Parameters",
        f"  {'total (distinct)':<28}{plan.parameters_total:>16,}",
    ]
    lines += [f"  {'per rank, stage ' + str(s.stage):<28}{s.parameters:>16,}" for s in plan.stages]
    header = "".join(f"{'stage ' + str(s.stage):>10}" for s in plan.stages)
    lines += ["", f"{'Memory per ' + unit + ' (GiB)':<30}{header}"]
    rows = [("weights", "weights"), ("gradients (fp32 buffer)", "gradients"), ("optimizer states", "optimizer"),
            ("buffers", "buffers"), ("activations", "activations"), ("transient", "transient")]
    if plan.stages[0].runtime:
        rows.insert(0, ("runtime (torch, megatron)", "runtime"))
    for label, key in rows:
        lines.append(f"  {label:<28}" + "".join(f"{_gib(getattr(s, key)):>10}" for s in plan.stages))
    lines.append(f"  {'peak':<28}" + "".join(f"{_gib(s.peak):>10}" for s in plan.stages))
    lines += [f"  stage {s.stage}: {s.in_flight} microbatch(es) in flight; transient: {s.transient_source}"
              for s in plan.stages]
    lines += ["", f"Peak per {unit} with other choices (GiB; * = this run)",
              f"  {'distributed optimizer':<24}{'SP':<6}{'recompute':<12}{'peak':>8}"]
    for alt in plan.alternatives:
        mine = (alt["distributed_optimizer"] == lay["distributed_optimizer"]
                and alt["sequence_parallel"] == lay["sequence_parallel"] and alt["recompute"] == lay["recompute"])
        lines.append(f"  {'on' if alt['distributed_optimizer'] else 'off':<24}{'on' if alt['sequence_parallel'] else 'off':<6}"
                     f"{alt['recompute']:<12}{_gib(alt['peak_bytes']):>8}{' *' if mine else ''}")
    c = plan.compute
    lines += ["", "Compute (Megatron-LM's convention: 3 x forward, logits over the padded vocabulary, "
                  "recomputation not counted)",
              f"  {'FLOPs per token':<28}{_si(c['flops_per_token'], 'FLOP')}",
              f"  {'FLOPs per iteration':<28}{_si(c['flops_per_iteration'], 'FLOP')} "
              f"({c['tokens_per_iteration']:,} tokens)",
              f"  {'time per iteration':<28}{c['seconds_per_iteration']:.3f} s at {100 * c['mfu']:.0f}% MFU of "
              f"{c['peak_tflops_per_device']:g} TFLOP/s per device ({c['tokens_per_second']:,.0f} tokens/s)",
              f"  {'pretraining':<28}{c['train_iters']:,} iterations, {c['pretrain_tokens'] / 1e9:.3f}B tokens, "
              f"{c['pretrain_hours']:.1f} h"]
    p = plan.prepass
    lines += ["", "Alignment pre-pass",
              f"  {'steps x words':<28}{p['steps']:,} x {p['words_per_step']:,} (each padded to its step's longest word)",
              f"  {'tokens per word':<28}{p['mean_word_tokens']:.2f}, padded {p['padded_word_tokens']:.2f} "
              f"({p['word_length_source']})",
              f"  {'FLOPs':<28}{_si(p['flops'], 'FLOP')}, {p['hours']:.2f} h at the same MFU",
              f"  {'share of the run':<28}{p['share_of_run_flops_pct']:.3f}% of the FLOPs"]
    if plan.notes:
        lines += ["", "Notes"] + [f"  - {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ from a command line

def default_device(model: ModelConfig) -> str:
    """cuda for half-precision runs (they need it) or on a machine with CUDA; else cpu."""
    import torch

    return "cuda" if model.bf16 or model.fp16 or torch.cuda.is_available() else "cpu"


def plan_from_flat(values: dict[str, Any], *, world_size: int = 1, device: str | None = None,
                   mfu: float = DEFAULT_MFU, peak_tflops: float = SPEC_BF16_TFLOPS) -> Plan:
    """The plan of the run that the flat config keys `values` describe (`config.parse_flat`).

    The vocabulary size comes from --tokenizer-model when given (as the trainer takes it), else
    --vocab-size. Without --lexicon the config cannot hold code-switching or a pre-pass; the
    requested pre-pass is then planned with default word lengths (code-switching costs no
    memory or FLOPs of its own).
    """
    from megatron_prealign.config import RUN_DEFAULTS, from_flat

    values = dict(values)
    notes: list[str] = []
    align_steps = None
    if not values.get("lexicon"):
        align_steps = values.get("align_steps", RUN_DEFAULTS["align_steps"])
        if align_steps or values.get("codeswitch_ratio"):
            notes.append("planned without --lexicon: the pre-pass uses default word lengths")
        values.update(align_steps=0, codeswitch_ratio=0.0, align_only=False)
    cfg = from_flat(values)
    if cfg.data.tokenizer_model:
        from megatron_prealign.lexicon import build_tokenizer

        vocab = build_tokenizer(cfg.data.tokenizer_type, cfg.data.tokenizer_model).vocab_size
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
    launch = LaunchConfig(world_size=world_size, device=device or default_device(cfg.model), mfu=mfu,
                          peak_tflops=peak_tflops)
    words = lexicon_word_lengths(cfg.data.lexicon, cfg) if cfg.data.lexicon and cfg.align.steps else None
    return plan_run(cfg, launch, lexicon_words=words, align_steps=align_steps, notes=notes)
