"""Throughput of the compiled lexicon scan (`Lexicon.scan`, C++) against the pure-Python
reference (`megatron_prealign.lexicon.reference`), measured side by side in one run.

    python bench/bench_lexicon_scan.py --text /path/to/sotu/package/data \
        [--dictionary /usr/share/trans/de-en] [--tokenizer-model tok.model] [--max-tokens 4000000]

Without --tokenizer-model a SentencePiece unigram model (vocab 8000) is trained on the text.
Without --dictionary a synthetic one pairs the 20,000 most frequent corpus words with a made-up
"clone" spelling (word + "ö"), which gives realistic coverage of the stream. Without --text the
checked-in tests/assets/tiny_corpus.txt is repeated (a smoke run, not a realistic figure).
Results go to stdout; nothing here gates CI.
"""
from __future__ import annotations

import argparse
import collections
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from megatron_prealign.lexicon import (
    build_tokenizer,
    compile_lexicon,
    read_dictionary,
    reference_scan,
)
from megatron_prealign.log import get_logger

logger = get_logger("megatron_prealign.bench.lexicon_scan")
REPO = Path(__file__).resolve().parents[1]


def read_texts(paths: list[str]) -> list[str]:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def train_tokenizer(texts: list[str], workdir: Path, vocab_size: int) -> Path:
    import sentencepiece as spm

    corpus = workdir / "corpus.txt"
    # One sentence per line: SentencePiece skips lines longer than max_sentence_length (4 KB),
    # and some corpora store a whole document on one line.
    sentences = (s for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if s.strip())
    corpus.write_text("\n".join(sentences), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(workdir / "bench_sp"), vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, byte_fallback=True, num_threads=2,
        input_sentence_size=300_000, shuffle_input_sentence=True, minloglevel=2,
    )
    return workdir / "bench_sp.model"


def synthetic_dictionary(texts: list[str], workdir: Path, num_words: int) -> Path:
    counts = collections.Counter(w for t in texts for w in re.findall(r"[A-Za-z]+", t))
    path = workdir / "synthetic.muse"
    path.write_text("".join(f"{w} {w}ö\n" for w, _ in counts.most_common(num_words)), encoding="utf-8")
    return path


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", nargs="*", default=[str(REPO / "tests/assets/tiny_corpus.txt")])
    ap.add_argument("--dictionary", default=None)
    ap.add_argument("--tokenizer-model", default=None, help="SentencePiece .model (default: train one)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--synthetic-words", type=int, default=20000)
    ap.add_argument("--max-tokens", type=int, default=4_000_000)
    ap.add_argument("--reference-tokens", type=int, default=1_000_000, help="prefix scanned by the Python reference")
    ap.add_argument("--mode", default="word", choices=["word", "longest-match"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--doc-tokens", type=int, default=2048, help="document size for the per-document timing")
    args = ap.parse_args(argv)

    texts = read_texts(args.text)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.tokenizer_model is None:
            logger.info("training a SentencePiece model (vocab %d) on %d files", args.vocab_size, len(texts))
            model = train_tokenizer(texts, work, args.vocab_size)
        else:
            model = Path(args.tokenizer_model)
        tok = build_tokenizer("SentencePieceTokenizer", model)
        dictionary = args.dictionary or synthetic_dictionary(texts, work, args.synthetic_words)
        result = read_dictionary(dictionary, skip_invalid=True)
        t0 = time.perf_counter()
        lex = compile_lexicon(result, tok, mode=args.mode)
        compile_s = time.perf_counter() - t0

    ids: list[int] = []
    while len(ids) < args.max_tokens:
        before = len(ids)
        for text in texts:
            ids.extend(tok.encode(text))
            if len(ids) >= args.max_tokens:
                break
        if len(ids) == before:
            raise SystemExit("the text encodes to no tokens")
    stream32 = np.asarray(ids[: args.max_tokens], dtype=np.int32)
    stream16 = stream32.astype(np.uint16) if tok.vocab_size <= 65536 else None
    n = len(stream32)

    lex.scan(stream32[:1000])  # build the compiled trie outside the timing
    matches = len(lex.scan(stream32)[0])
    docs32 = [stream32[i : i + args.doc_tokens] for i in range(0, n, args.doc_tokens)]
    docs16 = [stream16[i : i + args.doc_tokens] for i in range(0, n, args.doc_tokens)] if stream16 is not None else []

    def per_doc(docs):
        for d in docs:
            lex.scan(d)

    rates = {
        "whole stream, int32": n / best_of(lambda: lex.scan(stream32), args.repeats),
        "whole stream, uint16": n / best_of(lambda: lex.scan(stream16), args.repeats) if stream16 is not None else float("nan"),
        f"{args.doc_tokens}-token docs, int32": n / best_of(lambda: per_doc(docs32), args.repeats),
        f"{args.doc_tokens}-token docs, uint16": n / best_of(lambda: per_doc(docs16), args.repeats) if docs16 else float("nan"),
    }
    ref_n = min(n, args.reference_tokens)
    prefix = stream32[:ref_n]
    t0 = time.perf_counter()
    ref = reference_scan(prefix, lex)
    rate_ref = ref_n / (time.perf_counter() - t0)
    cpp = lex.scan(prefix)
    assert all(np.array_equal(a, b) for a, b in zip(cpp, ref)), "C++ and reference disagree"

    s = lex.summary()
    lines = [
        f"python {platform.python_version()}, {platform.machine()}, numpy {np.__version__}",
        f"dictionary: {Path(dictionary).name}, {len(result.groups)} groups -> {s['entries']} entries "
        f"(multi-token share {s['multi_token_share']:.2f}), compiled in {compile_s:.1f} s, mode {args.mode}",
        f"stream: {n} tokens (vocab {tok.vocab_size}), {matches} matches "
        f"({matches / max(n, 1):.3f} per token)",
        f"Python reference:               {rate_ref / 1e6:8.3f} M tokens/s (first {ref_n} tokens)",
    ]
    lines += [
        f"C++ scan, {name:<22} {rate / 1e6:8.2f} M tokens/s  = {rate / rate_ref:5.0f}x reference"
        for name, rate in rates.items()
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
