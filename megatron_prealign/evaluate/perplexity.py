"""Held-out perplexity of a token dataset (a megatron-core ``.bin/.idx`` prefix).

The documents (each ending with its end-of-document token, as preprocessing writes them) are
concatenated in order and cut into consecutive windows of ``seq_length + 1`` tokens, overlapping
by one (window i predicts tokens ``i*S+1 .. (i+1)*S``); every token after the first is predicted
exactly once, up to `max_tokens`. In the English-Clone setting the clone eval set is the English
one token for token (shifted), so the two perplexities are measured on the same text.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["dataset_perplexities", "format_perplexity", "heldout_perplexity", "parse_data_paths", "parse_named_prefix",
           "read_stream"]


def read_stream(prefix: str, max_tokens: int, *, tokenizer_fingerprint: str | None = None,
                vocab_size: int | None = None, documents: range | None = None) -> np.ndarray:
    """The first ``max_tokens + 1`` tokens of the concatenated documents of `prefix` (int64);
    `documents`: only these document indices, in order (default: all).

    The dataset is opened by ``integrity.open_token_dataset``: complete files, and tokens of the
    tokenizer with `tokenizer_fingerprint` (when its manifest records one) or ids below
    `vocab_size` (when it does not).
    """
    from megatron_prealign.data.integrity import open_token_dataset

    dataset = open_token_dataset(prefix, tokenizer_fingerprint=tokenizer_fingerprint, vocab_size=vocab_size,
                                 flag="--data-path")
    if documents is None:
        documents = range(len(dataset))
    elif documents.stop > len(dataset):
        raise ValueError(f"{prefix}: documents {documents.start}:{documents.stop} asked for, it has {len(dataset)}")
    parts, have = [], 0
    for i in documents:
        doc = np.array(dataset[i], dtype=np.int64)  # a copy: the mmap view dies with `dataset`
        parts.append(doc)
        have += len(doc)
        if have > max_tokens:
            break
    if not parts:
        raise ValueError(f"{prefix}: no documents" + (f" in {documents.start}:{documents.stop}"
                                                       if len(dataset) else ""))
    return np.concatenate(parts)[: max_tokens + 1]


@torch.no_grad()
def heldout_perplexity(model, prefix: str, *, seq_length: int, max_tokens: int = 32768,
                       batch_size: int = 16, tokenizer_fingerprint: str | None = None,
                       vocab_size: int | None = None, documents: range | None = None) -> dict[str, Any]:
    """Mean per-token loss and perplexity of `model` on `prefix`.

    Args:
        model: bare GPTModel (single process).
        prefix: token dataset prefix.
        seq_length: window length (the model's training context).
        max_tokens: predicted tokens at most (fewer if the dataset is smaller).
        batch_size: windows per forward.
        tokenizer_fingerprint: the model's tokenizer (its checkpoint records it), checked against
            the dataset's manifest.
        vocab_size: ids must be below it; None: the model's (padded) embedding size.
        documents: measure only these document indices (e.g. `split_documents`'s validation
            part); None: every document.

    Returns:
        ``loss`` (nats/token), ``ppl``, ``tokens`` (predicted tokens).
    """
    from megatron_prealign.evaluate.scoring import token_losses

    if vocab_size is None:
        vocab_size = getattr(model, "vocab_size", None)
    stream = torch.from_numpy(read_stream(prefix, max_tokens, tokenizer_fingerprint=tokenizer_fingerprint,
                                          vocab_size=vocab_size, documents=documents))
    if len(stream) < 2:
        raise ValueError(f"{prefix}: fewer than 2 tokens")
    num_windows = -(-(len(stream) - 1) // seq_length)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, num_windows, batch_size):
            rows = range(start, min(start + batch_size, num_windows))
            lengths = [min(seq_length, len(stream) - 1 - r * seq_length) for r in rows]
            width = max(lengths)
            tokens = torch.zeros((len(rows), width), dtype=torch.int64)
            labels = torch.zeros((len(rows), width), dtype=torch.int64)
            mask = torch.zeros((len(rows), width), dtype=torch.float64)
            for j, (r, n) in enumerate(zip(rows, lengths)):
                tokens[j, :n] = stream[r * seq_length : r * seq_length + n]
                labels[j, :n] = stream[r * seq_length + 1 : r * seq_length + n + 1]
                mask[j, :n] = 1.0
            losses = token_losses(model, tokens, labels).double().cpu()
            total += float((losses * mask).sum())
            count += int(mask.sum())
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "ppl": math.exp(loss), "tokens": count}


def parse_named_prefix(item: str) -> tuple[str, str]:
    """``NAME=PREFIX`` -> (name, prefix); a bare ``PREFIX`` is named by its file name.

    Raises:
        ValueError: naming ``--data-path`` and the expected form.
    """
    name, sep, prefix = item.partition("=")
    if not sep:
        name, prefix = Path(item).name, item
    if not name or not prefix:
        raise ValueError(f"--data-path expects PREFIX or NAME=PREFIX, got {item!r}")
    return name, prefix


def parse_data_paths(items: Sequence[str]) -> list[tuple[str, str]]:
    """`--data-path` as evaluation reads it: ``NAME=PREFIX`` or ``PREFIX`` items, or pretraining's
    ``W1 PREFIX1 W2 PREFIX2 ...`` (the weights do not matter to a per-dataset perplexity and are
    dropped), so the pretraining command's value can be pasted as is."""
    items = list(items)

    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    if len(items) >= 2 and len(items) % 2 == 0 and all(is_number(w) for w in items[0::2]):
        items = items[1::2]
    return [parse_named_prefix(item) for item in items]


def dataset_perplexities(model, named: Sequence[tuple[str, str]], *, seq_length: int, max_tokens: int = 32768,
                         batch_size: int = 16, tokenizer_fingerprint: str | None = None,
                         vocab_size: int | None = None,
                         documents: dict[str, range] | None = None) -> dict[str, dict[str, Any]]:
    """`heldout_perplexity` of `model` on each ``(name, prefix)``, by name; `documents`: by name,
    the document indices to measure (a name not in it: every document)."""
    documents = documents or {}
    return {name: heldout_perplexity(model, prefix, seq_length=seq_length, max_tokens=max_tokens,
                                     batch_size=batch_size, tokenizer_fingerprint=tokenizer_fingerprint,
                                     vocab_size=vocab_size, documents=documents.get(name))
            for name, prefix in named}


def format_perplexity(name: str, value: dict[str, Any]) -> str:
    """One summary line of a `heldout_perplexity` result."""
    return f"perplexity  {name:<10} {value['ppl']:10.2f}  (loss {value['loss']:.4f}, {value['tokens']} tokens)"
