"""One-shot GPU check: the ~1B Llama-style model in bf16 on one GPU, end to end through our trainer.

Two steps (bench/gpu/README.md has the whole recipe):

    python bench/gpu/check.py prepare --bundle .gpu_bundle          # on a CPU machine with PyPI access
    bash bench/gpu/run.sh .gpu_bundle OUT_DIR                       # on the GPU machine (no network)

`prepare` fills the bundle: the Python 3.12 wheels the GPU machine lacks, a real 32k
SentencePiece tokenizer, an en-de lexicon and the State-of-the-Union corpus preprocessed with
it (sidecar included). `measure` (called by run.sh) writes `results.json` and `report.md` into
OUT_DIR after every phase, so a run cut short still leaves its figures:

  build     compile megatron_prealign._C in place (in the background while the GPU phases run)
  peak      bf16 matmul peak, 8192^3, CUDA-event timed (the MFU denominator next to the 989 TFLOP/s spec)
  attention one attention layer's forward+backward at the model's shapes, per SDPA kernel vs local
  train     `python -m megatron_prealign.pretrain` arms: tokens/s, MFU, peak memory; SDPA vs local
            attention, code-switching off vs on (r=0.05), selective recomputation
  prepass   the alignment pre-pass at the same size: steps/s and its share of a 20-tokens-per-
            parameter run
  tests     tests/unit on the GPU machine (CUDA present, so the CPU layer must stay inert)

`--cpu-rehearsal` runs every phase on a tiny fp32 model on the CPU, to debug the script here
instead of on rented GPU minutes; `prepare --tokenizer-model/--dictionary/--corpus/--no-wheels`
makes an offline bundle for it (tests/tools/test_gpu_check.py runs both in CI).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SPEC_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16, vendor datasheet
CODESWITCH_RATIO = 0.05
TOKENS_PER_PARAMETER = 20  # the compute-optimal budget the pre-pass share is projected onto
ALIGN_STEPS_OF_A_RUN = 5000  # the authors' pre-pass length (examples/configs/gpt_1b.yaml)

# The model under test: examples/configs/gpt_1b.yaml at one GPU. Rehearsal: the same code paths
# on a model small enough for two CPU cores.
GPU_SHAPE = ["--micro-batch-size", "4", "--global-batch-size", "16", "--train-iters", "12", "--log-interval", "4"]
REHEARSAL_SHAPE = ["--num-layers", "2", "--hidden-size", "64", "--ffn-hidden-size", "176",
                   "--num-attention-heads", "4", "--num-query-groups", "2", "--seq-length", "128",
                   "--max-position-embeddings", "128", "--micro-batch-size", "2", "--global-batch-size", "4",
                   "--train-iters", "4", "--log-interval", "2", "--no-bf16", "--align-pairs-per-batch", "32"]

# name -> extra flags; the code-switch pair runs twice, interleaved, so a drift hits both arms.
TRAIN_ARMS: dict[str, list[str]] = {
    "sdpa_cs_off": ["--attention-backend", "sdpa", "--codeswitch-ratio", "0"],
    "sdpa_cs_on": ["--attention-backend", "sdpa", "--codeswitch-ratio", str(CODESWITCH_RATIO)],
    "local_cs_off": ["--attention-backend", "local", "--codeswitch-ratio", "0"],
    "sdpa_cs_off_2": ["--attention-backend", "sdpa", "--codeswitch-ratio", "0"],
    "sdpa_cs_on_2": ["--attention-backend", "sdpa", "--codeswitch-ratio", str(CODESWITCH_RATIO)],
    "local_selective_recompute": ["--attention-backend", "local", "--codeswitch-ratio", "0",
                                  "--recompute-granularity", "selective"],
}
# The rehearsal runs each code path once (the repeats only guard the GPU figures against drift).
REHEARSAL_CODESWITCH_RATIO = "0.5"
REHEARSAL_ARMS = ("sdpa_cs_off", "sdpa_cs_on", "local_cs_off", "local_selective_recompute")


# ------------------------------------------------------------------------------------ prepare

def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def prepare(bundle: Path, dictionary: str | None, tokenizer_model: str | None = None, corpus: str | None = None,
            wheels: bool = True) -> None:
    """Fill `bundle` (run on a machine with PyPI access; the GPU machine has none). With
    `tokenizer_model`, `corpus` and `wheels=False` nothing is downloaded (an offline bundle for
    the CPU rehearsal)."""
    bundle.mkdir(parents=True, exist_ok=True)
    if wheels:
        wheel_dir = bundle / "wheels"
        wheel_dir.mkdir(exist_ok=True)
        platforms = [arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                                     "manylinux2014_x86_64") for arg in ("--platform", tag)]
        # megatron-core is the only missing package there; its own needs (numpy, packaging) are present.
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
              "3.12", "--implementation", "cp", *platforms, "-d", str(wheel_dir), "megatron-core==0.16.1"])
    tokenizer = bundle / "tokenizer.model"
    if tokenizer_model is not None:
        shutil.copyfile(tokenizer_model, tokenizer)
    elif not tokenizer.exists():
        with tempfile.TemporaryDirectory() as tmp:
            _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, "mistral-common"])
            import zipfile

            wheel = next(Path(tmp).glob("mistral_common-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                tokenizer.write_bytes(archive.read("mistral_common/data/tokenizer.model.v1"))
    if dictionary is None:
        dictionary = "/usr/share/trans/de-en" if Path("/usr/share/trans/de-en").exists() else \
            str(REPO / "tests" / "assets" / "dict_en_de.muse")
    import gzip

    from megatron_prealign.data.preprocess import PreprocessConfig, preprocess
    from megatron_prealign.lexicon import BuildLexiconConfig, build_lexicon
    from prealign_experiments.english_clone.setting import DEFAULT_CORPUS

    lexicon = bundle / "en_de.lex"
    tok = {"tokenizer_type": "SentencePieceTokenizer", "tokenizer_model": str(tokenizer)}
    build_lexicon(BuildLexiconConfig(dictionary=dictionary, output=str(lexicon), skip_invalid=True, **tok))
    (bundle / "data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if corpus is None:  # the preprocessing tool refuses compressed input
            corpus = str(Path(tmp) / "sotu.jsonl")
            Path(corpus).write_bytes(gzip.decompress(Path(DEFAULT_CORPUS).read_bytes()))
        preprocess(PreprocessConfig(input=str(corpus), output_prefix=str(bundle / "data" / "sotu"), lexicon=str(lexicon),
                                    append_eod=True, workers=2, **tok))
    (bundle / "bundle.json").write_text(json.dumps({"dictionary": dictionary, "corpus": corpus or "sotu.jsonl.gz",
                                                    "prepared": time.strftime("%Y-%m-%d")}))
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"bundle {bundle}: {size / 2**20:.1f} MiB (the GPU machine takes 64 MiB per call in all)")


# ------------------------------------------------------------------------------------ measure

class Check:
    """Runs the phases, keeping results.json/report.md current after each one."""

    def __init__(self, bundle: Path, out: Path, rehearsal: bool):
        self.bundle, self.out, self.rehearsal = bundle, out, rehearsal
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.log = open(out / "logs.txt", "a", buffering=1)
        self.results: dict[str, Any] = {"rehearsal": rehearsal, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.port = 29600

    def save(self) -> None:
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=2, sort_keys=True))
        tmp.replace(self.out / "results.json")
        (self.out / "report.md").write_text(render_report(self.results))

    def phase(self, name: str, func, *args) -> Any:
        start = time.perf_counter()
        self.log.write(f"\n===== phase {name} =====\n")
        try:
            value = func(*args)
            self.results[name] = value
        except Exception as exc:  # a failed phase is a finding: record it and go on to the next
            import traceback

            self.log.write(traceback.format_exc())
            self.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            value = None
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the trainer subprocesses need the memory this process cached
        self.results.setdefault("phase_seconds", {})[name] = round(time.perf_counter() - start, 1)
        self.save()
        return value

    def subprocess(self, name: str, cmd: list[str], timeout: float) -> int:
        self.log.write(f"--- {name}: {' '.join(cmd)}\n")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(self.port)}
        self.port += 1
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log.write(f"--- {name}: timed out after {timeout:.0f} s\n")
            return 124
        self.log.write(f"--- {name}: exit {proc.returncode}\n")
        return proc.returncode

    # -- phases -----------------------------------------------------------------------------

    def environment(self) -> dict[str, Any]:
        import torch

        info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                        multiprocessors=props.multi_processor_count,
                        capability=f"{props.major}.{props.minor}")
        try:
            import megatron.core

            info["megatron_core"] = megatron.core.__version__
        except ImportError as exc:
            info["megatron_core"] = f"missing: {exc}"
        return info

    def peak(self) -> dict[str, Any]:
        import torch

        size, dtype = (8192, torch.bfloat16) if not self.rehearsal else (1024, torch.float32)
        seconds = _time_op(lambda a, b: a @ b, [torch.randn(size, size, dtype=dtype, device=_device()) for _ in "ab"],
                           repeats=10)
        return {"size": size, "dtype": str(dtype).removeprefix("torch."),
                "tflops": round(2 * size**3 / seconds / 1e12, 1)}

    def attention(self) -> dict[str, Any]:
        """Forward+backward of one attention layer's core at the model's shapes."""
        import torch
        import torch.nn.functional as F

        b, heads, groups, seq, d = (4, 16, 8, 2048, 128) if not self.rehearsal else (2, 4, 2, 128, 16)
        dtype = torch.bfloat16 if not self.rehearsal else torch.float32
        dev = _device()

        def inputs():
            q = torch.randn(b, heads, seq, d, dtype=dtype, device=dev, requires_grad=True)
            kv = [torch.randn(b, groups, seq, d, dtype=dtype, device=dev, requires_grad=True) for _ in "kv"]
            return [q, *kv]

        def sdpa_gqa(q, k, v):
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).sum().backward()

        def sdpa_repeat(q, k, v):
            rep = heads // groups
            F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                           is_causal=True).sum().backward()

        def local(q, k, v):  # what megatron-core's DotProductAttention does, unfused softmax
            rep = heads // groups
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            scores = (q @ k.transpose(-1, -2)) / d**0.5
            mask = torch.ones(seq, seq, dtype=torch.bool, device=dev).triu(1)
            probs = torch.softmax(scores.masked_fill(mask, -10000.0).float(), -1).to(dtype)
            (probs @ v).sum().backward()

        flops = 3 * 2 * 2 * b * heads * seq * seq * d  # forward+backward, full scores (MFU convention)
        out: dict[str, Any] = {"shape": [b, heads, groups, seq, d]}
        variants = {"sdpa_gqa_default": (sdpa_gqa, None), "sdpa_repeat_kv_default": (sdpa_repeat, None),
                    "local_unfused": (local, None)}
        try:
            from torch.nn.attention import SDPBackend

            for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
                if hasattr(SDPBackend, name):
                    variants[f"sdpa_gqa_{name.lower()}"] = (sdpa_gqa, getattr(SDPBackend, name))
                    variants[f"sdpa_repeat_kv_{name.lower()}"] = (sdpa_repeat, getattr(SDPBackend, name))
        except ImportError:
            pass
        for name, (fn, backend) in variants.items():
            try:
                seconds = _time_op(fn, inputs(), repeats=5, backend=backend)
                out[name] = {"ms": round(1e3 * seconds, 3), "tflops": round(flops / seconds / 1e12, 1)}
            except Exception as exc:  # a kernel that refuses these shapes is a finding too
                out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        return out

    def _pretrain_cmd(self, extra: list[str], metrics: Path) -> list[str]:
        b = self.bundle
        shape = REHEARSAL_SHAPE if self.rehearsal else GPU_SHAPE
        return [sys.executable, "-m", "megatron_prealign.pretrain", "--config", "examples/configs/gpt_1b.yaml",
                "--data-path", str(b / "data" / "sotu_text_document"), "--tokenizer-model", str(b / "tokenizer.model"),
                "--lexicon", str(b / "en_de.lex"), "--split", "99,1,0", "--eval-iters", "1", "--lr-warmup-iters", "2",
                "--align-steps", "0", "--num-workers", "2", "--metrics-log", str(metrics), *shape, *extra]

    def train(self, budget_end: float) -> dict[str, Any]:
        import torch  # noqa: F401  (the model config below needs the package importable)

        from megatron_prealign.config import parse_args
        from megatron_prealign.lexicon import build_tokenizer

        out: dict[str, Any] = {}
        arms = {k: v for k, v in TRAIN_ARMS.items() if not self.rehearsal or k in REHEARSAL_ARMS}
        for name, extra in arms.items():
            if time.time() > budget_end:
                out[name] = {"error": "skipped: time budget spent"}
                continue
            metrics = self.work / f"{name}.jsonl"
            if self.rehearsal and str(CODESWITCH_RATIO) in extra:
                # The rehearsal's few thousand tokens hold a few dozen dictionary words: switch
                # half of them so the code-switching path visibly runs.
                extra = [REHEARSAL_CODESWITCH_RATIO if flag == str(CODESWITCH_RATIO) else flag for flag in extra]
            cmd = self._pretrain_cmd(extra, metrics)
            start = time.perf_counter()
            rc = self.subprocess(name, cmd, timeout=max(30.0, budget_end - time.time()))
            arm: dict[str, Any] = {"rc": rc, "wall_s": round(time.perf_counter() - start, 1), "flags": extra}
            records = _records(metrics, "tokens_per_sec")
            if records:
                steady = records[1:] or records  # the first window holds compilation and warm-up
                arm["tokens_per_sec"] = round(statistics.median(r["tokens_per_sec"] for r in steady), 1)
                arm["data_wait_ms"] = round(statistics.median(r["data_wait_ms"] for r in steady), 3)
                # Over the whole run: a short window can hold few dictionary words.
                arm["switch_rate"] = round(statistics.mean(r["switch_rate"] for r in records), 4)
                arm["lm_loss_last"] = round(records[-1]["lm_loss"], 4)
                for key in ("mem_max_allocated_gib", "mem_max_reserved_gib", "peak_rss_gib"):
                    if key in records[-1]:
                        arm[key] = round(max(r[key] for r in records), 2)
            arm["planned_peak_gib"] = self._planned_peak(cmd)
            out[name] = arm
            self.results["train"] = out
            self.save()
        cfg, _ = parse_args(self._pretrain_cmd([], self.work / "unused.jsonl")[3:])
        vocab = build_tokenizer("SentencePieceTokenizer", str(self.bundle / "tokenizer.model")).vocab_size
        import dataclasses

        model = dataclasses.replace(cfg.model, vocab_size=vocab)
        out["model"] = {"parameters": model.num_parameters(), "flops_per_token": model.training_flops_per_token(),
                        "layers": model.num_layers, "hidden": model.hidden_size, "seq_length": model.seq_length,
                        "vocab": vocab, "micro_batch_size": cfg.training.micro_batch_size,
                        "global_batch_size": cfg.training.global_batch_size,
                        "precision": "bf16" if model.bf16 else "fp32"}
        return out

    def _planned_peak(self, cmd: list[str]) -> float | None:
        """The run planner's peak per rank for an arm's command (GPU: allocated bytes; the
        rehearsal: the process's resident size, runtime included)."""
        from megatron_prealign.config import parse_flat
        from megatron_prealign.plan import plan_from_flat

        try:
            plan = plan_from_flat(parse_flat(cmd[3:])[0], device="cpu" if self.rehearsal else "cuda")
        except (ValueError, SystemExit) as exc:
            self.log.write(f"--- plan failed: {exc}\n")
            return None
        return round(max(stage.peak for stage in plan.stages) / 2**30, 2)

    def prepass(self) -> dict[str, Any]:
        steps = 6 if self.rehearsal else 30
        metrics = self.work / "prepass.jsonl"
        cmd = self._pretrain_cmd(["--attention-backend", "sdpa"], metrics)
        cmd[cmd.index("--align-steps") + 1] = str(steps)
        cmd += ["--align-only", "--align-log-interval", "10", "--align-eval-max-words", "256"]
        rc = self.subprocess("prepass", cmd, timeout=300)
        records = _records(metrics, "align_step_seconds")
        out: dict[str, Any] = {"rc": rc, "steps": len(records)}
        if records:
            steady = [r["align_step_seconds"] for r in records[len(records) // 3:]]
            out["step_seconds"] = round(statistics.median(steady), 4)
            out["steps_per_sec"] = round(1 / out["step_seconds"], 2)
            out["contrastive_first_last"] = [round(records[0]["align_contrastive"], 4),
                                             round(records[-1]["align_contrastive"], 4)]
        return out

    def tests(self, seconds: float) -> dict[str, Any]:
        if seconds < 30:
            return {"error": "skipped: time budget spent"}
        cmd = [sys.executable, "-m", "pytest", "-q", "--maxfail", "40", "tests/unit", "-p", "no:cacheprovider",
               "-o", "addopts=", "--timeout", "120"]
        try:
            import xdist  # noqa: F401

            cmd += ["-n", "8"]
        except ImportError:
            pass
        start = time.perf_counter()
        self.log.write(f"--- tests: {' '.join(cmd)}\n")
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds)
            summary = (proc.stdout.strip().splitlines() or [""])[-1]
            (self.out / "tests.txt").write_text(proc.stdout[-200_000:] + proc.stderr[-20_000:])
            return {"rc": proc.returncode, "summary": summary, "seconds": round(time.perf_counter() - start, 1)}
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            (self.out / "tests.txt").write_text(text[-200_000:])
            return {"error": f"timed out after {seconds:.0f} s"}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _time_op(fn, args, repeats: int, backend=None) -> float:
    """Median seconds of fn(*args) after warm-up; CUDA events on GPU, wall clock on CPU."""
    import contextlib

    import torch

    context = contextlib.nullcontext
    if backend is not None:
        from torch.nn.attention import sdpa_kernel

        context = lambda: sdpa_kernel([backend])  # noqa: E731
    with context():
        for _ in range(3):
            fn(*args)
        times = []
        for _ in range(repeats):
            if torch.cuda.is_available():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(*args)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                fn(*args)
                times.append(time.perf_counter() - t)
    return statistics.median(times)


def _records(path: Path, key: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip()) if key in r]


# ------------------------------------------------------------------------------------ report

def derive(results: dict[str, Any]) -> dict[str, Any]:
    """MFU per arm, the code-switch and recompute ratios, the pre-pass share."""
    train, peak = results.get("train") or {}, (results.get("peak") or {}).get("tflops")
    model = train.get("model") or {}
    flops = model.get("flops_per_token")
    out: dict[str, Any] = {}
    if not flops:
        return out
    for name, arm in train.items():
        if name == "model" or not isinstance(arm, dict) or "tokens_per_sec" not in arm:
            continue
        achieved = arm["tokens_per_sec"] * flops / 1e12
        out[name] = {"model_tflops": round(achieved, 1),
                     "mfu_vs_measured_peak": round(100 * achieved / peak, 1) if peak else None,
                     "mfu_vs_989_spec": round(100 * achieved / SPEC_BF16_TFLOPS, 1)}

    def median_of(*names):
        values = [train[n]["tokens_per_sec"] for n in names if "tokens_per_sec" in train.get(n, {})]
        return statistics.median(values) if values else None

    off, on = median_of("sdpa_cs_off", "sdpa_cs_off_2"), median_of("sdpa_cs_on", "sdpa_cs_on_2")
    if off and on:
        out["codeswitch_slowdown_pct"] = round(100 * (off / on - 1), 2)
    local = median_of("local_cs_off")
    if off and local:
        out["sdpa_speedup_over_local"] = round(off / local, 3)
    prepass = results.get("prepass") or {}
    if off and prepass.get("step_seconds") and model.get("parameters"):
        pretrain_s = TOKENS_PER_PARAMETER * model["parameters"] / off
        align_s = ALIGN_STEPS_OF_A_RUN * prepass["step_seconds"]
        out["prepass_share_pct"] = round(100 * align_s / (align_s + pretrain_s), 3)
        out["prepass_hours_5000_steps"] = round(align_s / 3600, 3)
        out["pretrain_hours_20_tokens_per_param"] = round(pretrain_s / 3600, 1)
    return out


def render_report(results: dict[str, Any]) -> str:
    derived = derive(results)
    env = results.get("environment") or {}
    lines = [f"# GPU check {'(CPU rehearsal) ' if results.get('rehearsal') else ''}{results.get('started', '')}", "",
             f"- machine: {env.get('device', 'CPU')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"Python {env.get('python')}, megatron-core {env.get('megatron_core')}"]
    peak = results.get("peak") or {}
    if "tflops" in peak:
        lines.append(f"- measured matmul peak ({peak['dtype']}, {peak['size']}^3): {peak['tflops']} TFLOP/s")
    model = (results.get("train") or {}).get("model") or {}
    if model:
        lines.append(f"- model: {model['parameters'] / 1e9:.3f}B parameters, {model['layers']} layers x "
                     f"{model['hidden']}, seq {model['seq_length']}, vocab {model['vocab']}, {model['precision']}, "
                     f"micro-batch {model['micro_batch_size']}, global batch {model['global_batch_size']}; "
                     f"{model['flops_per_token'] / 1e9:.2f} GFLOP per token")
    mem = "peak RSS GiB" if results.get("rehearsal") else "peak alloc GiB"
    lines += ["", f"| arm | tokens/s | MFU (measured peak) | MFU (989 spec) | {mem} | planned GiB | data wait ms | note |",
              "|---|---|---|---|---|---|---|---|"]
    for name, arm in (results.get("train") or {}).items():
        if name == "model":
            continue
        d = derived.get(name, {})
        mem = arm.get("mem_max_allocated_gib", arm.get("peak_rss_gib", ""))
        note = arm.get("error") or ("" if arm.get("rc") == 0 else f"exit {arm.get('rc')}")
        lines.append(f"| {name} | {arm.get('tokens_per_sec', '')} | {d.get('mfu_vs_measured_peak', '')} | "
                     f"{d.get('mfu_vs_989_spec', '')} | {mem} | {arm.get('planned_peak_gib', '')} | "
                     f"{arm.get('data_wait_ms', '')} | {note} |")
    lines.append("")
    for key, label in (("codeswitch_slowdown_pct", "code-switching on vs off (%, target <= 2)"),
                       ("sdpa_speedup_over_local", "SDPA speed-up over local attention (x)"),
                       ("prepass_share_pct", "pre-pass share of a 20-tokens-per-parameter run (%, target <= 2)")):
        if key in derived:
            lines.append(f"- {label}: {derived[key]}")
    prepass = results.get("prepass") or {}
    if "steps_per_sec" in prepass:
        lines.append(f"- pre-pass: {prepass['steps_per_sec']} steps/s ({prepass['steps']} steps)")
    attention = results.get("attention") or {}
    if attention:
        lines += ["", "| attention core (fwd+bwd) | ms | TFLOP/s |", "|---|---|---|"]
        for name, value in attention.items():
            if isinstance(value, dict):
                lines.append(f"| {name} | {value.get('ms', value.get('error', ''))} | {value.get('tflops', '')} |")
    tests = results.get("tests") or {}
    if tests:
        lines += ["", f"- tests/unit: {tests.get('summary', tests.get('error'))}"]
    errors = [f"{k}: {v['error']}" for k, v in results.items() if isinstance(v, dict) and "error" in v]
    if errors:
        lines += ["", "Errors:"] + [f"- {e}" for e in errors]
    lines += ["", f"Phase seconds: {json.dumps(results.get('phase_seconds', {}))}", ""]
    return "\n".join(lines)


def measure(bundle: Path, out: Path, rehearsal: bool, budget_seconds: float, build: bool,
            skip_tests: bool = False) -> int:
    import torch

    if not rehearsal and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on the GPU machine, or pass --cpu-rehearsal")
    check = Check(bundle, out, rehearsal)
    deadline = time.time() + budget_seconds
    builder = None
    if build:  # the C++ extension compiles on CPU cores while the GPU phases below run
        builder = subprocess.Popen([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=REPO,
                                   stdout=check.log, stderr=subprocess.STDOUT)
    check.phase("environment", check.environment)
    check.phase("peak", check.peak)
    check.phase("attention", check.attention)
    if builder is not None:
        rc = builder.wait()
        check.results["build"] = {"rc": rc}
        if rc:
            check.save()
            return 1
    check.phase("prepass", check.prepass)
    check.phase("train", check.train, deadline - 90)
    if not skip_tests:
        check.phase("tests", check.tests, deadline - time.time() - 10)
    check.results["derived"] = derive(check.results)
    check.save()
    shutil.rmtree(check.work, ignore_errors=True)
    print(render_report(check.results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="fill the bundle (needs PyPI access)")
    p.add_argument("--bundle", type=Path, default=REPO / ".gpu_bundle")
    p.add_argument("--dictionary", help="dictionary for the lexicon (default: Debian trans-de-en if installed)")
    p.add_argument("--tokenizer-model", help="SentencePiece model to use instead of downloading mistral-common's")
    p.add_argument("--corpus", help="corpus (jsonl or text) instead of the shipped State-of-the-Union corpus")
    p.add_argument("--no-wheels", action="store_true", help="download no wheels (a bundle for the CPU rehearsal)")
    m = sub.add_parser("measure", help="run the phases (on the GPU machine; --cpu-rehearsal here)")
    m.add_argument("--bundle", type=Path, default=REPO / ".gpu_bundle")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--cpu-rehearsal", action="store_true", help="tiny fp32 model on the CPU, same code paths")
    m.add_argument("--budget-seconds", type=float, default=420, help="stop starting new arms after this")
    m.add_argument("--build", action="store_true", help="compile megatron_prealign._C in place first")
    m.add_argument("--skip-tests", action="store_true", help="skip the tests phase (e.g. inside pytest)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.bundle, args.dictionary, args.tokenizer_model, args.corpus, wheels=not args.no_wheels)
        return 0
    return measure(args.bundle, args.out, args.cpu_rehearsal, args.budget_seconds, args.build, args.skip_tests)


if __name__ == "__main__":
    sys.exit(main())
