"""Code-switched samples of a preprocessed dataset, as text: what the model will read.

    for sample in preview(PreviewConfig(data_path="data/en_es_text_document", lexicon="en-es.lex",
                                        tokenizer_model="tok.model", codeswitch_ratio=0.2)):
        print(format_preview(sample))

Each sample is drawn from `CodeSwitchGPTDataset` exactly as pretraining draws it (same window,
same switches for the same ``--seed``/``--codeswitch-seed`` and sample index); the spans it
switched come from `CodeSwitchGPTDataset.switch_decisions`, and the switched text shown is the
dataset's own ``tokens``, checked token for token against those decisions. The sample indices
are drawn with ``--seed``, so the same command prints the same samples.

``tools/preview_codeswitch.py`` is the command line.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from megatron_prealign.log import get_logger

__all__ = ["PreviewConfig", "SamplePreview", "format_preview", "preview"]

logger = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class PreviewConfig:
    """What `preview` shows (each field is the tools/preview_codeswitch.py flag of the same name)."""

    data_path: str
    """Token dataset prefix with its code-switch sidecar, from tools/preprocess_data.py --lexicon (--data-path)."""
    lexicon: str
    """The .lex the sidecar was made with (--lexicon)."""
    tokenizer_model: str
    """Tokenizer file or directory (--tokenizer-model)."""
    tokenizer_type: str = "SentencePieceTokenizer"
    """As for pretraining (--tokenizer-type)."""
    seq_length: int = 128
    """Tokens per sample (--seq-length)."""
    codeswitch_ratio: float = 0.05
    """Switch probability per dictionary word, as in pretraining (--codeswitch-ratio)."""
    seed: int = 1234
    """Dataset seed (sample order) and the draw of the samples shown (--seed)."""
    codeswitch_seed: int | None = None
    """Seed of the switches; None = --seed, as in pretraining (--codeswitch-seed)."""
    num_samples: int = 5
    """Samples to show (--num-samples)."""
    data_cache_path: str | None = None
    """Where megatron-core writes its sample indices; None = a temporary directory, removed
    afterwards, so previewing writes nothing next to the data (--data-cache-path)."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.seq_length < 1:
            raise ValueError(f"--seq-length must be >= 1, got {self.seq_length}")
        if not 0.0 <= self.codeswitch_ratio <= 1.0:
            raise ValueError(f"--codeswitch-ratio must be in [0, 1], got {self.codeswitch_ratio}")


@dataclass
class SamplePreview:
    """One sample: the original input and the switched input, cut at the switched spans."""

    index: int
    """Sample index in the dataset."""
    original: list[tuple[str, str]]
    """(text, kind) segments of the original input; kind ``switched`` marks a word the sample
    switches, ``eod`` a document end (its text is empty), ``text`` the rest."""
    switched: list[tuple[str, str]]
    """The same for the switched input; ``switched`` marks a translation written in."""
    switched_words: int
    eligible_words: int


def preview(cfg: PreviewConfig) -> list[SamplePreview]:
    """`cfg.num_samples` samples of the dataset, drawn with `cfg.seed` (fewer if it has fewer).

    Raises:
        DataError, SidecarError, ValueError: the dataset, its sidecar or the lexicon do not fit
            (the dataset's own checks, one line each).
    """
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import Split

    from megatron_prealign.data.dataset import CodeSwitchGPTDataset, CodeSwitchGPTDatasetConfig
    from megatron_prealign.data.integrity import open_token_dataset
    from megatron_prealign.lexicon.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    indexed: IndexedDataset = open_token_dataset(cfg.data_path, tokenizer=tokenizer, flag="--data-path")
    with _cache_dir(cfg.data_cache_path) as cache:
        config = CodeSwitchGPTDatasetConfig(
            random_seed=cfg.seed, sequence_length=cfg.seq_length, blend=([cfg.data_path], None), split="1,0,0",
            path_to_cache=cache, tokenizer=tokenizer, reset_position_ids=False, reset_attention_mask=False,
            eod_mask_loss=False, create_attention_mask=False, codeswitch_ratio=cfg.codeswitch_ratio,
            codeswitch_seed=cfg.codeswitch_seed, lexicon_path=cfg.lexicon)
        dataset = CodeSwitchGPTDataset(indexed, cfg.data_path, np.arange(len(indexed), dtype=np.int32), None,
                                       Split.train, config)
        rng = np.random.default_rng(cfg.seed)
        count = min(cfg.num_samples, len(dataset))
        chosen: set[int] = set()
        while len(chosen) < count:
            chosen.update(int(i) for i in rng.integers(0, len(dataset), size=count - len(chosen)))
        indices = sorted(chosen)
        return [_sample_preview(dataset, i, tokenizer, cfg.seq_length) for i in indices]


@contextlib.contextmanager
def _cache_dir(path: str | None) -> Iterator[str]:
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="prealign_preview_") as tmp:
        yield tmp


def _sample_preview(dataset, idx: int, tokenizer, seq_length: int) -> SamplePreview:
    sample = dataset[idx]
    window, decisions = dataset.switch_decisions(idx)
    tokens = sample["tokens"].numpy()
    original_ids = window[: min(seq_length, len(window) - 1)]
    # Cut both inputs at the switched spans; a span's place in the switched input moves by the
    # length changes of the switches before it.
    cuts_original, cuts_switched, shift = [], [], 0
    expected: list[int] = []
    pos = 0
    for d in decisions:
        if not d.switched:
            continue
        expected.extend(window[pos : d.start].tolist())
        expected.extend(d.translation.tolist())
        pos = d.start + d.length
        cuts_original.append((d.start, d.start + d.length))
        cuts_switched.append((d.start + shift, d.start + shift + len(d.translation)))
        shift += len(d.translation) - d.length
    expected.extend(window[pos:].tolist())
    # The input ends at seq_length; when translations are shorter than their words the stream
    # ends earlier and the rest is padding (token 0 after the pad step), which is not shown.
    shown = min(seq_length, len(expected) - 1)
    if tokens[:shown].tolist() != expected[:shown]:
        raise RuntimeError(f"sample {idx}: the dataset's switched tokens differ from its switch decisions")
    return SamplePreview(
        index=idx,
        original=_segments(tokenizer, original_ids, [c for c in cuts_original if c[0] < len(original_ids)]),
        switched=_segments(tokenizer, tokens[:shown], [c for c in cuts_switched if c[0] < shown]),
        switched_words=int(sample["cs_switched_words"]),
        eligible_words=int(sample["cs_eligible_words"]),
    )


def _segments(tokenizer, ids: np.ndarray, marked: Sequence[tuple[int, int]]) -> list[tuple[str, str]]:
    """(text, kind) pieces of `ids`: the `marked` [start, end) ranges (sorted, disjoint) as
    ``switched``, each end-of-document token as ``eod``, the rest as ``text``."""
    pieces, pos = [], 0
    for a, b in marked:
        pieces += [(pos, a, "text"), (a, min(b, len(ids)), "switched")]
        pos = min(b, len(ids))
    pieces.append((pos, len(ids), "text"))
    eod = tokenizer.eod
    split = []
    for start, end, kind in pieces:
        if kind == "text":
            for e in np.flatnonzero(ids[start:end] == eod) + start:
                split += [(start, int(e), "text"), (int(e), int(e) + 1, "eod")]
                start = int(e) + 1
        split.append((start, end, kind))
    out, previous = [], ""
    for start, end, kind in split:
        if end <= start:
            continue
        # Decoding the prefix and keeping the new characters keeps the space that a tokenizer
        # drops at the start of a decoded string (SentencePiece's leading "▁").
        text = tokenizer.decode(ids[:end].tolist())
        piece = text[len(previous):] if text.startswith(previous) else tokenizer.decode(ids[start:end].tolist())
        previous = text
        out.append(("" if kind == "eod" else piece, kind))
    return out


def format_preview(p: SamplePreview, open_mark: str = "[", close_mark: str = "]", eod_mark: str = " ¶") -> str:
    """Three lines: a header, the original input and the switched input; switched spans in
    `open_mark`/`close_mark`, document ends as `eod_mark`."""

    def render(segments):
        out = []
        for text, kind in segments:
            if kind == "switched":
                lead = text[: len(text) - len(text.lstrip())]
                out.append(f"{lead}{open_mark}{text.strip()}{close_mark}")
            elif kind == "eod":
                out.append(eod_mark)
            else:
                out.append(text)
        return "".join(out).replace("\n", " ")

    return "\n".join([
        f"sample {p.index}: {p.switched_words} of {p.eligible_words} dictionary words switched",
        f"  original: {render(p.original)}",
        f"  switched: {render(p.switched)}",
    ])
