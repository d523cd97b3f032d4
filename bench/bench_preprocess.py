"""Preprocessing throughput, four ways, alternating in one process tree:

  (a) our tools/preprocess_data.py with the code-switch sidecar (--lexicon)
  (b) our tools/preprocess_data.py without it
  (c) Megatron-LM's own tools/preprocess_data.py at tag core_v0.16.1 (extracted to a temporary
      directory from --megatron-lm, a checkout or a bare git directory; its Triton-only import,
      megatron/core/transformer/custom_layers/batch_invariant_kernels.py, replaced by a stub)
  (d) the tokenizer alone: the same documents' texts, already in memory, encoded by the same
      number of worker processes in batches: the ceiling of any preprocessing tool

    python bench/bench_preprocess.py --megatron-lm /path/to/Megatron-LM [--workers 2] [--corpus-mb 48]

Inputs (an English corpus of documents of at most 2,000 characters from /usr/share/doc, a
SentencePiece model trained on it, a dense 20,000-word dictionary) are built on first use under
--workdir, see bench/_bench_data.py. Every tool runs as a command, on the full corpus and on its
first half; the difference is what the second half of the corpus costs, without the fixed costs
(starting Python, imports, loading the tokenizer, starting workers) that both runs pay. For (d)
only the encoding is timed, not loading the texts, so that its rate is the tokenizer's own.
Printed: wall and CPU times (the whole process tree's, which a shared machine's load moves much
less than wall time) per tool and round, end to end and per corpus byte (medians over rounds),
and their ratios. The tokens of (a), (b) and (c) are compared byte for
byte. Without --megatron-lm, (c) is reported as not measured.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import _bench_data  # noqa: E402

MEGATRON_TAG = "core_v0.16.1"
# What Megatron-LM's tools/preprocess_data.py imports, directly or through megatron.training.
_MEGATRON_PATHS = ("tools/preprocess_data.py", "megatron/core", "megatron/training", "megatron/legacy",
                   "megatron/post_training", "megatron/rl")
_TRITON_MODULE = "megatron/core/transformer/custom_layers/batch_invariant_kernels.py"
_TRITON_STUB = '''"""Stub written by bench/bench_preprocess.py: the real module needs Triton (GPU kernels)."""


def enable_batch_invariant_mode(*args, **kwargs):
    raise RuntimeError("batch-invariant mode needs Triton, which this benchmark does not install")
'''


def extract_megatron(source: Path, dest: Path) -> Path:
    """Megatron-LM at MEGATRON_TAG under `dest`, from a bare git directory or a checkout."""
    git_dir = source if (source / "HEAD").is_file() and (source / "objects").is_dir() else source / ".git"
    if not git_dir.exists():
        raise SystemExit(f"--megatron-lm {source}: neither a git checkout nor a bare git directory")
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", MEGATRON_TAG,
                              *_MEGATRON_PATHS], capture_output=True, check=False)
    if archive.returncode:
        raise SystemExit(f"--megatron-lm {source}: cannot read tag {MEGATRON_TAG}: {archive.stderr.decode()[-500:]}")
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    (dest / _TRITON_MODULE).write_text(_TRITON_STUB)
    return dest


def tokenizer_only(corpus: str, model: str, workers: int) -> None:
    """(d), run as a child process: load the texts, then time only their encoding."""
    import multiprocessing

    import sentencepiece as spm

    texts = _bench_data.corpus_texts(Path(corpus))
    chunks = [texts[i : i + 256] for i in range(0, len(texts), 256)]

    ctx = multiprocessing.get_context("fork")
    cpu_seconds = ctx.Queue()

    def encode(worker: int) -> None:
        sp = spm.SentencePieceProcessor(model_file=model)
        t = time.process_time()
        for chunk in chunks[worker::workers]:
            sp.encode(chunk, num_threads=1)
        cpu_seconds.put(time.process_time() - t)

    t0 = time.perf_counter()
    procs = [ctx.Process(target=encode, args=(w,)) for w in range(workers)]
    for p in procs:
        p.start()
    cpu = sum(cpu_seconds.get() for _ in procs)
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"tokenizer worker failed with exit code {p.exitcode}")
    print(json.dumps({"encode_seconds": time.perf_counter() - t0, "encode_cpu_seconds": cpu,
                      "documents": len(texts)}))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the whole process tree, stdout) of a command that must succeed."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, cpu, proc.stdout


def _twice(wall: float) -> tuple[float, float]:
    return wall, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--megatron-lm", type=Path, default=None,
                    help=f"Megatron-LM checkout or bare git directory with tag {MEGATRON_TAG}")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "megatron_prealign_bench")
    ap.add_argument("--corpus-mb", type=float, default=48.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokenizer-only", nargs=3, metavar=("CORPUS", "MODEL", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tokenizer_only:
        tokenizer_only(args.tokenizer_only[0], args.tokenizer_only[1], int(args.tokenizer_only[2]))
        return 0

    corpus, model, dictionary = _bench_data.prepare(args.workdir, args.corpus_mb)
    small = args.workdir / "half.jsonl"
    if not small.exists() or small.stat().st_mtime < corpus.stat().st_mtime:
        with open(corpus, "rb") as f, open(small, "wb") as out:
            half = corpus.stat().st_size // 2
            for line in f:
                out.write(line)
                if out.tell() >= half:
                    break
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    lexicon = args.workdir / "dense.lex"
    if not lexicon.exists():
        subprocess.run([py, "tools/build_lexicon.py", "--dictionary", str(dictionary), "--tokenizer-type",
                        "SentencePieceTokenizer", "--tokenizer-model", str(model), "--output", str(lexicon)],
                       cwd=REPO, env=env, check=True, capture_output=True)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        megatron = extract_megatron(args.megatron_lm, tmp / "megatron-lm") if args.megatron_lm else None

        # Each returns (wall s, CPU s, scaling wall s, scaling CPU s): the whole command for the
        # tools; for (d) the scaling part is only the encoding, not loading the texts.
        def ours(inp: Path, out: str, *extra: str) -> tuple[float, float, float, float]:
            wall, cpu, _ = run([py, "tools/preprocess_data.py", "--input", str(inp), "--output-prefix",
                                str(tmp / out), "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model",
                                str(model), "--append-eod", "--workers", str(args.workers), *extra], REPO, env)
            return wall, cpu, wall, cpu

        def theirs(inp: Path, out: str) -> tuple[float, float, float, float]:
            wall, cpu, _ = run([py, "tools/preprocess_data.py", "--input", str(inp), "--output-prefix",
                                str(tmp / out), "--tokenizer-type", "GPTSentencePieceTokenizer", "--tokenizer-model",
                                str(model), "--append-eod", "--workers", str(args.workers)], megatron,
                               {**os.environ, "PYTHONPATH": str(megatron)})
            return wall, cpu, wall, cpu

        def tokenizer(inp: Path, out: str) -> tuple[float, float, float, float]:
            wall, cpu, stdout = run([py, __file__, "--tokenizer-only", str(inp), str(model), str(args.workers)],
                                    REPO, env)
            inner = json.loads(stdout.strip().splitlines()[-1])
            return wall, cpu, inner["encode_seconds"], inner["encode_cpu_seconds"]

        tools = {"a": lambda i, o: ours(i, o, "--lexicon", str(lexicon)), "b": ours, "d": tokenizer}
        if megatron is not None:
            tools["c"] = theirs
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}  # (wall, scaling part)
        for r in range(args.rounds):
            # Alternating, and in another order every round, so that load changes hit every tool.
            order = list(tools) if r % 2 == 0 else list(reversed(tools))
            for name in order:
                full = tools[name](corpus, f"{name}_full")
                first_half = tools[name](small, f"{name}_small")
                times[name].append((full[0], full[1], full[2] - first_half[2], full[3] - first_half[3]))
                print(f"round {r}: ({name}) full corpus {full[0]:6.2f} s ({full[1]:6.2f} s CPU), first half "
                      f"{first_half[0]:6.2f} s ({first_half[1]:6.2f} s CPU), second half {times[name][-1][2]:6.2f} s "
                      f"({times[name][-1][3]:6.2f} s CPU), load average {os.getloadavg()[0]:.1f}", flush=True)
            for name in ("a", "b", "c"):
                shutil.rmtree(tmp / f"{name}_small", ignore_errors=True)

        same = {}
        for name in ("b", "c"):
            if name in tools:
                same[name] = all(filecmp.cmp(tmp / f"a_full_text_document{s}", tmp / f"{name}_full_text_document{s}",
                                             shallow=False) for s in (".bin", ".idx"))

    mb = corpus.stat().st_size / 1e6
    second_mb = mb - small.stat().st_size / 1e6
    names = {"a": "ours, with sidecar", "b": "ours, no sidecar", "c": f"Megatron-LM {MEGATRON_TAG}",
             "d": "tokenizer alone (ceiling)"}
    print(f"\npython {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; corpus {mb:.1f} MB ({corpus}), {args.workers} workers, {args.rounds} rounds")
    med = {n: [statistics.median(v[i] for v in t) for i in range(4)] for n, t in times.items()}
    print(f"{'':32} {'wall s':>7} {'CPU s':>7} | second half: {'wall s':>7} {'CPU s':>7} {'MB/s':>6} {'MB/CPU s':>9}")
    for n in sorted(times):
        w, c, hw, hc = med[n]
        print(f"({n}) {names[n]:<28} {w:7.2f} {c:7.2f} |              {hw:7.2f} {hc:7.2f} {second_mb / hw:6.2f} "
              f"{second_mb / hc:9.2f}")
    if "c" not in tools:
        print("(c) Megatron-LM: not measured (no --megatron-lm)")
    else:
        a, c = med["a"], med["c"]
        print(f"speed (a) / (c): end to end {c[0] / a[0]:.2f}x wall, {c[1] / a[1]:.2f}x CPU; per corpus byte "
              f"{c[2] / a[2]:.2f}x wall, {c[3] / a[3]:.2f}x CPU")
    for n in ("a", "b"):
        print(f"speed ({n}) / (d), per corpus byte: {med['d'][2] / med[n][2]:.2f} of the tokenizer's (wall), "
              f"{med['d'][3] / med[n][3]:.2f} (CPU)")
    for name, equal in same.items():
        print(f"tokens of (a) and ({name}): {'identical' if equal else 'DIFFERENT'}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
