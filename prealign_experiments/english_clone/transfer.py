"""Zero-shot cross-lingual transfer: a skill shown only in English, tested in the clone.

The skill is continuing a sequence of months with a fixed step:

    "March, May, July, September."        (step 2)      "November, December, January."  (step 1)

Training examples (English only, documents of ``text/transfer_en.jsonl``) have a random start,
a step of 1, 2 or 3 months (wrapping from December to January) and 3 to 5 months. The test asks
every start x step x number of given months (2, 3 or 4: ``"March, May, July,"``), 108 questions,
and ranks the twelve months by the summed log-probability of their tokens; the answer is the next
month of the sequence. Each month is the answer equally often, so a model that always names the
same month, or that ignores the sequence, scores the chance level 1/12.

Asked in English it measures whether the skill was learned; asked in the clone, whether it
transfers to a language it was never shown in. The month names themselves are ordinary words of
both languages (they occur in the clone text), and all of them are dictionary words; only the
procedure is English-only. (A first design, picking the k-th word of a list, was not learned even
in English by the demo's 4-layer model, which never formed the copying mechanism it needs.)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from megatron_prealign.fileio import atomic_path

__all__ = ["MONTHS", "STEPS", "TransferProbe", "evaluate_transfer", "make_transfer_probe"]

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
STEPS = (1, 2, 3)
GIVEN = (2, 3, 4)
"""Months given in a test prompt."""


def _sequence(start: int, step: int, length: int) -> list[str]:
    return [MONTHS[(start + i * step) % len(MONTHS)] for i in range(length)]


@dataclass
class TransferProbe:
    train_examples: list[list[int]]
    """``[start month index, step, number of months]`` rows."""
    test_examples: list[list[int]] = field(default_factory=list)
    """``[start, step, months given]`` rows: every combination."""

    @property
    def chance(self) -> float:
        return 1.0 / len(MONTHS)

    def required_words(self) -> list[str]:
        return sorted(MONTHS)

    def training_texts(self) -> list[str]:
        return [", ".join(_sequence(start, step, length)) + "." for start, step, length in self.train_examples]

    def summary(self) -> dict[str, Any]:
        return {"train_examples": len(self.train_examples), "test_examples": len(self.test_examples),
                "steps": list(STEPS), "chance": self.chance, "example": self.training_texts()[0]}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TransferProbe":
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def queries(self, tokenizer, *, clone_offset: int = 0, answer_offset: int | None = None) -> list[dict[str, Any]]:
        """Test queries: ``prompt`` ids (EOD first), ``candidates`` (the twelve months),
        ``answer``, ``step``; shifted into the clone by `clone_offset` (EOD stays shared), the
        candidates by `answer_offset` (default: `clone_offset`)."""
        eod = tokenizer.eod
        answer_offset = clone_offset if answer_offset is None else answer_offset
        candidates = [[i + answer_offset for i in tokenizer.encode_word(m)] for m in MONTHS]
        out = []
        for start, step, given in self.test_examples:
            months = _sequence(start, step, given + 1)
            prompt = [eod] + [i + clone_offset for i in tokenizer.encode(", ".join(months[:given]) + ",")]
            out.append({"prompt": prompt, "candidates": candidates, "answer": MONTHS.index(months[given]),
                        "step": step})
        return out


def make_transfer_probe(tokenizer, frequent_words: Sequence[str], num_train: int, *, seed: int) -> TransferProbe:
    """Build the probe (see module docstring).

    Raises:
        ValueError: a month is not among `frequent_words` (so would not be a dictionary word), or
            does not keep its own tokens inside a sequence.
    """
    from prealign_experiments.english_clone.knowledge import tokenizes_as_parts

    missing = [m for m in MONTHS if m not in set(frequent_words)]
    if missing:
        raise ValueError(f"transfer probe: {missing} are not frequent enough to be dictionary words; "
                         f"raise --dictionary-size")
    bad = [m for m in MONTHS if not tokenizes_as_parts(tokenizer, "March, April,", m)]
    if bad:
        raise ValueError(f"transfer probe: {bad} do not keep their tokens before a period")
    rng = np.random.default_rng([seed, 0x7F5])
    train = [[int(rng.integers(len(MONTHS))), int(rng.choice(STEPS)), int(rng.integers(3, 6))]
             for _ in range(num_train)]
    test = [[start, step, given] for given in GIVEN for step in STEPS for start in range(len(MONTHS))]
    return TransferProbe(train_examples=train, test_examples=test)


def evaluate_transfer(model, tokenizer, probe: TransferProbe, *, clone_offset: int = 0,
                      answer_offset: int | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy of ranking the next month first among the twelve (chance 1/12).

    Returns:
        ``accuracy``, ``chance``, ``n``, ``per_step`` accuracies, ``margin`` (mean log-prob of the
        right month minus the mean of the others).
    """
    from megatron_prealign.evaluate.scoring import continuation_logprobs

    queries = probe.queries(tokenizer, clone_offset=clone_offset, answer_offset=answer_offset)
    k = len(MONTHS)
    items = [(q["prompt"], c) for q in queries for c in q["candidates"]]
    scores = continuation_logprobs(model, items, batch_size=batch_size).reshape(len(queries), k)
    rows = np.arange(len(queries))
    answers = np.array([q["answer"] for q in queries])
    true = scores[rows, answers]
    others = scores.copy()
    others[rows, answers] = -np.inf
    hits = true > others.max(axis=1)
    margins = true - (scores.sum(axis=1) - true) / (k - 1)
    steps = np.array([q["step"] for q in queries])
    return {
        "accuracy": float(hits.mean()),
        "chance": probe.chance,
        "n": len(queries),
        "per_step": {str(s): float(hits[steps == s].mean()) for s in STEPS},
        "margin": float(margins.mean()),
    }
