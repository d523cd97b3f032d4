"""Compiling a million-pair dictionary: wall time and peak memory of tools/build_lexicon.py's
work (read the dictionary, `compile_lexicon`, save the `.lex`), against the word-by-word
compiler it replaced (tests/_lexicon_reference.py) on a prefix of the same dictionary.

    python bench/bench_lexicon_compile.py [--pairs 1000000] [--reference-pairs 100000]

The dictionary is synthetic from a real word list (/usr/share/dict/words): every word paired
with made-up twins in up to 14 "languages" (vowels shifted, a suffix per language), so that the
targets tokenize into several pieces as rare foreign words do; each word and its twins form one
translation group. The tokenizer is the SentencePiece model of bench/_bench_data.py (trained on
first use). Each compile runs in a fresh child process, which reports its own peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import _bench_data  # noqa: E402

WORDS = Path("/usr/share/dict/words")
_SUFFIXES = ("", "a", "ek", "ul", "ö", "ja", "ir", "os", "än", "ije", "ak", "eß", "um", "ys", "ot")
_VOWELS = "aeiou"

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from megatron_prealign.lexicon import build_tokenizer, read_dictionary, compile_lexicon
from tests._lexicon_reference import reference_compile_lexicon
dictionary, model, output, which = sys.argv[1:5]
tok = build_tokenizer("SentencePieceTokenizer", model)
tok.token_classes(), tok.fingerprint  # the tokenizer's own one-off costs, outside the timing
base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
result = read_dictionary(dictionary)
t1 = time.perf_counter()
lex = (compile_lexicon if which == "new" else reference_compile_lexicon)(result, tok)
t2 = time.perf_counter()
lex.save(output)
t3 = time.perf_counter()
s = lex.summary()
print(json.dumps({{"read_s": t1 - t0, "compile_s": t2 - t1, "save_s": t3 - t2, "total_s": t3 - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mb": base_kb / 1024, "entries": s["entries"], "groups": s["groups"],
                  "sha256": lex.sha256, "pairs": sum(len(g) - 1 for g in result.groups)}}))
"""


def twin(word: str, language: int) -> str:
    shift = language % len(_VOWELS)
    swapped = "".join(_VOWELS[(_VOWELS.index(c) + shift) % 5] if c in _VOWELS else c for c in word)
    return swapped + _SUFFIXES[language]


def synthetic_dictionary(path: Path, pairs: int) -> Path:
    if path.exists():
        return path
    words = sorted({w.strip() for w in WORDS.read_text(encoding="utf-8").split("\n") if w.strip() and " " not in w})
    lines, seen = [], 0
    for language in range(1, len(_SUFFIXES)):
        for w in words:
            t = twin(w, language)
            if t != w:
                lines.append(f"{w}\t{t}\n")
                seen += 1
                if seen == pairs:
                    break
        if seen == pairs:
            break
    if seen < pairs:
        raise SystemExit(f"{WORDS} gives only {seen} pairs")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def prefix(path: Path, lines: int) -> Path:
    out = path.with_name(f"{path.stem}.first{lines}{path.suffix}")
    if not out.exists():
        with open(path, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as o:
            for _, line in zip(range(lines), f):
                o.write(line)
    return out


def compile_in_child(dictionary: Path, model: Path, output: Path, which: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(repo=str(REPO)), str(dictionary), str(model),
                           str(output), which], capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"compile ({which}) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["lex_mb"] = output.stat().st_size / 1e6
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "megatron_prealign_bench")
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--reference-pairs", type=int, default=100_000,
                    help="prefix compiled by both compilers for the ratio (0: skip)")
    ap.add_argument("--corpus-mb", type=float, default=48.0, help="corpus the tokenizer is trained on")
    args = ap.parse_args(argv)

    _, model, _ = _bench_data.prepare(args.workdir, args.corpus_mb)
    dictionary = synthetic_dictionary(args.workdir / f"synthetic{args.pairs}.tsv", args.pairs)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; tokenizer {model}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        runs = [("new", dictionary)]
        if args.reference_pairs:
            small = prefix(dictionary, args.reference_pairs)
            runs += [("new", small), ("reference", small)]
        results = []
        for which, path in runs:
            r = compile_in_child(path, model, Path(tmp) / f"{which}.lex", which)
            results.append(r)
            print(f"{which:>9} compiler, {r['pairs']:>9,} pairs -> {r['entries']:>9,} entries, {r['groups']:>8,} "
                  f"groups: {r['total_s']:7.2f} s wall (read {r['read_s']:.2f}, compile {r['compile_s']:.2f}, "
                  f"save {r['save_s']:.2f}), peak RSS {r['peak_rss_mb']:7.0f} MB ({r['rss_before_mb']:.0f} MB "
                  f"before reading), .lex {r['lex_mb']:.0f} MB", flush=True)
    if args.reference_pairs:
        new, ref = results[1], results[2]
        print(f"on {new['pairs']:,} pairs: {ref['total_s'] / new['total_s']:.1f}x faster, peak RSS "
              f"{ref['peak_rss_mb'] / new['peak_rss_mb']:.1f}x lower; same lexicon (sha256): "
              f"{new['sha256'] == ref['sha256']}")
        if new["sha256"] != ref["sha256"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
