"""Zero-shot cross-lingual transfer: a skill shown only in English, tested in the clone.

The skill is picking a word from a list by its ordinal:

    "nation, power, money, water: the third is money."

Training examples (English only, documents of ``text/transfer_en.jsonl``) use items from one
half of a pool of dictionary words; test examples use the other half, asked in English (did the
skill generalize to unseen items?) and in the clone (did it transfer to a language it was never
shown in?). Every word of the template and every item is a dictionary word. The answer is scored
like a knowledge query: the four items are ranked by the summed log-probability of their tokens
after ``"...: the third is"``. Ordinals are uniform, so any strategy that ignores the ordinal
(always copying the first item, say) scores the chance level 1/4.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from megatron_prealign.fileio import atomic_path

__all__ = ["ORDINALS", "TransferProbe", "evaluate_transfer", "make_transfer_probe"]

ORDINALS = ("first", "second", "third", "last")
"""Position words; `last` is the fourth item."""
NUM_ITEMS = len(ORDINALS)
TEMPLATE_WORDS = ("the", "is")


def _prompt(items: Sequence[str], ordinal: str) -> str:
    return f"{', '.join(items)}: the {ordinal} is"


@dataclass
class TransferProbe:
    train_items: list[str]
    test_items: list[str]
    train_examples: list[list[Any]]
    """``[items (4 words), ordinal index]`` rows."""
    test_examples: list[list[Any]]

    chance: float = 1.0 / NUM_ITEMS

    def required_words(self) -> list[str]:
        return sorted(set(ORDINALS) | set(TEMPLATE_WORDS) | set(self.train_items) | set(self.test_items))

    def training_texts(self) -> list[str]:
        return [f"{_prompt(items, ORDINALS[k])} {items[k]}." for items, k in self.train_examples]

    def summary(self) -> dict[str, Any]:
        return {"train_examples": len(self.train_examples), "test_examples": len(self.test_examples),
                "train_items": len(self.train_items), "test_items": len(self.test_items), "chance": self.chance,
                "example": self.training_texts()[0]}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TransferProbe":
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def queries(self, tokenizer, *, clone_offset: int = 0) -> list[dict[str, Any]]:
        """Test queries: ``prompt`` ids (EOD first), ``candidates`` (the 4 items), ``answer``,
        ``ordinal``; shifted into the clone by `clone_offset` (EOD stays shared)."""
        eod = tokenizer.eod
        out = []
        for items, k in self.test_examples:
            prompt = [eod] + [i + clone_offset for i in tokenizer.encode(_prompt(items, ORDINALS[k]))]
            candidates = [[i + clone_offset for i in tokenizer.encode_word(w)] for w in items]
            out.append({"prompt": prompt, "candidates": candidates, "answer": k, "ordinal": ORDINALS[k]})
        return out


def make_transfer_probe(tokenizer, frequent_words: Sequence[str], num_train: int, num_test: int, *,
                        seed: int) -> TransferProbe:
    """Build the probe from dictionary candidates (see module docstring).

    Items are lowercase alphabetic words of at least 4 letters (mostly content words) whose
    tokens in ``"...: the first is WORD."`` are the word's own tokens; the pool is split in half.

    Raises:
        ValueError: an ordinal or template word is not in `frequent_words`, or fewer than 16 items.
    """
    from megatron_prealign.evaluate.knowledge import tokenizes_as_parts

    frequent = set(frequent_words)
    missing = sorted((set(ORDINALS) | set(TEMPLATE_WORDS)) - frequent)
    if missing:
        raise ValueError(f"transfer probe: {missing} are not frequent enough to be dictionary words; "
                         f"raise --dictionary-size")
    pool = [w for w in frequent_words
            if w.isalpha() and w.islower() and len(w) >= 4 and w not in ORDINALS
            and tokenizes_as_parts(tokenizer, "word, word: the first is", w)]
    if len(pool) < 4 * NUM_ITEMS:
        raise ValueError(f"transfer probe: only {len(pool)} usable item words; raise --dictionary-size")
    rng = np.random.default_rng([seed, 0x7F5])
    order = rng.permutation(len(pool))
    half = len(pool) // 2
    train_items = sorted(pool[i] for i in order[:half])
    test_items = sorted(pool[i] for i in order[half:])

    def examples(items: list[str], count: int) -> list[list[Any]]:
        rows = []
        for j in range(count):
            pick = rng.choice(len(items), size=NUM_ITEMS, replace=False)
            rows.append([[items[i] for i in pick], j % NUM_ITEMS])  # ordinals exactly balanced
        shuffled = rng.permutation(count)
        return [rows[i] for i in shuffled]

    return TransferProbe(train_items=train_items, test_items=test_items,
                         train_examples=examples(train_items, num_train), test_examples=examples(test_items, num_test))


def evaluate_transfer(model, tokenizer, probe: TransferProbe, *, clone_offset: int = 0,
                      batch_size: int = 64) -> dict[str, Any]:
    """Accuracy of picking the ordinal's item among the four (chance 1/4).

    Returns:
        ``accuracy``, ``chance``, ``n``, ``per_ordinal`` accuracies, ``margin`` (mean log-prob of
        the right item minus the mean of the others).
    """
    from megatron_prealign.evaluate.scoring import continuation_logprobs

    queries = probe.queries(tokenizer, clone_offset=clone_offset)
    items = [(q["prompt"], c) for q in queries for c in q["candidates"]]
    scores = continuation_logprobs(model, items, batch_size=batch_size).reshape(len(queries), NUM_ITEMS)
    answers = np.array([q["answer"] for q in queries])
    true = scores[np.arange(len(queries)), answers]
    others = scores.copy()
    others[np.arange(len(queries)), answers] = -np.inf
    hits = true > others.max(axis=1)
    others[np.arange(len(queries)), answers] = np.nan
    margins = true - np.nanmean(others, axis=1)
    ordinals = np.array([q["ordinal"] for q in queries])
    return {
        "accuracy": float(hits.mean()),
        "chance": probe.chance,
        "n": len(queries),
        "per_ordinal": {o: float(hits[ordinals == o].mean()) for o in ORDINALS if (ordinals == o).any()},
        "margin": float(np.mean(margins)),
    }
