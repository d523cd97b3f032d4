"""The DeepSpeed backend's config (`--deepspeed-config`) and the JSON file it names, read without
torch.

A DeepSpeed JSON file keeps what is DeepSpeed's to decide: the ZeRO stage, CPU offload, bucket
sizes, communication settings. What this toolkit's flags already own is filled in per stage and
must not be set otherwise in the file:

| DeepSpeed key | owner |
| --- | --- |
| `train_micro_batch_size_per_gpu`, `gradient_accumulation_steps`, `train_batch_size` | `--micro-batch-size`, `--global-batch-size` (pre-pass: its own pairs and microbatches) |
| `gradient_clipping` | `--clip-grad` (pre-pass: `--align-clip-grad`) |
| `bf16.enabled`, `fp16.enabled` | `--bf16`, `--fp16` |
| `optimizer` | `--lr`, `--adam-beta1/2`, `--adam-eps`, `--weight-decay` (always AdamW) |
| `scheduler` | `--lr-decay-style`, `--lr-warmup-iters`, `--lr-decay-iters`, `--min-lr` |

A batch or clipping key may stay in the file when it equals the value the flags give
pretraining, or be `"auto"` (the Hugging Face convention); anything else is an error naming the
key and its flag. Like DeepSpeed itself, the file is read with hjson when it is installed, so
`//` comments are allowed.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_STAGES = (1, 2, 3)

# DeepSpeed key -> the flags that own it (for error messages).
BATCH_KEYS = {
    "train_micro_batch_size_per_gpu": "--micro-batch-size",
    "gradient_accumulation_steps": "--global-batch-size / (--micro-batch-size x data-parallel size)",
    "train_batch_size": "--global-batch-size",
    "gradient_clipping": "--clip-grad",
}
OWNED_SECTIONS = {
    "optimizer": "--lr, --adam-beta1, --adam-beta2, --adam-eps and --weight-decay (AdamW)",
    "scheduler": "--lr-decay-style, --lr-warmup-iters, --lr-decay-iters and --min-lr",
}


@dataclass(frozen=True)
class DeepSpeedConfig:
    """The DeepSpeed backend (flag prefix `deepspeed-`)."""

    config: str | None = None
    """DeepSpeed JSON file (ZeRO stage 1-3, optional CPU offload, communication settings); selects
    the DeepSpeed backend instead of megatron-core's DDP and optimizer (--deepspeed-config).
    Batch sizes, optimizer, LR schedule, clipping and precision still come from this run's flags;
    see examples/deepspeed/."""


def read_deepspeed_json(path: str | Path) -> dict[str, Any]:
    """The file's settings as a dict, with the errors a user can act on."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--deepspeed-config {path}: no such file")
    text = path.read_text()
    try:
        import hjson  # DeepSpeed's own reader (a DeepSpeed dependency): JSON plus comments

        data = hjson.loads(text)
    except ImportError:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--deepspeed-config {path}: not valid JSON ({exc}); files with comments "
                             f"need DeepSpeed installed (pip install 'megatron_prealign[deepspeed]')") from None
    except Exception as exc:  # hjson's decode error type
        raise ValueError(f"--deepspeed-config {path}: cannot parse it ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--deepspeed-config {path}: expected a JSON object")
    return json.loads(json.dumps(data))  # plain dicts and lists (hjson returns ordered subclasses)


def check_deepspeed_json(data: dict[str, Any], path: str | Path, *, bf16: bool, fp16: bool) -> int:
    """Check what can be checked without the job's size; returns the ZeRO stage."""
    for key, flags in OWNED_SECTIONS.items():
        if key in data:
            raise ValueError(f"--deepspeed-config {path}: remove the \"{key}\" section; this run's {flags} "
                             f"set it (both backends use the same AdamW and LR schedule)")
    zero = data.get("zero_optimization")
    if not isinstance(zero, dict) or zero.get("stage") not in SUPPORTED_STAGES:
        raise ValueError(f"--deepspeed-config {path}: set \"zero_optimization\": {{\"stage\": 1, 2 or 3}}; "
                         f"without ZeRO use the default backend (drop --deepspeed-config)")
    for key, flag, wanted in (("bf16", "--bf16", bf16), ("fp16", "--fp16", fp16)):
        if key not in data:
            continue
        section = data[key]
        enabled = section.get("enabled", False) if isinstance(section, dict) else section
        if enabled != "auto" and bool(enabled) != wanted:
            raise ValueError(f"--deepspeed-config {path}: \"{key}\": {{\"enabled\": {json.dumps(enabled)}}} "
                             f"disagrees with {flag} {'on' if wanted else 'off'}; the model flag decides the "
                             f"precision (remove the key or match it)")
    return int(zero["stage"])


def offloads_optimizer(data: dict[str, Any]) -> bool:
    """Whether ZeRO keeps the optimizer state on the CPU (`offload_optimizer.device` cpu/nvme)."""
    offload = data.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in ("none", None)


def stage_deepspeed_json(data: dict[str, Any], path: str | Path, *, micro_batch_size: int, num_microbatches: int,
                         data_parallel_size: int, clip_grad: float, bf16: bool, fp16: bool,
                         check_against_flags: bool) -> dict[str, Any]:
    """The settings one stage's engine is built with: the file's, plus the batch, clipping and
    precision keys from the flags (`check_against_flags`: pretraining, whose values a file may
    repeat; the pre-pass has its own batch and clipping and overrides them)."""
    values = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": num_microbatches,
        "train_batch_size": micro_batch_size * num_microbatches * data_parallel_size,
        "gradient_clipping": float(clip_grad),
    }
    out = copy.deepcopy(data)
    for key, value in values.items():
        given = out.get(key, "auto")
        if check_against_flags and given != "auto" and given != value:
            raise ValueError(f"--deepspeed-config {path}: \"{key}\": {json.dumps(given)} disagrees with the run's "
                             f"{value} ({BATCH_KEYS[key]}); remove it, write \"auto\", or change the flag")
        out[key] = value
    for key, enabled in (("bf16", bf16), ("fp16", fp16)):
        section = out.get(key)
        out[key] = {**(section if isinstance(section, dict) else {}), "enabled": enabled}
    if offloads_optimizer(out):
        # The optimizer is torch's AdamW, which DeepSpeed refuses to run on offloaded state unless told.
        out.setdefault("zero_force_ds_cpu_optimizer", False)
    # Our metrics log reports the step; DeepSpeed's own progress lines would repeat it.
    out.setdefault("steps_per_print", 2**62)
    return out
