"""Cross-lingual sentence retrieval: can a layer's mean-pooled hidden state find a sentence's
translation among N candidates?

    parallel pairs (src text, tgt text)
       |  read_parallel(path): JSONL, one {"src": ..., "tgt": ...} object per line
       |  tokenizer.encode (no BOS/EOS), cut to the model's context; pairs whose src or tgt
       |  repeats an earlier one are dropped (a repeated text would be a second right answer)
       v
    sentence_embeddings(model, token lists) -> fp32 [K, n, h]
       |  K slots: `embedding` (embedding output), `layer_1`..`layer_L` (transformer layer
       |  outputs), `final_norm` (the decoder's output after its final norm); each the mean over
       |  the sentence's tokens (padding excluded; attention is causal, so right padding never
       |  changes a real position)
       v
    retrieval_accuracy(...): for pair i, candidates = i and N-1 other pairs drawn from
       |  rng([seed, i]); src_i -> tgt is a hit when cos(src_i, tgt_i) is strictly above every
       |  other candidate's cos(src_i, tgt_j) (ties are misses); tgt -> src the same way round
       v
    {"src->tgt": {slot: top-1 accuracy}, "tgt->src": {...}, "chance": 1/N, "n": pairs, ...}

The capture is `align.capture.LayerTap` (the hooks the pre-pass pools words with), here pooling
whole sentences; the final norm's output is read from the decoder and the forward stops there,
so the output layer (vocabulary-sized) is never computed.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["check_candidates", "distinct_pairs", "encode_pairs", "read_parallel", "retrieval_accuracy", "retrieval_slot_names", "sentence_embeddings",
           "format_retrieval"]


def retrieval_slot_names(num_layers: int) -> list[str]:
    """Names of the slots sentence embeddings are taken at, in order."""
    return ["embedding", *(f"layer_{n}" for n in range(1, num_layers + 1)), "final_norm"]


def read_parallel(path: str | os.PathLike, flag: str = "--parallel-data") -> list[tuple[str, str]]:
    """(src, tgt) texts of a JSONL file: one ``{"src": text, "tgt": text}`` object per line
    (other keys are ignored, blank lines skipped).

    Raises:
        ValueError: one line naming the flag, the file, the line and what is wrong.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{flag} {path}: no such file (give a JSONL file of {{\"src\": ..., \"tgt\": ...}} lines)")
    pairs: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{flag} {path}:{number}: not a JSON object ({exc.msg}); expected "
                                     "one {\"src\": text, \"tgt\": text} object per line") from None
                if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("src", "tgt")):
                    raise ValueError(f"{flag} {path}:{number}: expected an object with string fields "
                                     "\"src\" and \"tgt\"")
                if not record["src"].strip() or not record["tgt"].strip():
                    raise ValueError(f"{flag} {path}:{number}: empty \"src\" or \"tgt\" text")
                pairs.append((record["src"], record["tgt"]))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not pairs:
        raise ValueError(f"{flag} {path}: no pairs")
    return pairs


def distinct_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """(the pairs whose src and tgt texts both appear for the first time, in order; how many
    were dropped). A repeated text would make a second candidate exactly as right as the true one."""
    seen_src: set[str] = set()
    seen_tgt: set[str] = set()
    kept = []
    for src, tgt in pairs:
        if src in seen_src or tgt in seen_tgt:
            continue
        seen_src.add(src)
        seen_tgt.add(tgt)
        kept.append((src, tgt))
    return kept, len(pairs) - len(kept)


def check_candidates(num_pairs: int, candidates: int, dropped: int = 0) -> None:
    """Raises ValueError (naming --retrieval-candidates) unless `num_pairs` distinct pairs give
    every sentence `candidates` candidates."""
    if candidates < 2:
        raise ValueError(f"--retrieval-candidates must be >= 2, got {candidates}")
    if num_pairs < candidates:
        raise ValueError(f"--retrieval-candidates {candidates} needs at least {candidates} distinct pairs, there are "
                         f"{num_pairs}" + (f" ({dropped} with a repeated text dropped)" if dropped else "")
                         + "; lower --retrieval-candidates or give more pairs")


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], *,
                 max_tokens: int) -> tuple[list[list[int]], list[list[int]], dict[str, int]]:
    """Token ids of each side (``tokenizer.encode``, no BOS/EOS) cut to `max_tokens`, of the
    `distinct_pairs`.

    Returns:
        (src ids, tgt ids, {"dropped_duplicates": pairs dropped, "truncated": sentences cut})
    """
    kept, dropped = distinct_pairs(pairs)
    src_ids, tgt_ids = [], []
    truncated = 0
    for src, tgt in kept:
        for text, out in ((src, src_ids), (tgt, tgt_ids)):
            ids = list(tokenizer.encode(text))
            if not ids:
                raise ValueError(f"the text {text[:40]!r} encodes to no tokens")
            if len(ids) > max_tokens:
                ids = ids[:max_tokens]
                truncated += 1
            out.append(ids)
    return src_ids, tgt_ids, {"dropped_duplicates": dropped, "truncated": truncated}


class _DecoderDone(Exception):
    """Raised by the decoder hook: everything wanted is captured; skip the output layer."""


@torch.no_grad()
def sentence_embeddings(model, sentences: Sequence[Sequence[int]], *, batch_size: int = 32,
                        pad_id: int = 0) -> torch.Tensor:
    """Mean-pooled hidden states of each token sequence at every slot of
    `retrieval_slot_names` -> fp32 ``[K, n, h]`` (on the model's device).

    Args:
        model: a bare, single-process GPTModel (`evaluate.load_model`); its mode is restored.
        sentences: non-empty token id sequences, each at most the model's context long.
        batch_size: sequences per forward (sorted by length, so padding stays small).
        pad_id: id written into padding positions (never pooled, never seen by real positions).
    """
    from megatron_prealign.align.capture import LayerTap, unwrap_model
    from megatron_prealign.align.data import WordMicrobatch
    from megatron_prealign.platform import compute_device

    module = unwrap_model(model)
    tap = LayerTap(module)
    num_layers = tap.num_layers
    if not (tap.pre_process and tap.post_process):
        raise ValueError("sentence embeddings need the whole model in one process (load it with evaluate.load_model)")
    device = compute_device()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    if any(len(s) == 0 for s in sentences):
        raise ValueError("sentence_embeddings: empty token sequence")
    final = {}

    def decoder_hook(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        final["rep"] = tap._pool(hidden, tap.current.batch)
        raise _DecoderDone

    slots = list(range(num_layers + 1))
    out: torch.Tensor | None = None
    was_training = module.training
    module.eval()
    handle = None
    try:
        with tap.attached():
            handle = module.decoder.register_forward_hook(decoder_hook)
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                width = max(len(sentences[i]) for i in rows)
                tokens = torch.full((len(rows), width), pad_id, dtype=torch.int64)
                mask = torch.zeros((len(rows), width), dtype=torch.float32)
                for j, i in enumerate(rows):
                    tokens[j, :len(sentences[i])] = torch.as_tensor(list(sentences[i]), dtype=torch.int64)
                    mask[j, :len(sentences[i])] = 1.0
                positions = torch.arange(width, dtype=torch.int64).unsqueeze(0).expand_as(tokens).contiguous()
                empty = torch.zeros(len(rows), 0, dtype=torch.bool)
                batch = WordMicrobatch(tokens=tokens, labels=tokens, loss_mask=mask, word_mask=mask,
                                       position_ids=positions, entry_ids=torch.zeros(len(rows), dtype=torch.int64),
                                       positive_mask=empty, negative_mask=empty, pool_offset=0, num_pool_anchors=0,
                                       num_lm_tokens_global=0, num_words_global=len(rows)).to(device)
                with tap.forward(batch, slots) as forward:
                    try:
                        module(batch.tokens, batch.position_ids, None)
                    except _DecoderDone:
                        pass
                    else:
                        raise RuntimeError("the model's decoder did not run its forward hook")
                reps = [forward.reps[slot] for slot in slots] + [final.pop("rep")]
                if out is None:
                    out = torch.empty((len(reps), len(sentences), reps[0].shape[-1]), dtype=torch.float32,
                                      device=reps[0].device)
                index = torch.as_tensor(rows, device=out.device)
                out[:, index] = torch.stack(reps).float()
    finally:
        if handle is not None:
            handle.remove()
        module.train(was_training)
    assert out is not None
    return out


def candidate_indices(n: int, candidates: int, seed: int) -> np.ndarray:
    """int64 ``[n, candidates]``: row i is i followed by `candidates` - 1 distinct other indices,
    drawn from ``rng([seed, i])`` (so a pair's candidates do not depend on the others' draws)."""
    out = np.empty((n, candidates), dtype=np.int64)
    out[:, 0] = np.arange(n)
    for i in range(n):
        others = np.random.default_rng([seed, i]).choice(n - 1, size=candidates - 1, replace=False)
        out[i, 1:] = others + (others >= i)
    return out


def _top1(queries: torch.Tensor, keys: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Per slot: share of rows whose true key (column 0 of `cand`) scores strictly above every
    other candidate; queries and keys are unit vectors ``[K, n, h]``. Scores are computed against
    all keys a block of rows at a time (a matrix product) and the candidates picked from them."""
    num_slots, n, _ = keys.shape
    hits = torch.zeros(num_slots, dtype=torch.float64, device=queries.device)
    step = max(1, (1 << 24) // n)
    for slot in range(num_slots):
        for start in range(0, n, step):
            c = cand[start:start + step]  # [m, N]
            scores = torch.gather(queries[slot, start:start + step] @ keys[slot].T, 1, c)  # [m, N]
            hits[slot] += (scores[:, 0] > scores[:, 1:].amax(dim=1)).double().sum()
    return hits / n


def retrieval_accuracy(model, tokenizer, pairs: Sequence[tuple[str, str]], *, candidates: int = 100,
                       seed: int = 0, batch_size: int = 32, max_tokens: int | None = None) -> dict[str, Any]:
    """Top-1 accuracy of finding each sentence's translation among `candidates` candidates by
    cosine of mean-pooled hidden states, per slot, both directions (see the module docstring).

    Args:
        model: a bare single-process GPTModel (`evaluate.load_model(...).model`).
        tokenizer: the model's tokenizer (``lexicon.build_tokenizer``); callers check its
            fingerprint against the checkpoint's.
        pairs: (src text, tgt text) translations, e.g. from `read_parallel`.
        candidates: N, the true translation and N-1 others; at most the number of distinct pairs.
        seed: seed of the candidate draws.
        batch_size: sentences per forward.
        max_tokens: sentences are cut to this many tokens (default: the model's seq_length).

    Returns:
        ``{"src->tgt": {slot: acc}, "tgt->src": {slot: acc}, "chance": 1/N, "candidates": N,
        "n": pairs measured, "dropped_duplicates": ..., "truncated": ..., "seed": seed}``

    Raises:
        ValueError: too few pairs for `candidates`, or a text with no tokens.
    """
    from megatron_prealign.align.capture import unwrap_model

    config = unwrap_model(model).config
    if max_tokens is None:
        max_tokens = int(getattr(unwrap_model(model), "max_sequence_length", 0) or 0) or 1 << 30
    src_ids, tgt_ids, counts = encode_pairs(tokenizer, pairs, max_tokens=max_tokens)
    n = len(src_ids)
    check_candidates(n, candidates, counts["dropped_duplicates"])
    pad_id = int(getattr(tokenizer, "pad", 0))
    emb = sentence_embeddings(model, src_ids + tgt_ids, batch_size=batch_size, pad_id=pad_id)
    emb = torch.nn.functional.normalize(emb, dim=-1)
    src, tgt = emb[:, :n], emb[:, n:]
    cand = torch.from_numpy(candidate_indices(n, candidates, seed)).to(emb.device)
    names = retrieval_slot_names(config.num_layers)
    forward = _top1(src, tgt, cand).tolist()
    backward = _top1(tgt, src, cand).tolist()
    return {"src->tgt": dict(zip(names, forward)), "tgt->src": dict(zip(names, backward)),
            "chance": 1.0 / candidates, "candidates": candidates, "n": n, "seed": seed, **counts}


def format_retrieval(result: dict[str, Any]) -> list[str]:
    """Summary lines of a `retrieval_accuracy` result: one per slot with both directions."""
    lines = [f"retrieval   top-1 among {result['candidates']} candidates, {result['n']} pairs, chance "
             f"{result['chance']:.4f}" + (f" ({result['dropped_duplicates']} repeated pairs dropped)"
                                         if result.get("dropped_duplicates") else "")
             + (f" ({result['truncated']} sentences cut to the context)" if result.get("truncated") else "")]
    for slot, acc in result["src->tgt"].items():
        lines.append(f"retrieval   {slot:<12} src->tgt {acc:7.4f}  tgt->src {result['tgt->src'][slot]:7.4f}")
    return lines
