"""The alignment gap of a checkpoint on a real lexicon, on the pre-pass's dictionary (training)
words and on its held-out words, separately.

The split is the pre-pass's own (`align.split_entries(lexicon, heldout_fraction, seed)`, whole
translation groups held out), with the values the checkpoint's run used: its run config records
``align.heldout_fraction`` and ``align.seed`` (already resolved: `--align-seed`, else `--seed`).
From each side the words are picked as the run's logged gap picks them (`align.gap_words`, at
most ``eval_max_words`` words, whole groups, entries of at most ``max_word_tokens`` tokens), and
`align.alignment_gap` measures mean cos(translations) - mean cos(random different-group pairs)
per layer slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GapSplit", "format_gaps", "gap_split_from_checkpoint", "lexicon_alignment_gaps"]


@dataclass(frozen=True)
class GapSplit:
    """How the lexicon is split and sampled, and where those values came from."""

    heldout_fraction: float
    seed: int
    max_words: int = 2048
    max_word_tokens: int = 16
    source: str = "defaults"
    """Where the values came from, for the output (e.g. "the checkpoint's run config")."""


def gap_split_from_checkpoint(meta: dict[str, Any], *, heldout_fraction: float | None = None,
                              seed: int | None = None, align_seed: int | None = None,
                              max_words: int | None = None, max_word_tokens: int | None = None) -> GapSplit:
    """The split the checkpoint's run used (its ``prealign_state.json`` `meta`), with overrides.

    Like pretraining, `align_seed` wins over `seed`; without either, the run config's resolved
    ``align.seed``; a checkpoint without a run config falls back to the defaults pretraining
    would use (``--align-heldout-fraction`` 0.05, seed 1234) and says so.
    """
    from megatron_prealign.align.config import AlignConfig
    from megatron_prealign.training.config import TrainingConfig

    align = ((meta.get("config") or {}).get("align")) or {}
    defaults = AlignConfig()
    values = {"heldout_fraction": align.get("heldout_fraction", defaults.heldout_fraction),
              "seed": align.get("seed", TrainingConfig.seed),
              "eval_max_words": align.get("eval_max_words", defaults.eval_max_words),
              "max_word_tokens": align.get("max_word_tokens", defaults.max_word_tokens)}
    overrides = (("seed", "--seed", seed), ("seed", "--align-seed", align_seed),  # --align-seed wins
                 ("heldout_fraction", "--align-heldout-fraction", heldout_fraction),
                 ("eval_max_words", "--align-eval-max-words", max_words),
                 ("max_word_tokens", "--align-max-word-tokens", max_word_tokens))
    overridden = []
    for key, flag, value in overrides:
        if value is not None:
            values[key] = value
            overridden.append(flag)
    source = "the checkpoint's run config" if align else "pretraining's defaults (the checkpoint records no run config)"
    if overridden:
        source += ", " + ", ".join(overridden) + " from the command line"
    return GapSplit(heldout_fraction=float(values["heldout_fraction"]), seed=int(values["seed"]),
                    max_words=int(values["eval_max_words"]), max_word_tokens=int(values["max_word_tokens"]),
                    source=source)


def lexicon_alignment_gaps(model, lexicon, pg_collection, split: GapSplit, *, pad_id: int = 0,
                           num_random_pairs: int = 4096, micro_batch_size: int = 64) -> dict[str, Any]:
    """Alignment gap per layer slot on the dictionary (pre-pass training) words and on the
    held-out words of `lexicon`, each labelled with how many words and translation pairs it has.

    Args:
        model: the checkpoint's model (single process: `evaluate.load_model`; any layout works,
            every rank calls it).
        lexicon: a `Lexicon` of the model's tokenizer.
        pg_collection: the process groups (`evaluate.single_process_group`).
        split: `gap_split_from_checkpoint`'s answer.

    Returns:
        ``{"split": {heldout_fraction, seed, source}, "dictionary": part, "heldout": part}``,
        each part ``{"entries": entries on that side, "words": words measured, "translation_pairs":
        aligned pairs among them, "gap": {slot: gap} or None, "note": why None}``.
    """
    from megatron_prealign.align import alignment_gap, evaluation_pairs, gap_words, split_entries

    train_ids, heldout_ids = split_entries(lexicon, split.heldout_fraction, split.seed)
    out: dict[str, Any] = {"split": {"heldout_fraction": split.heldout_fraction, "seed": split.seed,
                                     "max_words": split.max_words, "max_word_tokens": split.max_word_tokens,
                                     "source": split.source}}
    for name, ids in (("dictionary", train_ids), ("heldout", heldout_ids)):
        words = gap_words(lexicon, ids, max_words=split.max_words, seed=split.seed,
                          max_word_tokens=split.max_word_tokens) if len(ids) else np.zeros(0, np.int64)
        aligned, unrelated = evaluation_pairs(lexicon, words, num_random_pairs, split.seed)
        part: dict[str, Any] = {"entries": int(len(ids)), "words": int(len(words)),
                                "translation_pairs": int(len(aligned)), "gap": None, "note": None}
        if not len(aligned) or not len(unrelated):
            part["note"] = (f"{len(words)} words with {len(aligned)} translation pairs and {len(unrelated)} "
                            "different-group pairs: the gap needs both"
                            + (" (--align-heldout-fraction is 0)" if name == "heldout" and not split.heldout_fraction
                               else ""))
        else:
            part["gap"] = alignment_gap(model, lexicon, words, pg_collection, num_random_pairs=num_random_pairs,
                                        seed=split.seed, micro_batch_size=micro_batch_size, pad_id=pad_id)
        out[name] = part
    return out


def format_gaps(result: dict[str, Any]) -> list[str]:
    """Summary lines of a `lexicon_alignment_gaps` result."""
    split = result["split"]
    lines = [f"alignment   split: held-out fraction {split['heldout_fraction']}, seed {split['seed']} "
             f"(from {split['source']})"]
    for name, label in (("dictionary", "dictionary words (pre-pass training split)"),
                        ("heldout", "held-out words (never trained on by the pre-pass)")):
        part = result[name]
        head = (f"alignment   {label}: {part['words']} of {part['entries']} entries, "
                f"{part['translation_pairs']} translation pairs")
        if part["gap"] is None:
            lines.append(f"{head}; no gap: {part['note']}")
            continue
        lines.append(head)
        lines.append("alignment   " + name + "  " + "  ".join(f"{slot} {value:+.4f}"
                                                            for slot, value in part["gap"].items()))
    return lines
