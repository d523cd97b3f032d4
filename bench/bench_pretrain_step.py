"""Pretraining step cost: code-switching on vs off at the same config, tokens/s and MFU.

Runs `megatron_prealign.pretrain.main` in this process (single rank, CPU or one GPU) several
times, alternating code-switch ratio 0 and R so machine-load drift hits both arms alike, and
reads step-only throughput (evaluation and saving excluded) from the metrics log.
MFU = model FLOPs/s / peak FLOPs/s, with peak measured here by a large dense matmul in the same
precision (on CPU there is no datasheet number worth quoting).

    python bench/bench_pretrain_step.py                      # demo-sized model on the shipped assets
    python bench/bench_pretrain_step.py --data-path P --tokenizer-model M --lexicon L --hidden-size 2048 ...
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"


def build_default_data(work: Path) -> tuple[str, str, str]:
    """Tiny assets (SentencePiece vocab 400, en-de dictionary) through the library's lexicon
    compilation and preprocessing."""
    from megatron_prealign.data.preprocess import PreprocessConfig, preprocess
    from megatron_prealign.lexicon import BuildLexiconConfig, build_lexicon

    corpus = work / "corpus.txt"
    corpus.write_text((ASSETS / "tiny_corpus.txt").read_text() * 300)
    tok = str(ASSETS / "tiny_sp.model")
    lex = str(work / "en_de.lex")
    build_lexicon(BuildLexiconConfig(dictionary=str(ASSETS / "dict_en_de.muse"), tokenizer_type="SentencePieceTokenizer",
                                     tokenizer_model=tok, output=lex))
    preprocess(PreprocessConfig(input=str(corpus), output_prefix=str(work / "corpus"),
                                tokenizer_type="SentencePieceTokenizer", tokenizer_model=tok, lexicon=lex,
                                append_eod=True, workers=1))
    return str(work / "corpus_text_document"), tok, lex


def peak_matmul_flops(dtype: torch.dtype, device: str, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_flops_per_token(num_layers: int, hidden: int, ffn: int, seq: int, vocab: int, heads: int,
                          groups: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), attention scores included."""
    kv = hidden // heads * groups
    per_layer = 2 * (hidden * (hidden + 2 * kv) + hidden * hidden + 3 * hidden * ffn) + 2 * 2 * seq * hidden
    return 3 * (num_layers * per_layer + 2 * hidden * vocab)


def run_arm(common: list[str], ratio: float, work: Path, tag: str) -> tuple[float, float]:
    """One trainer run; (tokens/s, data wait ms per iteration), medians over the logged windows
    after the first (warm-up)."""
    from megatron_prealign.pretrain import main

    log = work / f"{tag}.jsonl"
    rc = main(common + ["--codeswitch-ratio", str(ratio), "--metrics-log", str(log)])
    if rc:
        raise SystemExit(f"run {tag} failed")
    records = [json.loads(line) for line in log.read_text().splitlines() if "tokens_per_sec" in line][1:]
    return (statistics.median(r["tokens_per_sec"] for r in records),
            statistics.median(r["data_wait_ms"] for r in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path"), parser.add_argument("--tokenizer-model"), parser.add_argument("--lexicon")
    parser.add_argument("--ratio", type=float, default=0.05)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=160)
    parser.add_argument("--num-attention-heads", type=int, default=4)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--train-iters", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bf16", action="store_true",
                        help="train in bf16 (needs CUDA) and measure the peak in bf16")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="DataLoader workers of the trainer (Megatron's --num-workers)")
    args = parser.parse_args()

    os.environ.setdefault("RANK", "0"), os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1"), os.environ.setdefault("MASTER_PORT", "29733")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.data_path:
            data, tok, lex = args.data_path, args.tokenizer_model, args.lexicon
        else:
            data, tok, lex = build_default_data(work)
        ffn = 4 * args.hidden_size
        common = ["--num-layers", str(args.num_layers), "--hidden-size", str(args.hidden_size),
                  "--num-attention-heads", str(args.num_attention_heads), "--ffn-hidden-size", str(ffn),
                  "--seq-length", str(args.seq_length), "--micro-batch-size", str(args.micro_batch_size),
                  "--train-iters", str(args.train_iters), "--lr", "3e-4", "--min-lr", "3e-5", "--log-interval", "5",
                  "--eval-iters", "1", "--data-path", data, "--split", "99,1,0", "--tokenizer-model", tok,
                  "--lexicon", lex, "--num-workers", str(args.num_workers)]
        if args.bf16:
            common.append("--bf16")
        # Alternating off/on so slow drifts of the machine's load hit both arms alike.
        runs: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        for r in range(args.repeats):
            runs["off"].append(run_arm(common, 0.0, work, f"off{r}"))
            runs["on"].append(run_arm(common, args.ratio, work, f"on{r}"))
        from megatron_prealign.lexicon import build_tokenizer

        vocab = build_tokenizer("SentencePieceTokenizer", tok).vocab_size
        flops_per_token = model_flops_per_token(args.num_layers, args.hidden_size, ffn, args.seq_length, vocab,
                                                args.num_attention_heads, args.num_attention_heads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        precision = torch.bfloat16 if args.bf16 else torch.float32
        peak = peak_matmul_flops(precision, device)
        off = [t for t, _ in runs["off"]]
        on = [t for t, _ in runs["on"]]
        # Per-pair ratios: each "on" run against the "off" run just before it.
        pair_overheads = [100 * (a / b - 1) for a, b in zip(off, on)]
        tok_s_off, tok_s_on = statistics.median(off), statistics.median(on)
        wait_off = statistics.median(w for _, w in runs["off"])
        wait_on = statistics.median(w for _, w in runs["on"])
        step_ms = 1e3 * args.micro_batch_size * args.seq_length / tok_s_off
        print(f"config: layers={args.num_layers} hidden={args.hidden_size} seq={args.seq_length} "
              f"micro-batch={args.micro_batch_size} workers={args.num_workers} vocab={vocab} device={device} "
              f"threads={torch.get_num_threads()} iterations={args.train_iters} repeats={args.repeats}")
        print(f"tokens/s  code-switch off: {tok_s_off:,.0f}   on (r={args.ratio}): {tok_s_on:,.0f}   "
              f"(per repeat off={[round(x) for x in off]} on={[round(x) for x in on]})")
        print(f"step-time overhead of code-switching: {100 * (tok_s_off / tok_s_on - 1):+.2f}% of medians "
              f"(target <= 2%); per pair {[round(x, 1) for x in pair_overheads]}, "
              f"spread of the off runs {100 * (max(off) / min(off) - 1):.1f}%")
        print(f"data wait per iteration (critical path): off {wait_off:.3f} ms, on {wait_on:.3f} ms "
              f"-> {wait_on - wait_off:+.3f} ms = {100 * (wait_on - wait_off) / step_ms:+.2f}% of a {step_ms:.1f} ms step")
        print(f"model FLOPs/token {flops_per_token / 1e6:.2f} M; achieved {tok_s_off * flops_per_token / 1e9:.2f} "
              f"GFLOP/s; {str(precision).removeprefix('torch.')} matmul peak {peak / 1e9:.1f} GFLOP/s; MFU {100 * tok_s_off * flops_per_token / peak:.1f}%")


if __name__ == "__main__":
    main()
