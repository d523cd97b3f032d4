"""RunConfig: composes the per-component configs; CLI and YAML share one flat key space.

Each component owns its config dataclass, in a module that imports no torch (ModelConfig in
model/config.py, ParallelConfig in parallel.py, OptimConfig in optim.py, TrainingConfig and
DataConfig in training/config.py, AlignConfig in align/config.py, DeepSpeedConfig in
deepspeed/config.py) and validates its own fields. This module
only derives the command line from those dataclasses (Megatron-LM flag names: field
`num_layers` -> `--num-layers`; AlignConfig fields get an `align-` prefix, DeepSpeedConfig's
`deepspeed-`), loads `--config`
YAML files strictly (unknown keys are errors, values must have their field's type; CLI flags
override them), and runs the few cross-component checks in `RunConfig.validate()`.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from megatron_prealign.align.config import AlignConfig
from megatron_prealign.deepspeed.config import DeepSpeedConfig, check_deepspeed_json, read_deepspeed_json
from megatron_prealign.model.config import ModelConfig
from megatron_prealign.optim import OptimConfig
from megatron_prealign.parallel import ParallelConfig
from megatron_prealign.training.config import DataConfig, TrainingConfig

# section name -> (dataclass, prefix of its keys on the command line / in YAML)
SECTIONS: dict[str, tuple[type, str]] = {
    "model": (ModelConfig, ""),
    "parallel": (ParallelConfig, ""),
    "optim": (OptimConfig, ""),
    "data": (DataConfig, ""),
    "training": (TrainingConfig, ""),
    "align": (AlignConfig, "align_"),
    "deepspeed": (DeepSpeedConfig, "deepspeed_"),
}

# Run-level defaults that differ from a component's own. The pre-pass runs only when asked for
# with --align-steps (AlignConfig's own default, the authors' 5,000 steps, describes the method),
# so `--lexicon` alone means code-switching without a pre-pass.
RUN_DEFAULTS: dict[str, Any] = {"align_steps": 0}

# Megatron-LM spellings accepted besides the generated ones: flag -> (key, value it sets).
ALIASES: dict[str, tuple[str, Any]] = {
    "--disable-bias-linear": ("add_bias_linear", False),
}

# Megatron-LM flags that ask for what is always so here: accepted, and nothing to do.
ACCEPTED_NO_OPS: dict[str, str] = {
    "--use-mcore-models": "the model is always megatron-core's GPTModel",
    "--group-query-attention": "grouped-query attention is on whenever --num-query-groups is below "
                               "--num-attention-heads",
    "--no-masked-softmax-fusion": "fused softmax is used only when its kernels are importable",
    "--no-gradient-accumulation-fusion": "gradient-accumulation fusion is used only when its kernel is importable",
}

# Megatron-LM flags this project does not implement, refused by name with the reason (and listed
# in docs/DESIGN.md), never with argparse's "unrecognized arguments".
UNSUPPORTED: dict[str, str] = {
    "--num-experts": "mixture-of-experts layers are not part of the PreAlign model provider (dense GPT only)",
    "--expert-model-parallel-size": "mixture-of-experts layers are not part of the PreAlign model provider",
    "--moe-router-topk": "mixture-of-experts layers are not part of the PreAlign model provider",
    "--fp8-format": "FP8 training needs TransformerEngine recipes, which are not wired in (bf16/fp16 only)",
    "--fp8": "FP8 training needs TransformerEngine recipes, which are not wired in (bf16/fp16 only)",
    "--tp-comm-overlap": "TP communication overlap needs TransformerEngine's userbuffers, which are not wired in",
    "--use-torch-fsdp2": "FSDP is not a backend here: use --use-distributed-optimizer, or --deepspeed-config "
                         "with ZeRO-3",
    "--use-megatron-fsdp": "FSDP is not a backend here: use --use-distributed-optimizer, or --deepspeed-config "
                           "with ZeRO-3",
    "--decoder-first-pipeline-num-layers": "uneven pipeline stages are not supported: --num-layers must divide "
                                           "evenly over --pipeline-model-parallel-size",
    "--decoder-last-pipeline-num-layers": "uneven pipeline stages are not supported: --num-layers must divide "
                                          "evenly over --pipeline-model-parallel-size",
    "--mock-data": "training needs a preprocessed dataset (tools/preprocess_data.py; a tiny one takes seconds)",
    "--vocab-file": "GPT-2 style vocab/merges files are read through their tokenizer.json: "
                    "--tokenizer-type HuggingFaceTokenizer --tokenizer-model DIR",
    "--merge-file": "GPT-2 style vocab/merges files are read through their tokenizer.json: "
                    "--tokenizer-type HuggingFaceTokenizer --tokenizer-model DIR",
    "--use-flash-attn": "use --attention-backend sdpa (FlashAttention kernels through torch) or te",
}


class _Refused(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not supported: {UNSUPPORTED[option_string]}")


def _key(prefix: str, name: str) -> str:
    return name if name.startswith(prefix) else prefix + name


@dataclass(frozen=True)
class RunConfig:
    """The whole run: one frozen, nested config per component."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    align: AlignConfig = field(default_factory=lambda: AlignConfig(steps=RUN_DEFAULTS["align_steps"]))
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "RunConfig":
        """A validated config from flat keys (the YAML/CLI key space; unknown keys are errors)."""
        return from_flat(values)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def flat(self) -> dict[str, Any]:
        """The flat key -> value view (the YAML/CLI key space)."""
        out = {}
        for name, (cls, prefix) in SECTIONS.items():
            for f in fields(cls):
                out[_key(prefix, f.name)] = getattr(getattr(self, name), f.name)
        return out

    def validate(self) -> "RunConfig":
        """Checks that involve more than one component; each raises ValueError naming the flags."""
        _check_heads_divisible_by_tp(self)
        _check_layers_divisible_by_pp(self)
        _check_lexicon_for_align(self)
        _check_deepspeed_layout(self)
        _check_virtual_pipeline(self)
        _check_schedule_units(self)
        return self


def _check_schedule_units(cfg: RunConfig) -> None:
    optim, training = cfg.optim, cfg.training
    if training.train_samples is not None and (optim.lr_warmup_iters or optim.lr_decay_iters):
        raise ValueError("with --train-samples give the learning-rate schedule in samples: --lr-warmup-samples and "
                         "--lr-decay-samples instead of --lr-warmup-iters/--lr-decay-iters")
    if training.train_samples is None and (optim.lr_warmup_samples or optim.lr_decay_samples):
        raise ValueError("--lr-warmup-samples/--lr-decay-samples go with --train-samples; with --train-iters use "
                         "--lr-warmup-iters/--lr-decay-iters")
    if training.async_save and cfg.deepspeed.config:
        raise ValueError("--async-save is not supported with --deepspeed-config (DeepSpeed writes its own "
                         "checkpoint files synchronously): drop --async-save")
    if training.async_save and not training.save:
        raise ValueError("--async-save needs --save (the checkpoint root to write)")
    if training.rampup_batch_size and cfg.deepspeed.config:
        raise ValueError("--rampup-batch-size is not supported with --deepspeed-config (its engine fixes the "
                         "gradient-accumulation steps)")


def _check_virtual_pipeline(cfg: RunConfig) -> None:
    per_chunk = cfg.parallel.num_layers_per_virtual_pipeline_stage
    if per_chunk is None:
        return
    pp = cfg.parallel.pipeline_model_parallel_size
    if cfg.model.num_layers % (pp * per_chunk):
        raise ValueError(f"--num-layers {cfg.model.num_layers} must be divisible by --pipeline-model-parallel-size "
                         f"{pp} x --num-layers-per-virtual-pipeline-stage {per_chunk}")
    if cfg.model.num_layers // (pp * per_chunk) < 2:
        raise ValueError(f"--num-layers-per-virtual-pipeline-stage {per_chunk} gives one chunk per pipeline rank: "
                         f"drop it (plain 1F1B) or lower it below --num-layers / --pipeline-model-parallel-size")
    if (cfg.align.steps or cfg.align.token_budget) and cfg.align.num_microbatches < pp:
        raise ValueError(f"the interleaved schedule needs --align-num-microbatches >= --pipeline-model-parallel-size "
                         f"{pp}, got {cfg.align.num_microbatches}")


def _check_heads_divisible_by_tp(cfg: RunConfig) -> None:
    tp = cfg.parallel.tensor_model_parallel_size
    groups = cfg.model.num_query_groups or cfg.model.num_attention_heads
    if cfg.model.num_attention_heads % tp or groups % tp:
        raise ValueError(
            f"--num-attention-heads {cfg.model.num_attention_heads} and --num-query-groups {groups} "
            f"must be divisible by --tensor-model-parallel-size {tp}"
        )


def _check_layers_divisible_by_pp(cfg: RunConfig) -> None:
    pp = cfg.parallel.pipeline_model_parallel_size
    if cfg.model.num_layers % pp:
        raise ValueError(
            f"--num-layers {cfg.model.num_layers} must be divisible by --pipeline-model-parallel-size {pp}"
        )


def _check_lexicon_for_align(cfg: RunConfig) -> None:
    if cfg.align.token_budget is not None:
        if cfg.align.steps:
            raise ValueError("--align-token-budget and --align-steps are alternatives: size the pre-pass one way")
        if not cfg.data.lexicon:
            raise ValueError("--align-token-budget needs --lexicon (the dictionary to align)")
    if cfg.align.steps > 0 and not cfg.data.lexicon:
        raise ValueError("--align-steps > 0 needs --lexicon (the dictionary to align)")
    if cfg.training.align_only and cfg.align.steps == 0 and cfg.align.token_budget is None:
        raise ValueError("--align-only needs --align-steps > 0 or --align-token-budget")


def _check_deepspeed_layout(cfg: RunConfig) -> None:
    """The DeepSpeed backend is ZeRO data parallelism over tensor-parallel ranks; the other
    parallelisms are megatron-core's and stay on the default backend."""
    if not cfg.deepspeed.config:
        return
    parallel = cfg.parallel
    refused = [(parallel.pipeline_model_parallel_size > 1, "--pipeline-model-parallel-size > 1",
                "DeepSpeed's pipeline engine does not support ZeRO-2/3"),
               (parallel.sequence_parallel, "--sequence-parallel", "megatron-core finalizes its gradients"),
               (getattr(parallel, "context_parallel_size", 1) > 1, "--context-parallel-size > 1",
                "megatron-core finalizes its gradients"),
               (cfg.optim.use_distributed_optimizer, "--use-distributed-optimizer",
                "ZeRO already shards the optimizer state"),
               (cfg.optim.optimizer != "adam", f"--optimizer {cfg.optim.optimizer}",
                "the DeepSpeed backend steps torch's AdamW")]
    for bad, flag, why in refused:
        if bad:
            raise ValueError(f"--deepspeed-config does not support {flag} ({why}): drop {flag}, or train on "
                             f"the default megatron-core backend (drop --deepspeed-config)")
    path = cfg.deepspeed.config
    check_deepspeed_json(read_deepspeed_json(path), path, bf16=cfg.model.bf16, fp16=cfg.model.fp16)


def check_runtime_support(cfg: RunConfig) -> None:
    """Checks against this machine's software and hardware (not part of validate(): a --dry-run
    on a login node without GPUs must still accept a GPU config)."""
    import torch

    if (cfg.model.bf16 or cfg.model.fp16) and not torch.cuda.is_available():
        raise ValueError("--bf16/--fp16 need a CUDA device; CPU runs are fp32 (drop the flag)")
    if cfg.optim.use_distributed_optimizer and (cfg.training.save or cfg.training.load):
        from megatron.core.optimizer import distrib_optimizer

        if not distrib_optimizer.HAVE_APEX_OR_TE:
            raise ValueError(
                "--use-distributed-optimizer with --save/--load needs TransformerEngine or NVIDIA Apex: "
                "megatron-core 0.16 cannot checkpoint the distributed optimizer's torch-Adam fallback. "
                "Install TransformerEngine (GPU clusters) or drop --use-distributed-optimizer here."
            )


# -- command line ------------------------------------------------------------------------------

def _scalar_type(annotation) -> tuple[Any, bool]:
    """(element type, is_sequence) of a field annotation such as `int | None` or `tuple[str, ...]`."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return typing.get_args(hint)[0], True
    return hint, False


def _help_texts(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal after each field) as --help text."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    out = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(getattr(nxt, "value", None), ast.Constant) and isinstance(nxt.value.value, str):
            # argparse %-formats help strings.
            out[node.target.id] = " ".join(nxt.value.value.split()).replace("%", "%%")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per config field, `--config FILE.yaml`, and Megatron aliases."""
    parser = argparse.ArgumentParser(
        prog="python -m megatron_prealign.pretrain",
        description="PreAlign pretraining on megatron-core (alignment pre-pass + input-only code-switching).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML file(s) with the same keys as the flags (underscores); later files and "
                             "command-line flags override earlier values")
    parser.add_argument("--dry-run", action="store_true", default=False,
                        help="resolve and validate the config, print it, and exit")
    parser.add_argument("--plan", action="store_true", default=False,
                        help="with --dry-run: print the run plan (parameters, memory per rank, FLOPs, the "
                             "pre-pass's share; see tools/plan_run.py) for WORLD_SIZE processes instead")
    # The `deepspeed` launcher passes each process its local rank as an argument; the trainer
    # reads it from LOCAL_RANK, which that launcher sets too.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    hints = {}
    for name, (cls, prefix) in SECTIONS.items():
        group = parser.add_argument_group(name)
        type_hints = typing.get_type_hints(cls)
        helps = _help_texts(cls)
        for f in fields(cls):
            key = _key(prefix, f.name)
            flag = "--" + key.replace("_", "-")
            elem, is_seq = _scalar_type(type_hints[f.name])
            hints[key] = (elem, is_seq)
            kwargs: dict[str, Any] = {"dest": key, "help": helps.get(f.name, "")}
            if elem is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            elif is_seq:
                group.add_argument(flag, nargs="+", type=elem, **kwargs)
            else:
                group.add_argument(flag, type=elem, **kwargs)
    for flag, (key, value) in ALIASES.items():
        parser.add_argument(flag, dest=key, action="store_const", const=value,
                            help=f"Megatron-LM spelling of --{key.replace('_', '-')}={value}")
    compat = parser.add_argument_group("Megatron-LM flags accepted with nothing to do, and refused ones")
    for flag, why in ACCEPTED_NO_OPS.items():
        compat.add_argument(flag, dest="accepted_no_op", action="store_true", help=f"accepted: {why}")
    for flag in UNSUPPORTED:
        compat.add_argument(flag, nargs="*", action=_Refused, help=argparse.SUPPRESS)
    return parser


def cli_flags() -> list[str]:
    """Every flag the CLI accepts (pinned by a golden-file test)."""
    return sorted(opt for action in build_parser()._actions for opt in action.option_strings
                  if opt.startswith("--"))


def _load_yaml(path: str, known: set[str]) -> dict[str, Any]:
    """The flat keys of one --config file, each value checked against its field's type."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the config file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of flag names to values")
    types_ = _field_types()
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{path}: unknown key {raw_key!r}{hint}")
        flag = "--" + key.replace("_", "-")
        if flag in UNSUPPORTED:
            raise ValueError(f"{path}: {raw_key} is not supported: {UNSUPPORTED[flag]}")
        try:
            out[key] = _typed(value, types_[key])
        except _WrongType as exc:
            kind = "" if exc.value is None else f" ({_kind(exc.value)}{exc.hint})"
            raise ValueError(f"{path}: {raw_key}{exc.where} must be {exc.expected}, got {_shown(exc.value)}"
                             f"{kind}") from None
    return out


@functools.lru_cache(maxsize=1)
def _field_types() -> dict[str, Any]:
    """Flat key -> the annotation of its dataclass field."""
    out = {}
    for cls, prefix in SECTIONS.values():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            out[_key(prefix, f.name)] = hints[f.name]
    return out


class _WrongType(Exception):
    def __init__(self, value: Any, expected: str, where: str = "", hint: str = ""):
        super().__init__(expected)
        self.value, self.expected, self.where, self.hint = value, expected, where, hint


# PyYAML implements YAML 1.1, which reads `3e-4` and `1e5` (no dot, or no exponent sign) as
# strings; YAML 1.2 and every other reader take them for the numbers they look like, and so do we.
_YAML12_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_EXPECTED_ITEMS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_FLOAT_MAX = float.fromhex("0x1.fffffffffffffp+1023")


def _typed(value: Any, annotation: Any) -> Any:
    """`value` as read from YAML, converted to the field type `annotation` exactly where that
    loses nothing; otherwise `_WrongType`."""
    elem, is_seq = _scalar_type(annotation)
    optional = type(None) in typing.get_args(annotation)
    if value is None:
        if optional:
            return None
        raise _WrongType(value, _expected(elem, is_seq))
    if not is_seq:
        return _typed_scalar(value, elem, optional=optional)
    # One value stands for a one-element list, as a flag given one argument does.
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_typed_scalar(item, elem, in_list=True))
        except _WrongType as exc:
            where = f"[{i}]" if isinstance(value, list) else ""
            raise _WrongType(item, exc.expected, where, exc.hint) from None
    return tuple(out)


def _typed_scalar(value: Any, kind: Any, *, in_list: bool = False, optional: bool = False) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(value, str) and kind in (int, float) and _YAML12_NUMBER.fullmatch(value) \
            and isinstance(yaml.safe_load(value), str):
        value, number = float(value), True
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and (isinstance(value, int) and number or isinstance(value, float) and value.is_integer()):
        return int(value)
    if kind is float and number and (isinstance(value, float) or abs(value) <= _FLOAT_MAX):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    # An integer is the same text on the command line; blend weights in a --data-path list are
    # written as numbers.
    if kind is str and number and (isinstance(value, int) or in_list):
        return str(value)
    if kind not in _EXPECTED:
        return value
    hint = ""
    if isinstance(value, str) and kind is bool and isinstance(yaml.safe_load(value), bool):
        hint = "; write true or false without quotes"
    elif isinstance(value, str) and kind in (int, float) and isinstance(yaml.safe_load(value), (int, float)):
        hint = "; write it without quotes"
    elif isinstance(value, bool) and kind is str:
        hint = "; YAML reads unquoted yes/no/on/off as booleans, so quote it"
    expected = _EXPECTED[kind] + (" or null" if optional else "")
    raise _WrongType(value, expected, hint=hint)


def _expected(elem: Any, is_seq: bool) -> str:
    if is_seq:
        return f"a list of {_EXPECTED_ITEMS.get(elem, 'values')}"
    return _EXPECTED.get(elem, getattr(elem, "__name__", str(elem)))


def _kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
                       (list, "a list"), (dict, "a mapping")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _shown(value: Any) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def from_flat(values: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from flat keys (unknown keys are errors)."""
    if values.get("train_samples") is not None and values.get("train_iters") is not None:
        raise ValueError("--train-iters and --train-samples are mutually exclusive: size the run in steps or in samples")
    values = {**RUN_DEFAULTS, **values}
    if values.get("align_seed") is None:
        # The pre-pass's held-out split and pair sampling follow --seed unless --align-seed is given.
        values["align_seed"] = values.get("seed", TrainingConfig.seed)
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    owners = {}
    for name, (cls, prefix) in SECTIONS.items():
        for f in fields(cls):
            owners[_key(prefix, f.name)] = (name, f.name)
    for key, value in values.items():
        if key not in owners:
            raise ValueError(f"unknown config key {key!r}")
        section, field_name = owners[key]
        if isinstance(value, list):
            value = tuple(value)
        sections[section][field_name] = value
    return RunConfig(**{name: SECTIONS[name][0](**kw) for name, kw in sections.items()}).validate()


_NOT_CONFIG = ("help", "config", "dry_run", "plan", "local_rank", "accepted_no_op")


def parse_flat(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """The flat keys the command line sets (YAML files in order, then flags), not yet built
    into a RunConfig (see `from_flat`). Returns (values, raw namespace)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    known = {a.dest for a in parser._actions if a.dest not in _NOT_CONFIG}
    values: dict[str, Any] = {}
    try:
        for path in args.config:
            values.update(_load_yaml(path, known))
    except ValueError as exc:
        # A mistake inside a file, not in the command line: the usage text would only bury it.
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    values.update({k: v for k, v in vars(args).items() if k not in _NOT_CONFIG})
    return values, args


def parse_args(argv: Sequence[str] | None = None) -> tuple[RunConfig, argparse.Namespace]:
    """Defaults < YAML files (in order) < command-line flags. Returns (config, raw namespace)."""
    values, args = parse_flat(argv)
    try:
        return from_flat(values), args
    except (TypeError, ValueError) as exc:
        build_parser().error(str(exc))
        raise  # unreachable: parser.error exits
