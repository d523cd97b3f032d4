"""Vocabulary extension: give a converted model tokens of a new language (stages in README.md).

1. `extend_tokenizer`: append the pieces of a tokenizer of the new language (given, or trained
   here on its text with the base tokenizer's settings) to the base tokenizer. Old ids keep
   their pieces; new ids follow them.
   * SentencePiece `.model`: pieces appended to the ModelProto. A BPE model's new pieces score
     below every old one (merged only after all old merges, in the new model's order); a
     unigram model's keep their log-probabilities from the new language's model.
   * Hugging Face `tokenizer.json` (BPE, byte-level or not): vocabulary entries and merges
     appended after the old ones (new merges rank after every old merge).
   Appended pieces can still change how old text splits (a new merge may apply where no old one
   did). `preserve_text` (text in the old languages) is the guard: new pieces that change the
   encoding of any of its lines are dropped until every line encodes exactly as before.
2. `extend_checkpoint`: grow the embedding (and untied output layer) of a checkpoint to the
   extended vocabulary. Old rows are copied unchanged; each new row starts, by default, at the
   embedding of the dictionary translations of the words it occurs in: for every lexicon entry
   (compiled with the extended tokenizer) containing the new id, the mean over its translations
   of the mean of each translation's rows (translations made of old ids only), averaged over
   those entries. New ids in no such entry start at the mean of all old rows.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from megatron_prealign.convert.files import (
    ASSETS_DIR,
    HF_ASSET_FILES,
    find_hf_assets,
    read_mcore_tensors,
    read_model_config,
    save_release,
    write_assets_dir,
)
from megatron_prealign.convert.hf import MC_EMBED, MC_OUTPUT, ConversionError, expected_mcore_shapes
from megatron_prealign.fileio import atomic_path
from megatron_prealign.lexicon.tokenizer import Tokenizer, _fingerprint, build_tokenizer
from megatron_prealign.log import get_logger

logger = get_logger(__name__)

SP_FILE = "tokenizer.model"
HF_FILE = "tokenizer.json"
EXTENSION_FILE = "vocab_extension.json"
# Files that spell out the vocabulary itself: stale once another one of them is extended.
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
INIT_METHODS = ("dictionary", "mean")

_SP_NORMAL, _SP_USER_DEFINED = 1, 4
_SP_UNIGRAM, _SP_BPE = 1, 2


@dataclasses.dataclass(frozen=True)
class TokenizerExtension:
    """What `extend_tokenizer` wrote; saved as `vocab_extension.json` next to the tokenizer."""

    tokenizer_type: str
    """`SentencePieceTokenizer` or `HuggingFaceTokenizer`."""
    base: str
    """The tokenizer that was extended."""
    base_vocab_size: int
    """Ids below this are the base tokenizer's, with the same pieces."""
    base_fingerprint: str
    """Fingerprint of the base tokenizer (sha256 of its type and ordered pieces)."""
    vocab_size: int
    """Ids of the extended tokenizer."""
    fingerprint: str
    """Fingerprint of the extended tokenizer."""
    added: tuple[str, ...]
    """The new pieces, in id order from `base_vocab_size`."""
    dropped: tuple[str, ...]
    """New-language pieces left out because they changed how a line of the preserved text encodes."""

    @classmethod
    def read(cls, path: str | os.PathLike) -> "TokenizerExtension":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            return cls(**{**data, "added": tuple(data["added"]), "dropped": tuple(data["dropped"])})
        except (TypeError, KeyError) as exc:
            raise ValueError(f"{path} is not a {EXTENSION_FILE} written by tools/extend_vocab.py ({exc})") from None


def locate_tokenizer(path: str | os.PathLike) -> tuple[str, Path, Path]:
    """(tokenizer type, vocabulary file, path to load it from) of a SentencePiece `.model`, a
    `tokenizer.json`, or a directory holding one of them (tokenizer.json preferred)."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".model":
            return "SentencePieceTokenizer", p, p
        if p.suffix == ".json":
            return "HuggingFaceTokenizer", p, p
        raise ValueError(f"tokenizer {p}: expected a SentencePiece .model file or a tokenizer.json")
    if p.is_dir():
        if (p / HF_FILE).is_file():
            return "HuggingFaceTokenizer", p / HF_FILE, p
        if (p / SP_FILE).is_file():
            return "SentencePieceTokenizer", p / SP_FILE, p / SP_FILE
        raise FileNotFoundError(f"tokenizer directory {p} holds neither {HF_FILE} nor {SP_FILE}")
    raise FileNotFoundError(f"tokenizer {p} not found")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    kind, _, load = locate_tokenizer(path)
    return build_tokenizer(kind, load)


# ------------------------------------------------------------------------------------------
# Stage 1: the tokenizer
# ------------------------------------------------------------------------------------------

def _read_lines(path: str | os.PathLike, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} not found")
    lines = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{what} {p} holds no text")
    return lines


class _Encoder:
    """A built candidate tokenizer: encode(text) and the ids of the candidate pieces it holds."""

    def __init__(self, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str],
                 added: dict[str, int], blob: bytes):
        self.encode, self.decode, self.added, self.blob = encode, decode, added, blob


def _keep_preserving(build: Callable[[list], _Encoder], candidates: list, name: Callable[[Any], str],
                     base_encode: Callable[[str], list[int]], lines: Sequence[str]) -> tuple[_Encoder, list[str]]:
    """Drop candidates until every line encodes as with the base tokenizer. Returns the built
    tokenizer and the dropped pieces.

    A changed line is blamed on the new pieces its new encoding uses; when it uses none (a new
    merge produced a piece that old merges then folded into an old one), on the new pieces whose
    text occurs in it.
    """
    lines = list(dict.fromkeys(lines))
    expected = [base_encode(line) for line in lines]
    kept, dropped = list(candidates), []
    while True:
        built = build(kept)
        if not lines:
            return built, dropped
        by_id = {i: piece for piece, i in built.added.items()}
        changed = [line for line, want in zip(lines, expected) if built.encode(line) != want]
        if not changed:
            return built, dropped
        culprits = {by_id[t] for line in changed for t in built.encode(line) if t in by_id}
        if not culprits:
            culprits = {piece for piece, i in built.added.items()
                        if (text := built.decode([i]).strip()) and any(text in line for line in changed)}
        if not culprits:
            raise ValueError(f"cannot keep the preserved text's encoding: {changed[0][:80]!r} changed, "
                             f"but no new piece explains it")
        kept = [c for c in kept if name(c) not in culprits]
        dropped.extend(sorted(culprits))


# -- SentencePiece -------------------------------------------------------------------------

def _sp_proto(blob: bytes):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(blob)
    return proto


def _train_sentencepiece(base, lines: Sequence[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    trainer, normalizer = base.trainer_spec, base.normalizer_spec
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size,
        model_type={_SP_UNIGRAM: "unigram", _SP_BPE: "bpe"}[trainer.model_type],
        normalization_rule_name=normalizer.name or "identity", add_dummy_prefix=normalizer.add_dummy_prefix,
        remove_extra_whitespaces=normalizer.remove_extra_whitespaces,
        split_digits=trainer.split_digits, split_by_whitespace=trainer.split_by_whitespace,
        treat_whitespace_as_suffix=trainer.treat_whitespace_as_suffix,
        character_coverage=1.0, hard_vocab_limit=False, byte_fallback=False, minloglevel=2)
    return out.getvalue()


def _extend_sentencepiece(base_path: Path, new_blob: bytes | None, lines: Sequence[str] | None,
                          vocab_size: int | None, preserve: Sequence[str]) -> tuple[_Encoder, list[str]]:
    import sentencepiece as spm

    base = _sp_proto(base_path.read_bytes())
    if base.trainer_spec.model_type not in (_SP_UNIGRAM, _SP_BPE):
        raise ValueError(f"{base_path}: only unigram and BPE SentencePiece models can be extended")
    new = _sp_proto(new_blob if new_blob is not None else _train_sentencepiece(base, lines, vocab_size))
    existing = {p.piece for p in base.pieces}
    pieces = list(dict.fromkeys(p.piece for p in new.pieces
                                if p.type in (_SP_NORMAL, _SP_USER_DEFINED) and p.piece not in existing))
    scores = {p.piece: p.score for p in new.pieces}
    if base.trainer_spec.model_type == _SP_BPE:
        # BPE merges the highest-scoring pair first: below every old piece, in the new order.
        floor = min((p.score for p in base.pieces if p.type == _SP_NORMAL), default=0.0)
        scores = {piece: floor - 1.0 - rank for rank, piece in enumerate(pieces)}
    base_sp = spm.SentencePieceProcessor(model_proto=base.SerializeToString())

    def build(kept: list[str]) -> _Encoder:
        proto = copy.deepcopy(base)
        for piece in kept:
            proto.pieces.add(piece=piece, score=scores[piece], type=_SP_NORMAL)
        blob = proto.SerializeToString()
        sp = spm.SentencePieceProcessor(model_proto=blob)
        added = {piece: len(base.pieces) + i for i, piece in enumerate(kept)}
        return _Encoder(lambda text: list(sp.encode(text)), lambda ids: sp.decode(ids), added, blob)

    return _keep_preserving(build, pieces, lambda piece: piece, lambda text: list(base_sp.encode(text)), preserve)


# -- Hugging Face tokenizer.json (BPE) -----------------------------------------------------

def _merge_pairs(merges: Sequence) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def _train_hf_bpe(base_spec: Mapping[str, Any], lines: Sequence[str], vocab_size: int) -> dict[str, Any]:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    base = HFTokenizer.from_str(json.dumps(base_spec))
    model = base_spec["model"]
    options = {k: model[k] for k in ("unk_token", "continuing_subword_prefix", "end_of_word_suffix") if model.get(k)}
    tok = HFTokenizer(models.BPE(**options))
    if base.normalizer is not None:
        tok.normalizer = base.normalizer
    pre = base_spec.get("pre_tokenizer") or {}
    if pre.get("type") == "Metaspace" or (not pre and "\u2581" in json.dumps(base_spec.get("normalizer"), ensure_ascii=False)):
        # SentencePiece-converted tokenizers (Llama 2, Mistral) mark spaces with "▁" and do not
        # split there (their merges never cross it); training must split, or merges would.
        scheme = pre.get("prepend_scheme", "never") if pre else "never"
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=True)
    elif base.pre_tokenizer is not None:
        tok.pre_tokenizer = base.pre_tokenizer
    byte_level = "ByteLevel" in json.dumps(pre)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [])
    tok.train_from_iterator(lines, trainer)
    return json.loads(tok.to_str())


def _extend_hf_bpe(base_path: Path, new_spec: Mapping[str, Any] | None, lines: Sequence[str] | None,
                   vocab_size: int | None, preserve: Sequence[str]) -> tuple[_Encoder, list[str]]:
    from tokenizers import Tokenizer as HFTokenizer

    base_spec = json.loads(base_path.read_text(encoding="utf-8"))
    model = base_spec.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{base_path}: only BPE tokenizer.json models can be extended (model type "
                         f"{model.get('type')!r})")
    if new_spec is None:
        new_spec = _train_hf_bpe(base_spec, lines, vocab_size)
    if (new_spec.get("model") or {}).get("type") != "BPE":
        raise ValueError("the new language's tokenizer.json must be a BPE model")
    ids = list(model["vocab"].values()) + [t["id"] for t in base_spec.get("added_tokens", [])]
    count = len(set(ids))
    if max(ids) + 1 != count:
        raise ValueError(f"{base_path}: token ids are not contiguous (max id {max(ids)}, {count} tokens)")
    existing = set(model["vocab"]) | {t["content"] for t in base_spec.get("added_tokens", [])}
    prefix = model.get("continuing_subword_prefix") or ""
    new_model = new_spec["model"]
    produced: dict[str, tuple[str, str]] = {}
    for a, b in _merge_pairs(new_model.get("merges", [])):
        token = a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)
        produced.setdefault(token, (a, b))
    # New alphabet symbols (no merge makes them), then merged pieces in the new model's merge order.
    candidates = [(t, None) for t in new_model["vocab"] if t not in produced and t not in existing]
    candidates += [(t, m) for t, m in produced.items() if t not in existing]
    as_strings = bool(model.get("merges")) and isinstance(model["merges"][0], str)
    base_tok = HFTokenizer.from_str(json.dumps(base_spec))

    def build(kept: list) -> _Encoder:
        spec = copy.deepcopy(base_spec)
        vocab, merges = spec["model"]["vocab"], spec["model"].setdefault("merges", [])
        # `tokenizers` renumbers added tokens that are not in the model's vocabulary to follow
        # it on load, so added tokens placed before the new ids must be in the vocabulary too.
        for token in spec.get("added_tokens", []):
            vocab.setdefault(token["content"], token["id"])
        added, next_id = {}, count
        for token, merge in kept:
            if merge is not None and not all(part in vocab for part in merge):
                continue  # a part was dropped: the merge can never fire
            vocab[token] = added[token] = next_id
            next_id += 1
            if merge is not None:
                merges.append(" ".join(merge) if as_strings else list(merge))
        text = json.dumps(spec, ensure_ascii=False)
        tok = HFTokenizer.from_str(text)
        return _Encoder(lambda s: tok.encode(s, add_special_tokens=False).ids,
                        lambda i: tok.decode(i, skip_special_tokens=False), added, text.encode("utf-8"))

    built, dropped = _keep_preserving(build, candidates, lambda c: c[0],
                                      lambda s: base_tok.encode(s, add_special_tokens=False).ids, preserve)
    unreachable = [t for t, _ in candidates if t not in built.added and t not in dropped]
    return built, dropped + unreachable


def extend_tokenizer(base: str | os.PathLike, output: str | os.PathLike, *,
                     new_tokenizer: str | os.PathLike | None = None,
                     new_language_text: str | os.PathLike | None = None,
                     new_language_vocab_size: int | None = None,
                     preserve_text: str | os.PathLike | None = None) -> TokenizerExtension:
    """Append a new language's pieces to `base` and write the extended tokenizer directory.

    Args:
        base: SentencePiece `.model`, `tokenizer.json`, or a directory with one (e.g. a converted
            checkpoint's `hf_assets/`).
        output: new directory: the extended `tokenizer.model` or `tokenizer.json`, the base
            directory's other tokenizer files and generation config, and `vocab_extension.json`.
        new_tokenizer: a tokenizer of the new language of the same kind (SentencePiece model;
            BPE tokenizer.json with the base's pre-tokenization), or
        new_language_text / new_language_vocab_size: train one here, with the base's settings.
        preserve_text: text in the old languages whose every line must encode as before.
    """
    kind, base_file, base_load = locate_tokenizer(base)
    if (new_tokenizer is None) == (new_language_text is None):
        raise ValueError("give either --new-tokenizer or --new-language-text (with --new-language-vocab-size)")
    if new_language_text is not None and (new_language_vocab_size is None or new_language_vocab_size <= 0):
        raise ValueError("--new-language-text needs --new-language-vocab-size > 0")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not (out / EXTENSION_FILE).is_file():
        raise ValueError(f"--output {out} exists and holds files this tool did not write; choose a new directory")
    lines = _read_lines(new_language_text, "--new-language-text") if new_language_text is not None else None
    preserve = _read_lines(preserve_text, "--preserve-text") if preserve_text is not None else []
    base_tok = build_tokenizer(kind, base_load)
    if kind == "SentencePieceTokenizer":
        new_blob = None
        if new_tokenizer is not None:
            new_kind, new_file, _ = locate_tokenizer(new_tokenizer)
            if new_kind != kind:
                raise ValueError(f"--new-tokenizer {new_tokenizer} is a {new_kind}; the base is a {kind}")
            new_blob = new_file.read_bytes()
        built, dropped = _extend_sentencepiece(base_file, new_blob, lines, new_language_vocab_size, preserve)
        name = SP_FILE
    else:
        new_spec = None
        if new_tokenizer is not None:
            new_kind, new_file, _ = locate_tokenizer(new_tokenizer)
            if new_kind != kind:
                raise ValueError(f"--new-tokenizer {new_tokenizer} is a {new_kind}; the base is a {kind}")
            new_spec = json.loads(new_file.read_text(encoding="utf-8"))
        built, dropped = _extend_hf_bpe(base_file, new_spec, lines, new_language_vocab_size, preserve)
        name = HF_FILE
    if not built.added:
        raise ValueError("the new language's tokenizer adds no piece the base does not already have"
                         + (f" ({len(dropped)} dropped to keep --preserve-text)" if dropped else ""))
    siblings = base_file.parent
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for asset in HF_ASSET_FILES:
            if asset not in VOCAB_FILES and (siblings / asset).is_file():
                shutil.copyfile(siblings / asset, tmp / asset)
        (tmp / name).write_bytes(built.blob)
        extended = build_tokenizer(kind, tmp / name if kind == "SentencePieceTokenizer" else tmp)
        record = TokenizerExtension(
            tokenizer_type=kind, base=str(Path(base).resolve()), base_vocab_size=base_tok.vocab_size,
            base_fingerprint=base_tok.fingerprint, vocab_size=extended.vocab_size,
            fingerprint=extended.fingerprint, added=tuple(sorted(built.added, key=built.added.get)),
            dropped=tuple(dropped))
        if extended.pieces()[:base_tok.vocab_size] != base_tok.pieces():
            raise ConversionError(f"extending {base} changed the pieces of old ids")
        (tmp / EXTENSION_FILE).write_text(json.dumps(dataclasses.asdict(record), indent=2, ensure_ascii=False),
                                          encoding="utf-8")
    logger.info("extended %s: %d -> %d tokens (%d pieces dropped to keep the preserved text's encoding) -> %s",
                base, record.base_vocab_size, record.vocab_size, len(record.dropped), out)
    return record


# ------------------------------------------------------------------------------------------
# Stage 2: the model
# ------------------------------------------------------------------------------------------

def dictionary_sources(lexicon, base_vocab_size: int) -> dict[int, list[list[np.ndarray]]]:
    """For every new id (>= base_vocab_size) in a lexicon entry: per such entry, the token ids of
    its translations that consist of old ids only (entries without one are skipped)."""
    sources: dict[int, list[list[np.ndarray]]] = defaultdict(list)
    for entry in range(lexicon.num_entries):
        tokens = lexicon.entry_tokens(entry)
        new = sorted({int(t) for t in tokens if t >= base_vocab_size})
        if not new:
            continue
        translations = [lexicon.entry_tokens(int(t)) for t in lexicon.translations(entry)]
        translations = [t for t in translations if len(t) and int(t.max()) < base_vocab_size]
        if translations:
            for token in new:
                sources[token].append(translations)
    return dict(sources)


def initial_rows(weight: torch.Tensor, base_vocab_size: int, new_ids: Iterable[int],
                 sources: Mapping[int, list[list[np.ndarray]]]) -> tuple[dict[int, torch.Tensor], int]:
    """Initial rows of `new_ids` from the old rows of `weight` ([rows, hidden]): from the
    dictionary where `sources` has the id, else the mean of the old rows. Returns the rows
    (float64) and how many came from the dictionary."""
    old = weight[:base_vocab_size].double()
    mean = old.mean(dim=0)
    rows, from_dictionary = {}, 0
    for token in new_ids:
        entries = sources.get(token)
        if not entries:
            rows[token] = mean
            continue
        per_entry = [torch.stack([old[torch.as_tensor(t, dtype=torch.long)].mean(dim=0) for t in translations]).mean(dim=0)
                     for translations in entries]
        rows[token] = torch.stack(per_entry).mean(dim=0)
        from_dictionary += 1
    return rows, from_dictionary


def _base_of(tokenizer_path: Path, tokenizer: Tokenizer,
             base_tokenizer: str | os.PathLike | None) -> tuple[int, str]:
    """(base vocab size, base fingerprint): from `base_tokenizer`, else vocab_extension.json."""
    if base_tokenizer is not None:
        base = load_tokenizer(base_tokenizer)
        return base.vocab_size, base.fingerprint
    directory = tokenizer_path if tokenizer_path.is_dir() else tokenizer_path.parent
    record = directory / EXTENSION_FILE
    if not record.is_file():
        raise ValueError(f"{tokenizer_path} has no {EXTENSION_FILE} (written by `tools/extend_vocab.py tokenizer`): "
                         f"pass the tokenizer it extends with --base-tokenizer-model")
    ext = TokenizerExtension.read(record)
    if ext.fingerprint != tokenizer.fingerprint:
        raise ValueError(f"{record} describes another tokenizer than {tokenizer_path} (fingerprints differ)")
    return ext.base_vocab_size, ext.base_fingerprint


def _carried_fingerprint(assets: Path | None, kind: str) -> str | None:
    if assets is None:
        return None
    try:
        found_kind, _, load = locate_tokenizer(assets)
    except (FileNotFoundError, ValueError):
        return None
    return build_tokenizer(found_kind, load).fingerprint if found_kind == kind else None


def extend_checkpoint(load: str | os.PathLike, tokenizer: str | os.PathLike, output: str | os.PathLike, *,
                      lexicon: str | os.PathLike | None = None, init: str = "dictionary",
                      base_tokenizer: str | os.PathLike | None = None) -> Path:
    """Write a `release` checkpoint under `output` whose vocabulary is `tokenizer`'s (an extension
    of the tokenizer `load` was trained or converted with); returns the release directory.

    New embedding (and untied output-layer) rows follow `init`: `dictionary` (translations in
    `lexicon`, a `.lex` compiled with the extended tokenizer; others the mean row) or `mean`.
    The extended tokenizer and the checkpoint's other carried files go to `<output>/hf_assets/`.
    Runs a world of one process; must be called where no process group exists yet.
    """
    if init not in INIT_METHODS:
        raise ValueError(f"--init must be one of {INIT_METHODS}, got {init!r}")
    if init == "dictionary" and lexicon is None:
        raise ValueError("--init dictionary needs --lexicon (compiled with the extended tokenizer)")
    kind, _, load_path = locate_tokenizer(tokenizer)
    tok = build_tokenizer(kind, load_path)
    base_size, base_fp = _base_of(Path(tokenizer), tok, base_tokenizer)
    if _fingerprint(kind, tok.pieces()[:base_size]) != base_fp:
        raise ValueError(f"{tokenizer} does not extend its base tokenizer: its first {base_size} pieces differ")
    ckpt, state, cfg = read_model_config(load)
    assets = find_hf_assets(ckpt, state)
    for what, fingerprint in (("was trained with", state.get("tokenizer_fingerprint")),
                              ("carries", _carried_fingerprint(assets, kind))):
        if fingerprint and fingerprint != base_fp:
            raise ValueError(f"{ckpt} {what} another tokenizer than the base of {tokenizer} "
                             f"(fingerprint {fingerprint[:12]}... vs {base_fp[:12]}...)")
    if base_size > cfg.vocab_size:
        raise ValueError(f"the base tokenizer has {base_size} ids but {ckpt}'s model only {cfg.vocab_size} rows")
    vocab_size = max(cfg.vocab_size, tok.vocab_size)
    new_ids = range(base_size, tok.vocab_size)
    sources = {}
    lexicon_sha = None
    if lexicon is not None:
        from megatron_prealign.lexicon import load_lexicon

        lex = load_lexicon(lexicon, tok)
        lexicon_sha = lex.sha256
        if init == "dictionary":
            sources = dictionary_sources(lex, base_size)
    full = read_mcore_tensors(ckpt, expected_mcore_shapes(cfg, padded_vocab_size=0).keys())
    tp = int((state.get("target_layout") or {}).get("tensor_model_parallel_size", 1))
    new_cfg = dataclasses.replace(cfg, vocab_size=vocab_size)
    rows_total = new_cfg.padded_vocab_size(tp)
    from_dictionary = 0
    for name in (MC_EMBED, MC_OUTPUT) if cfg.untie_embeddings_and_output_weights else (MC_EMBED,):
        weight = full[name]
        grown = weight.new_zeros(rows_total, weight.shape[1])
        grown[:cfg.vocab_size] = weight[:cfg.vocab_size]
        rows, from_dictionary = initial_rows(weight, base_size, new_ids, sources)
        for token, row in rows.items():
            grown[token] = row.to(weight.dtype)
        full[name] = grown
    files = {}
    if assets is not None:
        files.update({n: assets / n for n in HF_ASSET_FILES if n not in VOCAB_FILES and (assets / n).is_file()})
    directory = Path(load_path) if Path(load_path).is_dir() else Path(load_path).parent
    if Path(tokenizer).is_dir():
        files.update({n: directory / n for n in HF_ASSET_FILES if (directory / n).is_file()})
    else:
        files[SP_FILE if kind == "SentencePieceTokenizer" else HF_FILE] = Path(tokenizer)
    source = dict(state.get("source") or {})
    source.pop("assets", None)
    source.pop("assets_dir", None)
    if files:
        source["assets"] = sorted(files)
        source["assets_dir"] = str(write_assets_dir(output, files).resolve())
    new_state = {
        "model": dataclasses.asdict(new_cfg),
        "iteration": 0,
        "source": source,
        "target_layout": {"tensor_model_parallel_size": tp,
                          "pipeline_model_parallel_size": (state.get("target_layout") or {}).get(
                              "pipeline_model_parallel_size", 1),
                          "padded_vocab_size": rows_total},
        "tokenizer_fingerprint": tok.fingerprint,
        "vocab_extension": {
            "from": str(ckpt), "tokenizer": str(Path(tokenizer).resolve()), "tokenizer_type": kind,
            "base_vocab_size": base_size, "base_tokenizer_fingerprint": base_fp, "vocab_size": vocab_size,
            "init": init, "lexicon": str(lexicon) if lexicon is not None else None, "lexicon_sha256": lexicon_sha,
            "rows_from_dictionary": from_dictionary, "rows_from_mean": len(new_ids) - from_dictionary,
        },
    }
    release = save_release(output, new_cfg, full, new_state, tp)
    logger.info("extended %s: vocabulary %d -> %d (%d new rows from the dictionary, %d from the mean) -> %s",
                ckpt, cfg.vocab_size, vocab_size, from_dictionary, len(new_ids) - from_dictionary, release)
    return release


__all__ = [
    "ASSETS_DIR", "EXTENSION_FILE", "INIT_METHODS", "TokenizerExtension", "dictionary_sources",
    "extend_checkpoint", "extend_tokenizer", "initial_rows", "load_tokenizer", "locate_tokenizer",
]
