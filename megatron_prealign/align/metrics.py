"""The alignment gap: how much closer translations are than random word pairs, per layer slot.

    gap(slot) = mean cos(rep_slot(a), rep_slot(b)) over aligned pairs (a, b translations)
              - mean cos(rep_slot(x), rep_slot(y)) over random pairs (x, y in different groups)

with rep_slot the pooled word representation of capture.py (embedding output, each transformer
layer's output, output-embedding rows). Measured on a set of entries, normally the pre-pass's
held-out groups, so it shows whether alignment reached words outside the training pairs.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from megatron_prealign.align.capture import ChunkTaps, slot_names, unwrap_model
from megatron_prealign.align.data import WordMicrobatch, pad_words
from megatron_prealign.fileio import atomic_path
from megatron_prealign.lexicon import Lexicon
from megatron_prealign.platform import compute_device
from megatron_prealign.schedule import model_chunks, run_schedule

__all__ = ["alignment_gap", "evaluation_pairs", "write_gap_plot"]


def sequence_multiple(config, pg_collection) -> int:
    """Word sequences are padded to a multiple of this: the tensor-parallel size under sequence
    parallelism (each rank holds an equal slice of the positions), else 1."""
    return pg_collection.tp.size() if getattr(config, "sequence_parallel", False) else 1


def gap_words(lexicon: Lexicon, candidates=None, *, max_words: int, seed: int,
              max_word_tokens: int | None = None) -> np.ndarray:
    """The words an alignment gap is measured on: a seeded sample of whole translation groups of
    `candidates` (entry ids; default every entry), groups added in a seeded order while the
    total stays within `max_words`, so every chosen word keeps all its chosen translations.
    Entries longer than `max_word_tokens` are left out. Returns sorted entry ids.

    The one definition used by the pre-pass's before/after gap, the gap logged at every
    evaluation, and the evaluation tools, so the gaps they report are comparable.
    """
    groups_all = np.asarray(lexicon.group_ids, dtype=np.int64)
    ids = np.arange(len(groups_all)) if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
    if max_word_tokens is not None:
        ids = ids[np.diff(lexicon.entry_offsets)[ids] <= max_word_tokens]
    groups = groups_all[ids]
    order = np.random.default_rng([seed, 0xA11]).permutation(np.unique(groups))
    sizes = np.bincount(groups, minlength=int(groups_all.max(initial=-1)) + 1)
    keep = order[np.cumsum(sizes[order]) <= max_words]
    return ids[np.isin(groups, keep)]


def evaluation_pairs(lexicon: Lexicon, words: np.ndarray, num_random_pairs: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(aligned, random) index pairs into `words` (sorted unique entry ids).

    Aligned: every unordered translation pair with both words in `words`. Random: a seeded
    uniform sample of ordered pairs whose words lie in different translation groups.
    """
    words = np.asarray(words, dtype=np.int64)
    position = {int(e): i for i, e in enumerate(words)}
    aligned = [(i, position[int(t)]) for i, e in enumerate(words)
               for t in lexicon.translations(int(e)) if int(t) > e and int(t) in position]
    groups = np.asarray(lexicon.group_ids, dtype=np.int64)[words]
    rng = np.random.default_rng([seed, 0x6A9])
    chosen: list[np.ndarray] = []
    have, tries = 0, 0
    while have < num_random_pairs and tries < 64 and len(words) > 1:
        cand = rng.integers(0, len(words), size=(2 * num_random_pairs, 2))
        cand = cand[groups[cand[:, 0]] != groups[cand[:, 1]]]
        chosen.append(cand)
        have += len(cand)
        tries += 1
    random_pairs = np.concatenate(chosen)[:num_random_pairs] if chosen else np.zeros((0, 2), np.int64)
    return np.asarray(aligned, dtype=np.int64).reshape(-1, 2), random_pairs


def _mean_cosine(reps: torch.Tensor, pairs: np.ndarray) -> float:
    index = torch.from_numpy(pairs).to(reps.device)
    return float(F.cosine_similarity(reps[index[:, 0]], reps[index[:, 1]], dim=-1).mean().item())


def alignment_gap(model, lexicon: Lexicon, entry_ids, pg_collection, *, num_random_pairs: int = 4096,
                  seed: int = 0, micro_batch_size: int = 64, pad_id: int = 0) -> dict[str, float]:
    """Alignment gap per layer slot on words `entry_ids` (all ranks call it; forward only).

    Args:
        model: this rank's model chunk (DDP-wrapped or bare); its train/eval mode is restored.
        lexicon: the lexicon the entry ids refer to.
        entry_ids: entries to evaluate (normally the held-out ones); aligned pairs are the
            translation pairs among them.
        pg_collection: megatron-core ProcessGroupCollection (uses `.tp` and `.pp`).
        num_random_pairs: random different-group pairs that form the baseline.
        seed: seed of the random pairs.
        micro_batch_size: words per forward.
        pad_id: token id of padding slots.

    Returns:
        {slot name: gap} for every slot (`embedding`, `layer_1`.., `output_embedding`), the same
        on every rank. Pipeline stages each measure the slots they hold.
    """
    words = np.unique(np.asarray(entry_ids, dtype=np.int64))
    aligned, random_pairs = evaluation_pairs(lexicon, words, num_random_pairs, seed)
    if not len(aligned) or not len(random_pairs):
        raise ValueError(
            f"the {len(words)} evaluation entries contain {len(aligned)} translation pairs and "
            f"{len(random_pairs)} different-group pairs; the alignment gap needs both"
        )
    taps = ChunkTaps(model, tp_group=pg_collection.tp)
    chunks = model_chunks(model)
    names = slot_names(taps.num_layers)
    all_slots = range(len(names))
    lengths = np.diff(lexicon.entry_offsets)[words]
    multiple = sequence_multiple(unwrap_model(chunks[0]).config, pg_collection)
    seq_length = -(-int(lengths.max()) // multiple) * multiple
    num_batches = -(-len(words) // micro_batch_size)
    if len(chunks) > 1:  # the interleaved schedule runs at least PP microbatches
        num_batches = max(num_batches, pg_collection.pp.size())
    # Every microbatch has the same shape (pipeline stages exchange fixed-shape tensors): the
    # last one is filled up with repeats of the first word, which are dropped afterwards.
    padded = np.concatenate([words, np.full(num_batches * micro_batch_size - len(words), words[0])])
    device = compute_device()
    microbatches = []
    for i in range(num_batches):
        chunk = padded[i * micro_batch_size:(i + 1) * micro_batch_size]
        microbatches.append(WordMicrobatch(
            **pad_words(lexicon, chunk, seq_length, pad_id),
            entry_ids=torch.from_numpy(chunk.copy()),
            positive_mask=torch.zeros(len(chunk), 0, dtype=torch.bool),
            negative_mask=torch.zeros(len(chunk), 0, dtype=torch.bool),
            pool_offset=0, num_pool_anchors=0, num_lm_tokens_global=0, num_words_global=len(words),
        ).to(device))
    captured: dict[int, list[torch.Tensor]] = {slot: [] for slot in taps.stage_slots}

    def loss_func(batch, output_tensor):
        tap = taps.output_tap
        captured[tap.output_slot].append(tap.output_embedding_rep(batch))
        return output_tensor.float().sum() * 0, torch.tensor(0, dtype=torch.int, device=device), {}

    def forward_step(data_iterator, chunk):
        batch = next(data_iterator)
        with taps.for_model(chunk).forward(batch, all_slots) as forward:
            output = chunk(batch.tokens, batch.position_ids, None, labels=batch.labels)
        for slot, rep in forward.reps.items():
            captured[slot].append(rep)
        return output, (lambda out, b=batch: loss_func(b, out))

    was_training = chunks[0].training
    for chunk in chunks:
        chunk.eval()
    try:
        with taps.attached(), torch.no_grad():
            run_schedule(model, forward_step, [iter(microbatches) for _ in chunks], num_microbatches=num_batches,
                         seq_length=seq_length, micro_batch_size=micro_batch_size,
                         pg_collection=pg_collection, forward_only=True)
    finally:
        for chunk in chunks:
            chunk.train(was_training)

    gaps = torch.zeros(len(names), dtype=torch.float64, device=device)
    for slot in taps.stage_slots:
        reps = torch.cat(captured[slot])[: len(words)]
        gaps[slot] = _mean_cosine(reps, aligned) - _mean_cosine(reps, random_pairs)
    if dist.is_initialized() and pg_collection.pp is not None:
        dist.all_reduce(gaps, group=pg_collection.pp)  # stages hold disjoint slots
    return {name: float(value) for name, value in zip(names, gaps.tolist())}


def write_gap_plot(curves: dict[str, dict[str, float]], path: str | os.PathLike,
                   title: str = "Alignment gap by layer") -> None:
    """Write a PNG line plot of one or more {slot name: gap} curves (e.g. before / after).

    Uses matplotlib's Agg canvas directly (no pyplot global state, no display needed).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("writing the alignment-gap plot needs matplotlib "
                          "(pip install 'megatron_prealign[logging]')") from exc
    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    names = None
    for label, gaps in curves.items():
        names = names or list(gaps)
        axes.plot(range(len(names)), [gaps[n] for n in names], marker="o", label=label)
    axes.set_xticks(range(len(names or [])))
    axes.set_xticklabels(names or [], rotation=45, ha="right")
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_ylabel("cos(aligned) - cos(random)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
