"""The billion-parameter model through every stage on CPU: TP=2 on two processes, fp32.

    python bench/billion_smoke.py --work /tmp/smoke                    # gpt_1b.yaml, ~1.2B (~40 GB-minutes)
    python bench/billion_smoke.py --work /tmp/smoke --num-layers 2     # its width, 2 layers (a rehearsal)
    python bench/billion_smoke.py --work /tmp/smoke --optimizer sgd    # full size within ~21 GiB

Phases (each timed; results in WORK/result.json and WORK/result.md):
  data      decompress the shipped State-of-the-Union corpus, build an en-de lexicon (Debian's trans-de-en
            when installed, else tests/assets/dict_en_de.muse) with tools/build_lexicon.py,
            preprocess the corpus
  plan      tools/plan_run.py for the same flags and launch: the predicted peak per rank
  train     torchrun --nproc-per-node 2: build, 2 pre-pass steps, 3 pretraining iterations with
            code-switching (r=0.05), save
  resume    the same command with --load: one more iteration from the checkpoint, save
  export    tools/convert_checkpoint.py --direction mcore-to-hf
  logits    our model (from the checkpoint) and the export loaded in transformers, on one prompt
Peak RSS per rank is each trainer process's VmHWM, polled while it runs. Not part of CI: the
full size needs ~20 GiB of memory and a machine nobody else is using.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"
LOGIT_ATOL = 1e-3  # fp32 on both sides; the same weights in another implementation
PROMPT = "The State of the Union is strong, and the Congress of the United States"


def _run(cmd: list[str], log: Path, env: dict | None = None, monitor: "RssMonitor | None" = None) -> float:
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n+ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        if monitor is not None:
            monitor.watch(proc.pid)
        rc = proc.wait()
        if monitor is not None:
            monitor.stop()
    if rc:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)} -- see {log}")
    return time.perf_counter() - start


class RssMonitor:
    """Peak resident size (VmHWM) of each trainer rank among a process's descendants."""

    def __init__(self):
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, pid: int) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, args=(pid,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _poll(self, root: int) -> None:
        while not self._stop.is_set():
            for pid in _descendants(root):
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if b"megatron_prealign.pretrain" not in cmdline:
                    continue
                rank = next((int(e[5:]) for e in environ if e.startswith(b"RANK=")), None)
                hwm = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM")), 0)
                if rank is not None:
                    self.peaks[rank] = max(self.peaks.get(rank, 0), hwm)
            time.sleep(0.5)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def train_flags(args, work: Path) -> list[str]:
    flags = ["--config", "examples/configs/gpt_1b.yaml", "--no-bf16", "--no-use-distributed-optimizer",
             "--no-overlap-param-gather",
             "--tensor-model-parallel-size", "2", "--seq-length", str(args.seq_length),
             "--max-position-embeddings", str(args.seq_length), "--micro-batch-size", "1", "--global-batch-size", "1",
             "--lr-warmup-iters", "1", "--log-interval", "1", "--eval-iters", "1", "--split", "99,1,0",
             "--save-interval", "1000", "--align-steps", "2", "--align-pairs-per-batch", "16",
             "--align-eval-max-words", "64", "--align-log-interval", "1", "--codeswitch-ratio", "0.05",
             # Samples are read in the trainer: a DataLoader worker forked from a trainer holding the
             # model in host memory keeps a copy-on-write image of it, and every optimizer step
             # then duplicates the pages it writes (the 1.2B run was OOM-killed that way).
             "--num-workers", "0", "--data-path", str(work / "data" / "sotu_text_document"),
             "--tokenizer-model", str(args.tokenizer_model), "--lexicon", str(work / "en_de.lex"),
             "--save", str(work / "ckpt"), "--metrics-log", str(work / "metrics.jsonl")]
    if args.num_layers:
        flags += ["--num-layers", str(args.num_layers)]
    if args.optimizer != "adam":
        flags += ["--optimizer", args.optimizer]
    return flags


def compare_logits(checkpoint: str, export: str, tokenizer_model: str) -> dict:
    """Our model (loaded from `checkpoint` at TP=1) and the Hugging Face export on one prompt."""
    import torch
    import transformers

    from megatron_prealign.evaluate.loading import load_model, single_process_group
    from megatron_prealign.lexicon import build_tokenizer

    ids = build_tokenizer("SentencePieceTokenizer", tokenizer_model).encode(PROMPT)
    tokens = torch.tensor([ids])
    positions = torch.arange(len(ids)).unsqueeze(0)
    with single_process_group() as pgs, torch.no_grad():
        loaded = load_model(checkpoint, pgs)
        ours = loaded.model(tokens, positions, None).float()
        del loaded
    hf = transformers.AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(tokens).logits.float()
    vocab = min(ours.shape[-1], theirs.shape[-1])
    diff = (ours[..., :vocab] - theirs[..., :vocab]).abs()
    return {"prompt_tokens": len(ids), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "logit_scale": float(theirs.abs().max()), "tolerance": LOGIT_ATOL,
            "argmax_agree": float((ours[..., :vocab].argmax(-1) == theirs[..., :vocab].argmax(-1)).float().mean()),
            "match": bool(diff.max() <= LOGIT_ATOL)}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _train_timings(metrics: Path) -> dict:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    align = [r["align_step_seconds"] for r in records if "align_step_seconds" in r]
    iters = [r for r in records if "tokens_per_sec" in r]
    return {"prepass_step_seconds": [round(s, 1) for s in align],
            "tokens_per_sec": [round(r["tokens_per_sec"], 2) for r in iters],
            "lm_loss": [round(r["lm_loss"], 4) for r in iters], "switch_rate": [r["switch_rate"] for r in iters],
            "rank0_peak_rss_gib": max((r.get("peak_rss_gib", 0) for r in iters), default=None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (created; data, checkpoints, results)")
    parser.add_argument("--num-layers", type=int, help="override gpt_1b.yaml's 24 layers (a scaled-down rehearsal)")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--tokenizer-model", type=Path, default=ASSETS / "tiny_sp.model",
                        help="SentencePiece model (default: the 400-piece test tokenizer; the GPU bundle's 32k "
                             "model makes the model the 1.26B of bench/GPU.md)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="pretraining's optimizer (the pre-pass always uses Adam): sgd keeps one moment per "
                             "parameter instead of two, 4.5 GB less for the full size, which is what lets the "
                             "full size save on a 23 GiB machine")
    trans = Path("/usr/share/trans/de-en")  # Debian's trans-de-en, when installed
    parser.add_argument("--dictionary", type=Path, default=trans if trans.exists() else ASSETS / "dict_en_de.muse",
                        help="dictionary for the lexicon (default: Debian trans-de-en if installed, else the "
                             "test assets' en-de pairs)")
    sub = parser.add_subparsers(dest="command")
    logits = sub.add_parser("logits", help="(internal) compare our checkpoint's logits with the HF export")
    logits.add_argument("checkpoint")
    logits.add_argument("export")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    if args.command == "logits":
        print(json.dumps(compare_logits(args.checkpoint, args.export, str(args.tokenizer_model))))
        return 0
    if (work / "ckpt").exists():
        raise SystemExit(f"{work}/ckpt exists: give a new --work folder (this script never overwrites a run)")
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    py = sys.executable
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} CPU cores",
                    "command": " ".join([Path(py).name, *sys.argv]), "seconds": {}}
    tok = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(args.tokenizer_model)]

    start = time.perf_counter()
    (work / "data").mkdir(exist_ok=True)
    corpus = work / "sotu.jsonl"  # the preprocessing tool refuses compressed input
    from prealign_experiments.english_clone.setting import DEFAULT_CORPUS

    corpus.write_bytes(gzip.decompress(Path(DEFAULT_CORPUS).read_bytes()))
    _run([py, "tools/build_lexicon.py", "--dictionary", str(args.dictionary), *tok, "--output",
          str(work / "en_de.lex"), "--skip-invalid"], log)
    _run([py, "tools/preprocess_data.py", "--input", str(corpus), "--output-prefix", str(work / "data" / "sotu"), *tok,
          "--lexicon", str(work / "en_de.lex"), "--append-eod", "--workers", "2"], log)
    result["seconds"]["data"] = round(time.perf_counter() - start, 1)

    flags = train_flags(args, work)
    plan_out = subprocess.run([py, "tools/plan_run.py", *flags, "--world-size", "2", "--device", "cpu", "--json"],
                              cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                              check=True)
    plan = json.loads(plan_out.stdout)
    result["plan"] = {"parameters_total": plan["parameters_total"],
                      "parameters_per_rank": plan["stages"][0]["parameters"],
                      "peak_gib_per_rank": plan["stages"][0]["peak_gib"],
                      "terms_gib": {k: round(plan["stages"][0][k] / 2**30, 3) for k in
                                    ("runtime", "weights", "gradients", "optimizer", "buffers", "activations",
                                     "transient")}}

    torchrun = [py, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29731",
                "-m", "megatron_prealign.pretrain"]
    env = {"OMP_NUM_THREADS": "1"}
    monitor = RssMonitor()
    result["seconds"]["train"] = round(_run([*torchrun, *flags, "--train-iters", "3"], log, env, monitor), 1)
    result["train"] = _train_timings(work / "metrics.jsonl")
    result["peak_rss_gib_per_rank"] = {r: round(v / 2**30, 3) for r, v in sorted(monitor.peaks.items())}
    result["checkpoint_bytes"] = _dir_bytes(work / "ckpt")

    (work / "metrics.jsonl").rename(work / "metrics_train.jsonl")
    monitor = RssMonitor()
    result["seconds"]["resume"] = round(_run([*torchrun, *flags, "--load", str(work / "ckpt"), "--train-iters", "4"],
                                             log, env, monitor), 1)
    resumed = _train_timings(work / "metrics.jsonl")
    result["resume"] = {"lm_loss": resumed["lm_loss"], "tokens_per_sec": resumed["tokens_per_sec"],
                        "peak_rss_gib_per_rank": {r: round(v / 2**30, 3) for r, v in sorted(monitor.peaks.items())}}

    result["seconds"]["export"] = round(_run([py, "tools/convert_checkpoint.py", "--direction", "mcore-to-hf", "--load",
                                              str(work / "ckpt"), "--output", str(work / "hf")], log), 1)
    result["export_bytes"] = _dir_bytes(work / "hf")
    start = time.perf_counter()
    compared = subprocess.run([py, str(Path(__file__).resolve()), "--work", str(work), "--tokenizer-model",
                               str(args.tokenizer_model), "logits", str(work / "ckpt"), str(work / "hf")],
                              cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if compared.returncode:
        raise SystemExit(f"logit comparison failed:\n{compared.stderr[-3000:]}")
    result["logits"] = json.loads(compared.stdout.strip().splitlines()[-1])
    result["seconds"]["logits"] = round(time.perf_counter() - start, 1)

    (work / "result.json").write_text(json.dumps(result, indent=2))
    (work / "result.md").write_text(render(result))
    print(render(result))
    return 0 if result["logits"]["match"] else 1


def render(r: dict) -> str:
    plan = r["plan"]
    rss = ", ".join(f"rank {k}: {v:.2f}" for k, v in r["peak_rss_gib_per_rank"].items())
    lines = [f"# Billion-parameter smoke ({r['date']}, {r['machine']})", "", f"`{r['command']}`", "",
             f"- parameters: {plan['parameters_total']:,} total, {plan['parameters_per_rank']:,} per rank (TP=2)",
             "- wall time (s): " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()),
             f"- pre-pass step seconds {r['train']['prepass_step_seconds']}; pretraining tokens/s "
             f"{r['train']['tokens_per_sec']}; lm loss {r['train']['lm_loss']} -> resumed {r['resume']['lm_loss']}",
             f"- peak RSS per rank (GiB): {rss} (rank 0 before the final save: "
             f"{r['train']['rank0_peak_rss_gib']:.2f}); resumed run: "
             + ", ".join(f"rank {k}: {v:.2f}" for k, v in r["resume"]["peak_rss_gib_per_rank"].items()),
             f"- planner: {plan['peak_gib_per_rank']:.2f} GiB per rank ({json.dumps(plan['terms_gib'])})",
             f"- checkpoint {r['checkpoint_bytes'] / 2**30:.2f} GiB, HF export {r['export_bytes'] / 2**30:.2f} GiB",
             f"- logits vs transformers: max |diff| {r['logits']['max_abs_diff']:.2e} (tolerance {r['logits']['tolerance']}, "
             f"logits up to {r['logits']['logit_scale']:.1f}), argmax agreement {r['logits']['argmax_agree']:.3f}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
