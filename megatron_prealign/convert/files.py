"""File-level conversion: Hugging Face model directories <-> megatron_prealign checkpoints.

* `convert_hf_to_mcore` reads config.json and the weights (safetensors or pytorch_model.bin,
  single file or sharded with an index), maps them with `hf.py`, and writes a weights-only
  `release` checkpoint from one process (world size 1): the dist checkpoint on disk is layout
  independent, only the vocabulary padding depends on the target TP degree. The model's
  tokenizer files and generation config (`HF_ASSET_FILES`) are copied to `<output>/hf_assets/`.
* `convert_mcore_to_hf` reads the model tensors of any checkpoint (release or iter_N, any TP/PP
  layout) with no process group, and writes `model.safetensors` and `config.json`, plus the
  carried tokenizer files and generation config.

Every output is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from megatron_prealign.convert.hf import (
    MC_EMBED,
    ConversionError,
    check_hf_compatible,
    check_target_layout,
    expected_mcore_shapes,
    hf_config_from_model_config,
    hf_dtype,
    hf_to_mcore_state,
    mcore_to_hf_state,
    model_config_from_hf,
)
from megatron_prealign.fileio import atomic_path
from megatron_prealign.log import get_logger
from megatron_prealign.model.config import ModelConfig

logger = get_logger(__name__)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
CONFIG_FILE = "config.json"
# Files of a HF model directory, besides config and weights, that travel with the model: the
# tokenizer in its fast and slow forms, the chat template, and the generation defaults.
HF_ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                  "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
                  "generation_config.json")
# Where a converted checkpoint root keeps them (next to latest_checkpointed_iteration.txt).
ASSETS_DIR = "hf_assets"


# ------------------------------------------------------------------------------------------
# Hugging Face directories
# ------------------------------------------------------------------------------------------

def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a Hugging Face model directory."""
    file = Path(path) / CONFIG_FILE
    if not Path(path).is_dir():
        raise FileNotFoundError(f"--hf-path {path} is not a directory")
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {path}: pass a Hugging Face model directory")
    return json.loads(file.read_text())


def hf_weight_files(path: str | os.PathLike) -> list[Path]:
    """The weight files of a HF model directory: safetensors preferred over pytorch_model.bin,
    single-file or sharded (with its index json)."""
    root = Path(path)
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (BIN_FILE, BIN_INDEX)):
        if (root / single).is_file():
            return [root / single]
        if (root / index).is_file():
            weight_map = json.loads((root / index).read_text()).get("weight_map")
            if not weight_map:
                raise ConversionError(f"{root / index} has no `weight_map`")
            files = [root / name for name in sorted(set(weight_map.values()))]
            absent = [str(f) for f in files if not f.is_file()]
            if absent:
                raise FileNotFoundError(f"{index} lists shard(s) that do not exist: {', '.join(absent)}")
            return files
    raise FileNotFoundError(
        f"no weights in {root}: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, {BIN_FILE} or {BIN_INDEX}")


def read_hf_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a HF model directory, by name (CPU)."""
    state: dict[str, torch.Tensor] = {}
    for file in hf_weight_files(path):
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            part = load_file(str(file), device="cpu")
        else:
            part = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        duplicate = state.keys() & part.keys()
        if duplicate:
            raise ConversionError(f"tensor {sorted(duplicate)[0]} appears in more than one shard ({file.name})")
        state.update(part)
    return state


def check_output_dir(output: str | os.PathLike, overwrite: bool) -> Path:
    """A conversion writes a whole directory: refuse an existing non-empty `--output` (its files
    would be mixed with ours, or a training root's tracker moved) unless `overwrite`."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        held = sorted(entry.name for entry in out.iterdir())
        raise ConversionError(f"--output {out} is not empty (it holds {', '.join(held[:4])}"
                              f"{' ...' if len(held) > 4 else ''}); choose an empty directory, or pass --overwrite to "
                              f"replace it as a whole")
    return out


def write_hf_checkpoint(output: str | os.PathLike, hf_state: Mapping[str, torch.Tensor], config) -> Path:
    """Write `model.safetensors` then `config.json` into the directory `output`."""
    from safetensors.torch import save_file

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    save_file(dict(hf_state), str(out / SAFETENSORS_FILE), metadata={"format": "pt"})
    _plain_file_mode(out / SAFETENSORS_FILE)  # safetensors creates its file owner-only
    (out / CONFIG_FILE).write_text(config.to_json_string(use_diff=True))
    return out


def _plain_file_mode(path: Path) -> None:
    """The mode `open()` gives a new file under this process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def tokenizer_files_of_run(state: Mapping[str, Any], destination: str | os.PathLike) -> list[str]:
    """Hugging Face tokenizer files for the tokenizer a training run recorded (`--tokenizer-type`,
    `--tokenizer-model`), written into `destination`, so `AutoTokenizer.from_pretrained` loads an
    export that had no `hf_assets/`. Returns the names written ([] when the recorded tokenizer is
    not readable here).

    A Hugging Face tokenizer's files are copied. A SentencePiece model becomes a `tokenizer.json`
    (unigram models: the model's pieces and scores, its whitespace and dummy-prefix rules; BPE
    models, Llama's kind: `tokenizer.model` read by transformers' `LlamaTokenizer`), encoding as
    the run did: no BOS or EOS added."""
    data = ((state.get("config") or {}).get("data") or {}) if isinstance(state.get("config"), Mapping) else {}
    kind, model = data.get("tokenizer_type"), data.get("tokenizer_model")
    if not kind or not model or not Path(model).exists():
        return []
    from megatron_prealign.lexicon import build_tokenizer, canonical_tokenizer_type

    trained = state.get("tokenizer_fingerprint")
    if trained and build_tokenizer(kind, model).fingerprint != trained:
        logger.warning("--tokenizer-model %s has changed since the run recorded it: not exported", model)
        return []
    dst = Path(destination)
    dst.mkdir(parents=True, exist_ok=True)
    if canonical_tokenizer_type(kind) == "HuggingFaceTokenizer":
        source = Path(model)
        if source.is_dir():
            return copy_hf_assets(source, dst)
        with atomic_path(dst / "tokenizer.json") as tmp:
            shutil.copyfile(source, tmp)
        _write_json(dst / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"})
        return ["tokenizer.json", "tokenizer_config.json"]
    return _sentencepiece_files(Path(model), dst)


def _write_json(path: Path, value: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _sentencepiece_files(model: Path, dst: Path) -> list[str]:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.read_bytes())
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    specials = {name: proto.pieces[index].piece for name, index in
                (("bos_token", trainer.bos_id), ("eos_token", trainer.eos_id), ("unk_token", trainer.unk_id),
                 ("pad_token", trainer.pad_id)) if 0 <= index < len(proto.pieces)}
    common = {**specials, "add_bos_token": False, "add_eos_token": False}
    if trainer.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        with atomic_path(dst / "tokenizer.model") as tmp:
            shutil.copyfile(model, tmp)
        _write_json(dst / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer", "legacy": True, **common})
        return ["tokenizer.model", "tokenizer_config.json"]
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=trainer.unk_id,
                                         byte_fallback=trainer.byte_fallback))
    if normalizer.remove_extra_whitespaces:
        tokenizer.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    scheme = "always" if normalizer.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
    with atomic_path(dst / "tokenizer.json") as tmp:
        tokenizer.save(str(tmp))
    _write_json(dst / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", **specials})
    return ["tokenizer.json", "tokenizer_config.json"]


def copy_hf_assets(source: str | os.PathLike, destination: str | os.PathLike,
                   names: tuple[str, ...] = HF_ASSET_FILES) -> list[str]:
    """Copy the files `names` that exist in `source` into the directory `destination`, each
    atomically. Returns the names copied."""
    src, dst = Path(source), Path(destination)
    copied = [name for name in names if (src / name).is_file()]
    dst.mkdir(parents=True, exist_ok=True)
    for name in copied:
        with atomic_path(dst / name) as tmp:
            shutil.copyfile(src / name, tmp)
    return copied


def write_assets_dir(root: str | os.PathLike, files: Mapping[str, Path]) -> Path:
    """Write `<root>/hf_assets/` (name -> source file) as one atomic directory."""
    final = Path(root) / ASSETS_DIR
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        for name, path in files.items():
            shutil.copyfile(path, tmp / name)
    return final


def find_hf_assets(ckpt: Path, state: Mapping[str, Any]) -> Path | None:
    """The tokenizer/generation files a checkpoint carries: `hf_assets/` in its own root, else
    the one recorded at conversion (training checkpoints carry the converted model's `source`)."""
    source = state.get("source") if isinstance(state.get("source"), Mapping) else {}
    for candidate in (ckpt.parent / ASSETS_DIR, source.get("assets_dir")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def check_assets_tokenizer(assets: Path, state: Mapping[str, Any]) -> None:
    """Refuse to export a tokenizer other than the one a training run recorded (by fingerprint)."""
    trained = state.get("tokenizer_fingerprint")
    data = ((state.get("config") or {}).get("data") or {}) if isinstance(state.get("config"), Mapping) else {}
    kind = data.get("tokenizer_type")
    if not trained or not kind:
        return
    from megatron_prealign.lexicon import build_tokenizer

    model = assets / "tokenizer.model" if kind == "SentencePieceTokenizer" else assets
    try:
        fingerprint = build_tokenizer(kind, model).fingerprint
    except (FileNotFoundError, ValueError) as exc:
        raise ConversionError(f"the tokenizer files in {assets} do not load as the run's {kind} ({exc}); "
                              f"pass the run's tokenizer directory with --hf-assets") from None
    if fingerprint != trained:
        raise ConversionError(
            f"the tokenizer in {assets} is not the one the checkpoint was trained with (fingerprint "
            f"{fingerprint[:12]}... vs {trained[:12]}..., --tokenizer-model {data.get('tokenizer_model')}); "
            f"pass the run's tokenizer directory with --hf-assets")


# ------------------------------------------------------------------------------------------
# megatron-core checkpoints
# ------------------------------------------------------------------------------------------

def read_mcore_tensors(checkpoint_dir: str | os.PathLike, names) -> dict[str, torch.Tensor]:
    """Full tensors `names` of one dist checkpoint directory, with no process group and without
    reading anything else (a training checkpoint's optimizer state stays on disk)."""
    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(checkpoint_dir))
    metadata = reader.read_metadata().state_dict_metadata
    wanted = {}
    for name in names:
        meta = metadata.get(name)
        if meta is None or not hasattr(meta, "size"):
            raise ConversionError(f"checkpoint {checkpoint_dir} has no tensor {name}")
        wanted[name] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    with warnings.catch_warnings():
        # "torch.distributed is ... uninitialized, assuming ... a single process": intended here.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(wanted, storage_reader=reader, no_dist=True)
    return wanted


@contextmanager
def _single_process_world() -> Iterator[Any]:
    """A world of one process for building and saving a model; torn down afterwards."""
    import torch.distributed as dist

    from megatron_prealign.distributed import single_process_world

    if dist.is_initialized():
        raise ConversionError("hf-to-mcore conversion runs in its own process; call it before "
                              "init_distributed (or use tools/convert_checkpoint.py)")
    with single_process_world(seed=0) as pgs:
        yield pgs


def _fill_model(model, full: Mapping[str, torch.Tensor]) -> None:
    """Copy full tensors into a single-rank model through its sharded state dict, so the
    global-name -> parameter mapping is megatron-core's own (spec independent)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

    sharded = model.sharded_state_dict()
    apply_factories(sharded)
    used = set()
    with torch.no_grad():
        for item in nested_values(sharded):
            if not isinstance(item, ShardedTensor):
                continue
            if item.key not in full:
                raise ConversionError(f"converted state has no tensor {item.key}")
            source = full[item.key]
            if tuple(source.shape) != tuple(item.global_shape):
                raise ConversionError(
                    f"tensor {item.key} has shape {tuple(source.shape)}, the model expects {tuple(item.global_shape)}")
            item.data.copy_(source[item.global_slice()])
            used.add(item.key)
    unused = sorted(full.keys() - used)
    if unused:
        raise ConversionError(f"the model has no parameter for converted tensor(s) {', '.join(unused)}")


def save_release(output: str | os.PathLike, cfg: ModelConfig, full: dict[str, torch.Tensor],
                 state: dict[str, Any], tensor_model_parallel_size: int) -> Path:
    """Write full tensors (vocab rows padded for `tensor_model_parallel_size`) as a weights-only
    `release` checkpoint under `output`, from a world of one process. `full` is consumed."""
    from megatron_prealign.checkpointing import save_checkpoint
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import build_model

    # One rank holding the whole model, with the embedding padded as the target TP pads it.
    build_cfg = dataclasses.replace(
        cfg, transformer_impl="local",
        make_vocab_size_divisible_by=cfg.make_vocab_size_divisible_by * tensor_model_parallel_size)
    with _single_process_world() as pgs:
        model = build_model(build_cfg, ParallelConfig(), pgs)
        _fill_model(model, full)
        full.clear()
        return save_checkpoint(output, model=model, state=state, iteration=None, with_rng=False)


def convert_hf_to_mcore(hf_path: str | os.PathLike, output: str | os.PathLike, *,
                        tensor_model_parallel_size: int = 1,
                        pipeline_model_parallel_size: int = 1, overwrite: bool = False) -> Path:
    """Convert a HF Llama / Mistral / Qwen2 / Qwen3 directory into a weights-only `release`
    checkpoint under `output`, ready to load at the target TP/PP (vocab padded for that TP), with
    the tokenizer files and generation config in `<output>/hf_assets/`. Returns the release dir.

    The root is written under a temporary name and renamed when complete; an existing non-empty
    `output` is refused unless `overwrite` (then replaced as a whole, never mixed).
    Runs a world of one process; must be called where no process group exists yet.
    """
    check_output_dir(output, overwrite)
    hf_config = read_hf_config(hf_path)
    cfg = model_config_from_hf(hf_config)
    check_target_layout(cfg, tensor_model_parallel_size, pipeline_model_parallel_size)
    files = hf_weight_files(hf_path)
    full = hf_to_mcore_state(read_hf_state(hf_path), cfg, tensor_model_parallel_size)
    source = {"format": "huggingface", "path": str(Path(hf_path).resolve()),
              "files": [f.name for f in files], "hf_config": hf_config}
    assets = {name: Path(hf_path) / name for name in HF_ASSET_FILES if (Path(hf_path) / name).is_file()}
    if assets:
        source["assets"] = sorted(assets)
        source["assets_dir"] = str((Path(output) / ASSETS_DIR).resolve())
    state = {
        "model": dataclasses.asdict(cfg),
        "iteration": 0,
        "source": source,
        "target_layout": {"tensor_model_parallel_size": tensor_model_parallel_size,
                          "pipeline_model_parallel_size": pipeline_model_parallel_size,
                          "padded_vocab_size": cfg.padded_vocab_size(tensor_model_parallel_size)},
    }
    with atomic_path(output) as tmp:
        if assets:
            write_assets_dir(tmp, assets)
        save_release(tmp, cfg, full, state, tensor_model_parallel_size)
    release = Path(output) / "release"
    logger.info("converted %s -> %s (TP=%d PP=%d, padded vocab %d, carried %s)", hf_path, release,
                tensor_model_parallel_size, pipeline_model_parallel_size,
                cfg.padded_vocab_size(tensor_model_parallel_size), ", ".join(sorted(assets)) or "no tokenizer files")
    return release


def read_model_config(load: str | os.PathLike) -> tuple[Path, dict[str, Any], ModelConfig]:
    """(checkpoint dir, its state, its ModelConfig), reading no tensors."""
    from megatron_prealign.checkpointing import read_checkpoint_state

    ckpt, state = read_checkpoint_state(load)
    if "model" not in state:
        raise ConversionError(f"{ckpt}/prealign_state.json has no `model` config; cannot rebuild the architecture")
    try:
        cfg = ModelConfig(**state["model"])
    except TypeError as exc:
        raise ConversionError(f"{ckpt}/prealign_state.json `model` does not match ModelConfig: {exc}") from None
    return ckpt, state, cfg


def read_model_checkpoint(load: str | os.PathLike) -> tuple[Path, dict[str, Any], ModelConfig, dict[str, torch.Tensor]]:
    """(checkpoint dir, its state, its ModelConfig, its full model tensors) with no process group."""
    ckpt, state, cfg = read_model_config(load)
    return ckpt, state, cfg, read_mcore_tensors(ckpt, expected_mcore_shapes(cfg, padded_vocab_size=0).keys())


def convert_mcore_to_hf(load: str | os.PathLike, output: str | os.PathLike,
                        hf_assets: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Export a megatron_prealign checkpoint (root or checkpoint dir, any TP/PP layout, release or
    training) to a HF directory: `config.json` + `model.safetensors`, and the tokenizer files and
    generation config from `hf_assets` (default: those the checkpoint carries). No process group.
    The directory is written under a temporary name and renamed when complete; an existing
    non-empty `output` is refused unless `overwrite`."""
    check_output_dir(output, overwrite)
    ckpt, state, cfg = read_model_config(load)
    check_hf_compatible(cfg)
    full = read_mcore_tensors(ckpt, expected_mcore_shapes(cfg, padded_vocab_size=0).keys())
    source = state.get("source")
    base = source.get("hf_config") if isinstance(source, Mapping) else None
    dtype = (hf_dtype(base) if base else None) or full[MC_EMBED].dtype
    hf_state = mcore_to_hf_state(full, cfg, dtype=dtype)
    del full
    config = hf_config_from_model_config(cfg, base=base, dtype=dtype)
    assets = Path(hf_assets) if hf_assets is not None else find_hf_assets(ckpt, state)
    if assets is not None:
        if not assets.is_dir():
            raise FileNotFoundError(f"--hf-assets {assets} is not a directory")
        check_assets_tokenizer(assets, state)
    with atomic_path(output) as tmp:
        write_hf_checkpoint(tmp, hf_state, config)
        copied = copy_hf_assets(assets, tmp) if assets is not None else tokenizer_files_of_run(state, tmp)
    out = Path(output)
    if not copied:
        logger.warning("%s carries no tokenizer files or generation config, and the tokenizer the run recorded "
                       "is not readable here: copy them into %s yourself (or pass --hf-assets)", ckpt, out)
    logger.info("exported %s -> %s (%d tensors, %s; %s)", ckpt, out, len(hf_state), dtype,
                ", ".join(copied) or "no tokenizer files")
    return out


__all__ = [
    "ASSETS_DIR", "HF_ASSET_FILES", "check_output_dir", "convert_hf_to_mcore", "convert_mcore_to_hf", "copy_hf_assets",
    "find_hf_assets", "hf_weight_files", "tokenizer_files_of_run", "read_hf_config", "read_hf_state", "read_mcore_tensors",
    "read_model_checkpoint", "read_model_config", "save_release", "write_assets_dir", "write_hf_checkpoint",
]
