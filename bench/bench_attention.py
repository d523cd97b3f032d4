"""Core attention: torch's SDPA (`--attention-backend sdpa`) vs megatron-core's local attention
(`--attention-backend local`), one training step (forward + backward) of a whole GPTModel at a
long sequence: step time and peak memory, as ratios.

Each measurement runs in a fresh child process, alternating the backends, so one arm's freed
heap never lowers the other's peak. Peak memory is the resident high-water mark of the step
above the resident size just before it (on CPU: activations, scores and gradients; weights and
imports excluded). On CUDA it is torch's allocator peak.

    python bench/bench_attention.py                       # seq 2048, 2 layers, hidden 256, 3 rounds
    python bench/bench_attention.py --seq-length 4096 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(backend: str, args: argparse.Namespace) -> dict:
    """One child process's measurement: build, one warm-up step, then `--steps` timed steps."""
    import resource

    import torch

    from megatron_prealign.distributed import single_process_world
    from megatron_prealign.model import ModelConfig, build_model
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.platform import return_freed_memory_to_os

    cuda = torch.cuda.is_available()
    with single_process_world(seed=11) as pgs:
        cfg = ModelConfig(num_layers=args.num_layers, hidden_size=args.hidden_size,
                          num_attention_heads=args.num_attention_heads, num_query_groups=args.num_query_groups,
                          seq_length=args.seq_length, vocab_size=512, make_vocab_size_divisible_by=128,
                          attention_backend=backend, bf16=cuda)
        model = build_model(cfg, ParallelConfig(), pgs)
        device = "cuda" if cuda else "cpu"
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, 512, (args.micro_batch_size, args.seq_length), generator=gen).to(device)
        positions = torch.arange(args.seq_length, device=device).expand_as(tokens)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(tokens, positions, None, labels=tokens).float().mean().backward()

        step()  # warm-up: lazy allocations, kernel selection
        model.zero_grad(set_to_none=True)
        return_freed_memory_to_os()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss_bytes()
            resource_peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        if cuda:
            peak = torch.cuda.max_memory_allocated() - base
        else:
            # ru_maxrss only rises: if the warm-up already set the high-water mark, the step's own
            # peak is hidden; report that case instead of a wrong number.
            high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            peak = high - base if high > resource_peak_before else None
    return {"backend": backend, "step_s": statistics.median(times), "peak_bytes": peak}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-attention-heads", type=int, default=8)
    parser.add_argument("--num-query-groups", type=int, default=4)
    parser.add_argument("--micro-batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per child process")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per backend, alternating")
    parser.add_argument("--child", choices=["local", "sdpa"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0

    passthrough = list(argv if argv is not None else sys.argv[1:])
    results: dict[str, list[dict]] = {"local": [], "sdpa": []}
    for round_ in range(args.rounds):
        for backend in ("local", "sdpa") if round_ % 2 == 0 else ("sdpa", "local"):
            out = subprocess.run([sys.executable, __file__, *passthrough, "--child", backend], cwd=REPO,
                                 capture_output=True, text=True, check=True)
            results[backend].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[backend][-1]
            peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f} MiB"
            print(f"round {round_ + 1} {backend:5s}: step {r['step_s']:.3f} s, peak {peak}", flush=True)

    def median(backend: str, key: str) -> float | None:
        values = [r[key] for r in results[backend] if r[key] is not None]
        return statistics.median(values) if values else None

    local_t, sdpa_t = median("local", "step_s"), median("sdpa", "step_s")
    local_m, sdpa_m = median("local", "peak_bytes"), median("sdpa", "peak_bytes")
    print(f"\nseq {args.seq_length}, {args.num_layers} layers, hidden {args.hidden_size}, "
          f"{args.num_attention_heads} heads / {args.num_query_groups} groups, micro batch {args.micro_batch_size}")
    print(f"step time   local {local_t:.3f} s | sdpa {sdpa_t:.3f} s | sdpa speed-up {local_t / sdpa_t:.2f}x")
    if local_m and sdpa_m:
        print(f"peak memory local {local_m / 2**20:.0f} MiB | sdpa {sdpa_m / 2**20:.0f} MiB | "
              f"sdpa/local {sdpa_m / local_m:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
