"""Cost of the alignment pre-pass (stage `align`) as a share of the pretraining run it precedes.

    python bench/bench_align_cost.py [--lexicon runs/demo/setting/dictionary/clone_dict.lex] \\
        [--measure-steps 6] [--threads 1] [--json out.json]

Two configurations:
  demo  the English-Clone demo (docs/DESIGN.md §5): GPT 4 layers, d=160, context 128, vocab 8000,
        ~1.64M pretraining tokens; pre-pass 200 steps x 256 pairs.
  1b    a 1B-class Llama (22 layers, d=2048, 32 heads / 4 KV groups, SwiGLU 5632, vocab 32000,
        context 2048) pretrained Chinchilla-style on 20 tokens per parameter; the authors'
        pre-pass of 5,000 steps x 256 pairs per GPU on 8 GPUs.

FLOPs are counted analytically (matmuls only, 2 FLOPs per multiply-add, backward = 2 x forward,
full (non-causal) attention score matrices as megatron's own FLOP formula counts them). A
pre-pass step runs every word as its own sequence padded to the longest word of the step, so
its cost is that of 2 x pairs sequences of that length, plus the InfoNCE similarity matrices
(negligible). The padded word length comes from `--lexicon` when given (sampled with the real
pair sampler), else from `--word-tokens`.

For the demo configuration the script also *measures* one pretraining step and one pre-pass
step on this machine (megatron-core on CPU, single process, interleaved so both see the same
load) and extrapolates the run shares. There is no GPU measurement here.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Scenario:
    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    ffn_hidden_size: int
    swiglu: bool
    vocab_size: int
    seq_length: int
    pretrain_tokens: float
    align_steps: int
    align_pairs: int
    """Global pairs per pre-pass step (2 words each)."""
    padded_word_tokens: float
    """Mean over steps of the step's longest word (the padded sequence length)."""
    mean_word_tokens: float
    """Mean tokens per word (the unpadded work)."""
    eval_words: int = 2048
    """Words of each of the two alignment-gap evaluations (before/after)."""

    def params(self) -> float:
        h, kv = self.hidden_size, self.num_query_groups * (self.hidden_size // self.num_attention_heads)
        attn = h * (h + 2 * kv) + h * h
        mlp = h * self.ffn_hidden_size * (3 if self.swiglu else 2)
        return self.num_layers * (attn + mlp) + 2 * self.vocab_size * h


def forward_flops(sc: Scenario, seq: float) -> float:
    """Forward matmul FLOPs of one sequence of `seq` positions (LM head included)."""
    h = sc.hidden_size
    kv = sc.num_query_groups * (h // sc.num_attention_heads)
    per_layer = (2 * seq * h * (h + 2 * kv)  # QKV projection
                 + 2 * 2 * seq * seq * h  # scores QK^T and attention x V
                 + 2 * seq * h * h  # output projection
                 + 2 * seq * h * sc.ffn_hidden_size * (3 if sc.swiglu else 2))  # MLP
    return sc.num_layers * per_layer + 2 * seq * h * sc.vocab_size


def pretrain_flops(sc: Scenario) -> float:
    return sc.pretrain_tokens / sc.seq_length * 3 * forward_flops(sc, sc.seq_length)


def prepass_flops(sc: Scenario, padded: bool = True) -> float:
    """Whole pre-pass: steps x (2P word sequences fwd+bwd + InfoNCE) + two gap evaluations."""
    length = sc.padded_word_tokens if padded else sc.mean_word_tokens
    words = 2 * sc.align_pairs
    slots = sc.num_layers + 2
    contrastive = 3 * slots * 2 * words * words * sc.hidden_size
    step = words * 3 * forward_flops(sc, length) + contrastive
    return sc.align_steps * step + 2 * sc.eval_words * forward_flops(sc, length)


DEMO = Scenario("demo", num_layers=4, hidden_size=160, num_attention_heads=4, num_query_groups=4,
                ffn_hidden_size=640, swiglu=True, vocab_size=8000, seq_length=128, pretrain_tokens=1.64e6,
                align_steps=200, align_pairs=256, padded_word_tokens=5, mean_word_tokens=2.0)
ONE_B = Scenario("1b", num_layers=22, hidden_size=2048, num_attention_heads=32, num_query_groups=4,
                 ffn_hidden_size=5632, swiglu=True, vocab_size=32000, seq_length=2048, pretrain_tokens=0.0,
                 align_steps=5000, align_pairs=256 * 8, padded_word_tokens=8, mean_word_tokens=3.0)
ONE_B = replace(ONE_B, pretrain_tokens=20 * ONE_B.params())


def word_lengths_from_lexicon(lexicon, pairs: int, steps: int = 50) -> tuple[float, float]:
    """(mean padded length, mean word length) of `steps` sampled global batches of `pairs` pairs."""
    from megatron_prealign.align.data import WordPairSampler

    sampler = WordPairSampler(lexicon, np.arange(lexicon.num_entries), pairs_per_batch=pairs, seed=0,
                              max_word_tokens=16)
    lengths = np.diff(lexicon.entry_offsets)
    padded, mean = [], []
    for step in range(steps):
        words = sampler.global_pairs(step).reshape(-1)
        padded.append(lengths[words].max())
        mean.append(lengths[words].mean())
    return float(np.mean(padded)), float(np.mean(mean))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_demo(sc: Scenario, lexicon, steps: int, micro_batch: int) -> dict:
    """Seconds per pretraining step (micro_batch x seq_length tokens) and per pre-pass step on CPU."""
    import torch

    from megatron_prealign.align import AlignConfig, AlignmentObjective
    from megatron_prealign.align.data import WordPairSampler, build_microbatches
    from megatron_prealign.distributed import destroy_distributed, init_distributed
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import ModelConfig, build_model
    from megatron_prealign.platform import activate_cpu_compat
    from megatron_prealign.training.ddp import wrap_ddp
    from megatron_prealign.optim import OptimConfig, build_optimizer
    from megatron_prealign.training.step import forward_backward

    parallel = ParallelConfig()
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    activate_cpu_compat()
    pgs = init_distributed(parallel, seed=1, environ=env)
    model_cfg = ModelConfig(num_layers=sc.num_layers, hidden_size=sc.hidden_size,
                            num_attention_heads=sc.num_attention_heads, ffn_hidden_size=sc.ffn_hidden_size,
                            swiglu=sc.swiglu, seq_length=sc.seq_length,
                            vocab_size=max(sc.vocab_size, lexicon.vocab_size))
    ddp = wrap_ddp(build_model(model_cfg, parallel, pgs), pg_collection=pgs)
    optimizer = build_optimizer(OptimConfig(lr=1e-4), [ddp], pg_collection=pgs)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, sc.vocab_size, (micro_batch, sc.seq_length + 1), generator=g)
    lm_batch = [dict(tokens=tokens[:, :-1], labels=tokens[:, 1:], loss_mask=torch.ones(micro_batch, sc.seq_length),
                     position_ids=torch.arange(sc.seq_length).expand(micro_batch, -1))]
    cfg = AlignConfig(pairs_per_batch=sc.align_pairs)
    sampler = WordPairSampler(lexicon, np.arange(lexicon.num_entries), pairs_per_batch=sc.align_pairs, seed=0,
                              max_word_tokens=cfg.max_word_tokens)
    objective = AlignmentObjective(ddp, cfg, pgs)

    def pretrain_step():
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        forward_backward(ddp, lm_batch, num_microbatches=1, seq_length=sc.seq_length, micro_batch_size=micro_batch,
                         pg_collection=pgs)
        optimizer.step()

    def align_step(step):
        microbatches = build_microbatches(lexicon, sampler.global_pairs(step), dp_rank=0, dp_size=1,
                                          num_microbatches=1, pad_id=0)
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        with objective.attached():
            objective.forward_backward(microbatches)
        optimizer.step()

    times = {"pretrain": [], "align": []}
    for step in range(steps + 2):  # two warm-up rounds, then interleaved timing
        start = time.perf_counter()
        pretrain_step()
        middle = time.perf_counter()
        align_step(step)
        end = time.perf_counter()
        if step >= 2:
            times["pretrain"].append(middle - start)
            times["align"].append(end - middle)
    destroy_distributed()
    return {name: statistics.median(values) for name, values in times.items()} | {
        "pretrain_tokens_per_step": micro_batch * sc.seq_length, "steps_timed": steps}


def report(sc: Scenario) -> dict:
    pre, align_padded, align_unpadded = pretrain_flops(sc), prepass_flops(sc), prepass_flops(sc, padded=False)
    return {
        "scenario": asdict(sc),
        "params": sc.params(),
        "pretrain_flops": pre,
        "prepass_flops": align_padded,
        "prepass_share_of_pretraining": align_padded / pre,
        "prepass_share_unpadded": align_unpadded / pre,
        "prepass_tokens_padded": sc.align_steps * 2 * sc.align_pairs * sc.padded_word_tokens,
        "prepass_tokens_real": sc.align_steps * 2 * sc.align_pairs * sc.mean_word_tokens,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lexicon", help="a .lex file for the demo's word lengths (and the CPU measurement)")
    parser.add_argument("--word-tokens", type=float, default=None,
                        help="padded word length of the demo when no --lexicon is given (default 5)")
    parser.add_argument("--measure-steps", type=int, default=6, help="timed steps of each kind (0 skips)")
    parser.add_argument("--micro-batch", type=int, default=16, help="demo pretraining sequences per step")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the measurement")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    demo = DEMO
    lexicon = None
    if args.lexicon:
        from megatron_prealign.lexicon import load_lexicon

        lexicon = load_lexicon(args.lexicon)
        padded, mean = word_lengths_from_lexicon(lexicon, demo.align_pairs)
        demo = replace(demo, padded_word_tokens=padded, mean_word_tokens=mean)
    elif args.word_tokens:
        demo = replace(demo, padded_word_tokens=args.word_tokens)
    results = {"demo": report(demo), "1b": report(ONE_B)}

    if args.measure_steps > 0:
        import torch

        from megatron_prealign.align.data import clone_lexicon

        torch.set_num_threads(args.threads)
        if lexicon is None:
            lexicon = clone_lexicon(2000, 3990, max_word_tokens=int(round(demo.padded_word_tokens)), seed=0)
        measured = measure_demo(demo, lexicon, args.measure_steps, args.micro_batch)
        pretrain_steps = demo.pretrain_tokens / measured["pretrain_tokens_per_step"]
        measured["pretrain_run_s"] = measured["pretrain"] * pretrain_steps
        measured["prepass_run_s"] = measured["align"] * demo.align_steps
        measured["prepass_share_of_pretraining"] = measured["prepass_run_s"] / measured["pretrain_run_s"]
        flops_step = 3 * forward_flops(demo, demo.seq_length) * args.micro_batch
        words = 2 * demo.align_pairs
        flops_align = words * 3 * forward_flops(demo, demo.padded_word_tokens)
        measured["flop_ratio_align_step_to_pretrain_step"] = flops_align / flops_step
        measured["time_ratio_align_step_to_pretrain_step"] = measured["align"] / measured["pretrain"]
        # Throughput in the tokens each stage computes on: pretraining's sequences, the pre-pass's
        # padded words (and the words' own tokens, the useful share).
        measured["pretrain_tokens_per_s"] = measured["pretrain_tokens_per_step"] / measured["pretrain"]
        measured["prepass_padded_tokens_per_s"] = words * demo.padded_word_tokens / measured["align"]
        measured["prepass_word_tokens_per_s"] = words * demo.mean_word_tokens / measured["align"]
        measured["tokens_per_s_ratio_prepass_to_pretrain"] = (measured["prepass_padded_tokens_per_s"]
                                                              / measured["pretrain_tokens_per_s"])
        measured["threads"] = args.threads
        results["demo_measured_cpu"] = measured

    for name in ("demo", "1b"):
        r = results[name]
        sc = r["scenario"]
        print(f"[{name}] params {r['params'] / 1e6:.1f}M, pretraining {sc['pretrain_tokens'] / 1e9:.3g}B tokens "
              f"= {r['pretrain_flops']:.3g} FLOPs; pre-pass {sc['align_steps']} steps x {sc['align_pairs']} pairs, "
              f"padded word length {sc['padded_word_tokens']:.2f} (mean {sc['mean_word_tokens']:.2f}) "
              f"= {r['prepass_flops']:.3g} FLOPs -> {100 * r['prepass_share_of_pretraining']:.3f}% of pretraining "
              f"({100 * r['prepass_share_unpadded']:.3f}% without padding)")
    if "demo_measured_cpu" in results:
        m = results["demo_measured_cpu"]
        print(f"[demo, measured on CPU, {m['threads']} thread(s)] pretraining step {m['pretrain'] * 1e3:.0f} ms "
              f"({m['pretrain_tokens_per_step']} tokens), pre-pass step {m['align'] * 1e3:.0f} ms; run: pretraining "
              f"{m['pretrain_run_s']:.0f} s, pre-pass {m['prepass_run_s']:.0f} s -> "
              f"{100 * m['prepass_share_of_pretraining']:.1f}% (FLOP ratio per step "
              f"{m['flop_ratio_align_step_to_pretrain_step']:.3f}, time ratio {m['time_ratio_align_step_to_pretrain_step']:.3f})")
        print(f"[demo, measured on CPU] tokens/s: pretraining {m['pretrain_tokens_per_s']:.0f}, pre-pass "
              f"{m['prepass_padded_tokens_per_s']:.0f} padded ({m['prepass_word_tokens_per_s']:.0f} word tokens) -> "
              f"ratio {m['tokens_per_s_ratio_prepass_to_pretrain']:.2f} (pre-pass / pretraining)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
