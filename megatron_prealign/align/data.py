"""Word-pair batches for the alignment pre-pass, built from a compiled `Lexicon`.

Vocabulary (see megatron_prealign/lexicon): a *lexicon entry* is one tokenized word; its
*translations* are other entries; its *group* is the connected component of the translation
graph. Here a *pair* is (anchor entry, one of its translations) and a *word* is one entry fed to
the model as its own short sequence.

Layout of one step (every rank computes it; nothing is broadcast):

    (seed, step) --sample--> global pairs [P, 2] entry ids
        split into M global microbatches of P/M pairs      (M = num_microbatches; the
                                                            contrastive pool is one of these)
        each split across D data-parallel ranks            (rank r takes pairs [r*P/(MD), ...))
        words of a rank's microbatch: a0 b0 a1 b1 ...      (b = 2P/(MD) words)

So the global batch, and the pool each word is contrasted against, do not depend on the
data-parallel degree: DP=2 sees exactly the words of DP=1, split in two.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from megatron_prealign.lexicon import Lexicon
from megatron_prealign.lexicon.tokenizer import WORD_START

__all__ = [
    "WordMicrobatch", "WordPairSampler", "build_microbatches", "clone_lexicon", "pad_words", "pool_masks",
    "split_entries", "steps_for_token_budget", "tokens_per_step",
]


def _eligible(lexicon: Lexicon, max_word_tokens: int) -> np.ndarray:
    lengths = np.diff(lexicon.entry_offsets)
    return (lengths >= 1) & (lengths <= max_word_tokens)


def split_entries(lexicon: Lexicon, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split entry ids into (train, held-out) by translation group.

    Whole groups are held out, so no held-out word has a translation (or a same-meaning
    sibling) among the training words. Only groups with at least two entries (words that have a
    translation) count: `round(heldout_fraction * number of such groups)` of them are drawn
    uniformly without replacement, a pure function of (group ids, seed). Entries without any
    translation stay in the training split, where the sampler ignores them.

    Returns:
        Two sorted int64 arrays of entry ids.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError("--align-heldout-fraction must be in [0, 1)")
    groups = np.asarray(lexicon.group_ids, dtype=np.int64)
    unique, counts = np.unique(groups, return_counts=True)
    translated = unique[counts >= 2]
    num_heldout = int(round(heldout_fraction * len(translated)))
    rng = np.random.default_rng([seed, 0x5EED_0F_A1])
    heldout_groups = rng.choice(translated, size=num_heldout, replace=False) if num_heldout else translated[:0]
    is_heldout = np.isin(groups, heldout_groups)
    ids = np.arange(lexicon.num_entries, dtype=np.int64)
    return ids[~is_heldout], ids[is_heldout]


class WordPairSampler:
    """Deterministic pairs from a subset of lexicon entries.

    An *anchor* is an entry of the subset with at most `max_word_tokens` tokens and at least one
    translation of that length in the subset. Each step draws `pairs_per_batch` anchors uniformly
    (without replacement when there are enough, else with) and one of each anchor's eligible
    translations uniformly, so every dictionary word is an anchor about equally often however
    the translation graph is connected (with real, polysemous dictionaries one connected
    component can hold a third of the entries; drawing components would starve its words).
    """

    def __init__(self, lexicon: Lexicon, entry_ids: np.ndarray, *, pairs_per_batch: int, seed: int,
                 max_word_tokens: int):
        if pairs_per_batch < 1:
            raise ValueError("--align-pairs-per-batch must be >= 1")
        self.lexicon = lexicon
        self.pairs_per_batch = pairs_per_batch
        self.seed = seed
        in_subset = np.zeros(lexicon.num_entries, dtype=bool)
        in_subset[np.asarray(entry_ids, dtype=np.int64)] = True
        ok = in_subset & _eligible(lexicon, max_word_tokens)
        anchors, trans_counts, trans_flat = [], [], []
        for entry in np.flatnonzero(ok):
            targets = lexicon.translations(int(entry))
            targets = targets[ok[targets]]
            if len(targets):
                anchors.append(entry)
                trans_counts.append(len(targets))
                trans_flat.append(targets)
        if not anchors:
            raise ValueError(
                f"no lexicon entry with <= {max_word_tokens} tokens has a translation of that length "
                "in the training split: check the lexicon, --align-max-word-tokens and "
                "--align-heldout-fraction"
            )
        anchors = np.asarray(anchors, dtype=np.int64)
        self._trans_offsets = np.concatenate([[0], np.cumsum(trans_counts)]).astype(np.int64)
        self._trans_flat = np.concatenate(trans_flat).astype(np.int64)
        self._anchors = anchors
        self.groups = np.unique(np.asarray(lexicon.group_ids, dtype=np.int64)[anchors])

    @property
    def num_groups(self) -> int:
        """Groups that can produce a pair."""
        return len(self.groups)

    @property
    def num_anchors(self) -> int:
        return len(self._anchors)

    def global_pairs(self, step: int) -> np.ndarray:
        """int64 [pairs_per_batch, 2]: (anchor, translation) entry ids of global batch `step`."""
        rng = np.random.default_rng([self.seed, step])
        replace = self.pairs_per_batch > self.num_anchors
        rows = rng.choice(self.num_anchors, size=self.pairs_per_batch, replace=replace)
        lo, hi = self._trans_offsets[rows], self._trans_offsets[rows + 1]
        chosen = lo + np.floor(rng.random(self.pairs_per_batch) * (hi - lo)).astype(np.int64)
        return np.stack([self._anchors[rows], self._trans_flat[chosen]], axis=1)


def tokens_per_step(lexicon: Lexicon, cfg, train_ids: np.ndarray, *, probe_steps: int = 64) -> float:
    """Mean word tokens one pre-pass step computes on (2 x pairs words, each padded to the step's
    longest word), over the first `probe_steps` global batches of the run's own sampler."""
    sampler = WordPairSampler(lexicon, train_ids, pairs_per_batch=cfg.pairs_per_batch, seed=cfg.seed,
                              max_word_tokens=cfg.max_word_tokens)
    lengths = np.diff(lexicon.entry_offsets)
    padded = [int(lengths[sampler.global_pairs(step).reshape(-1)].max()) for step in range(probe_steps)]
    return 2 * cfg.pairs_per_batch * float(np.mean(padded))


def steps_for_token_budget(lexicon: Lexicon, cfg) -> tuple[int, float]:
    """(steps, mean tokens per step) of a pre-pass sized by `cfg.token_budget` (AlignConfig)."""
    train_ids, _ = split_entries(lexicon, cfg.heldout_fraction, cfg.seed)
    per_step = tokens_per_step(lexicon, cfg, train_ids)
    return max(1, int(round(cfg.token_budget / per_step))), per_step


@dataclass
class WordMicrobatch:
    """One rank's share of one global microbatch: `b` words, each its own sequence of `s` slots.

    Token tensors are [b, s] with the word in positions 0..len-1 and padding after it; attention
    is causal, so padding never changes a word position's hidden state.
    """

    tokens: torch.Tensor
    """int64 [b, s]: word token ids, `pad_id` after the word."""
    labels: torch.Tensor
    """int64 [b, s]: next token of the word (labels[t] = tokens[t+1]); `pad_id` elsewhere."""
    loss_mask: torch.Tensor
    """float32 [b, s]: 1 where labels[t] is a token of the same word (t < len-1)."""
    word_mask: torch.Tensor
    """float32 [b, s]: 1 on the word's token positions (the positions pooled into its vector)."""
    position_ids: torch.Tensor
    """int64 [b, s]: 0..s-1 per row."""
    entry_ids: torch.Tensor
    """int64 [b]: lexicon entry of each word."""
    positive_mask: torch.Tensor
    """bool [b, W]: word i (this rank) and pool word k are translations (W = words in the global
    microbatch, in all-gather order)."""
    negative_mask: torch.Tensor
    """bool [b, W]: pool word k is a negative for word i: every other word of the pool that is not
    one of its direct translations (the word itself and its repeats are neither)."""
    pool_offset: int
    """Index of this rank's first word in the pool."""
    num_pool_anchors: int
    """Words of the whole pool that have at least one positive in it (the InfoNCE normalizer)."""
    num_lm_tokens_global: int
    """LM targets in the whole global batch, all microbatches and ranks (the LM normalizer)."""
    num_words_global: int
    """Words in the whole global batch (what this step's `num_tokens` adds up to)."""

    def to(self, device: torch.device) -> "WordMicrobatch":
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return WordMicrobatch(**fields)


def pad_words(lexicon: Lexicon, entry_ids: np.ndarray, seq_length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Token, label, mask and position tensors for words `entry_ids`, padded to `seq_length`."""
    num = len(entry_ids)
    tokens = np.full((num, seq_length), pad_id, dtype=np.int64)
    labels = np.full((num, seq_length), pad_id, dtype=np.int64)
    loss_mask = np.zeros((num, seq_length), dtype=np.float32)
    word_mask = np.zeros((num, seq_length), dtype=np.float32)
    for row, entry in enumerate(entry_ids):
        word = lexicon.entry_tokens(int(entry))
        n = len(word)
        if n > seq_length:
            raise ValueError(f"entry {entry} has {n} tokens, more than the sequence length {seq_length}")
        tokens[row, :n] = word
        labels[row, : n - 1] = word[1:]
        loss_mask[row, : n - 1] = 1.0
        word_mask[row, :n] = 1.0
    positions = np.broadcast_to(np.arange(seq_length, dtype=np.int64), (num, seq_length)).copy()
    return {
        "tokens": torch.from_numpy(tokens),
        "labels": torch.from_numpy(labels),
        "loss_mask": torch.from_numpy(loss_mask),
        "word_mask": torch.from_numpy(word_mask),
        "position_ids": torch.from_numpy(positions),
    }


def _translation_keys(lexicon: Lexicon) -> np.ndarray:
    """Sorted int64 keys `a * num_entries + b` for every translation edge a -> b."""
    counts = np.diff(lexicon.translation_offsets)
    sources = np.repeat(np.arange(lexicon.num_entries, dtype=np.int64), counts)
    return np.sort(sources * lexicon.num_entries + lexicon.translation_flat.astype(np.int64))


def _positive_pairs(lexicon: Lexicon, rows: np.ndarray, pool: np.ndarray,
                    keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, pool index) of every translation pair, without a [rows, pool] matrix:
    translations lie within a group, so only same-group candidates (found by sorting the pool
    by group) are looked up in the sorted edge keys."""
    groups = np.asarray(lexicon.group_ids, dtype=np.int64)
    row_groups, pool_groups = groups[rows], groups[pool]
    order = np.argsort(pool_groups, kind="stable")
    sorted_groups = pool_groups[order]
    lo = np.searchsorted(sorted_groups, row_groups, side="left")
    counts = np.searchsorted(sorted_groups, row_groups, side="right") - lo
    r = np.repeat(np.arange(len(rows)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    c = order[np.repeat(lo, counts) + within]
    if not len(keys):
        return r[:0], c[:0]
    pair = rows[r] * lexicon.num_entries + pool[c]
    hit = keys[np.minimum(np.searchsorted(keys, pair), len(keys) - 1)] == pair
    return r[hit], c[hit]


def pool_masks(lexicon: Lexicon, rows: np.ndarray, pool: np.ndarray,
               translation_keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) bool masks [len(rows), len(pool)] of words `rows` against the
    pool's words (both entry ids).

    Pair-level: positive where the pool word is a direct translation of the row word (an
    explicit multi-way entry lists every member as a translation of every other); negative for
    every other word, including words of the same connected component that are not direct
    translations (`bank` -> `Bank`, `bank` -> `Ufer` make `Bank` and `Ufer` negatives of each
    other). The row word itself and its repeats are neither (an entry is never its own
    translation).
    """
    keys = _translation_keys(lexicon) if translation_keys is None else translation_keys
    rows, pool = np.asarray(rows, dtype=np.int64), np.asarray(pool, dtype=np.int64)
    positive = np.zeros((len(rows), len(pool)), dtype=bool)
    r, c = _positive_pairs(lexicon, rows, pool, keys)
    positive[r, c] = True
    negative = (rows[:, None] != pool[None, :]) & ~positive
    return positive, negative


def build_microbatches(lexicon: Lexicon, pairs: np.ndarray, *, dp_rank: int, dp_size: int,
                       num_microbatches: int, pad_id: int, translation_keys: np.ndarray | None = None,
                       seq_multiple: int = 1) -> list[WordMicrobatch]:
    """This data-parallel rank's microbatches of global batch `pairs` (see the module docstring).

    All microbatches of the step share one sequence length, the longest word of the global
    batch rounded up to `seq_multiple` (the tensor-parallel size under sequence parallelism), so
    pipeline stages exchange tensors of one shape.
    """
    num_pairs = len(pairs)
    if num_pairs % (num_microbatches * dp_size):
        raise ValueError(
            f"--align-pairs-per-batch ({num_pairs}) must be divisible by --align-num-microbatches "
            f"({num_microbatches}) x data-parallel size ({dp_size})"
        )
    keys = _translation_keys(lexicon) if translation_keys is None else translation_keys
    words_global = pairs.reshape(-1)  # a0 b0 a1 b1 ...
    lengths = np.diff(lexicon.entry_offsets)
    seq_length = -(-int(lengths[words_global].max()) // seq_multiple) * seq_multiple
    num_lm_tokens = int((lengths[words_global] - 1).sum())
    pairs_per_micro = num_pairs // num_microbatches
    pairs_per_rank = pairs_per_micro // dp_size
    out = []
    for micro in range(num_microbatches):
        pool = pairs[micro * pairs_per_micro:(micro + 1) * pairs_per_micro].reshape(-1)
        offset = 2 * dp_rank * pairs_per_rank
        mine = pool[offset: offset + 2 * pairs_per_rank]
        positive, negative = pool_masks(lexicon, mine, pool, keys)
        anchors, _ = _positive_pairs(lexicon, pool, pool, keys)
        out.append(WordMicrobatch(
            **pad_words(lexicon, mine, seq_length, pad_id),
            entry_ids=torch.from_numpy(mine.copy()),
            positive_mask=torch.from_numpy(positive),
            negative_mask=torch.from_numpy(negative),
            pool_offset=offset,
            num_pool_anchors=len(np.unique(anchors)),
            num_lm_tokens_global=num_lm_tokens,
            num_words_global=len(words_global),
        ))
    return out


def clone_lexicon(num_words: int, base_vocab: int, *, num_clones: int = 1, max_word_tokens: int = 3,
                  first_token: int = 4, seed: int = 0) -> Lexicon:
    """A synthetic lexicon in the style of the English-Clone benchmark (docs/DESIGN.md §5), for tests,
    smoke runs and benchmarks without a tokenizer or dictionary files.

    `num_words` distinct random words of 1..`max_word_tokens` base tokens (ids `first_token` ..
    `first_token+base_vocab-1`); clone c (1..num_clones) of a word has every token shifted by
    `c*base_vocab`. Each word's translations are its clones and vice versa, but clones are not
    translations of each other, so with `num_clones >= 2` a group holds members that are neither
    positive nor negative for each other. The model vocabulary must have at least
    `first_token + (num_clones+1)*base_vocab` rows.
    """

    rng = np.random.default_rng(seed)
    if num_words > sum(base_vocab ** n for n in range(1, max_word_tokens + 1)):
        raise ValueError("not enough distinct token sequences for num_words")
    words: dict[tuple[int, ...], None] = {}
    while len(words) < num_words:
        length = int(rng.integers(1, max_word_tokens + 1))
        words[tuple(int(t) for t in first_token + rng.integers(0, base_vocab, size=length))] = None
    base = list(words)
    entry_tokens = list(base)
    translations: list[list[int]] = [[] for _ in base]
    for clone in range(1, num_clones + 1):
        for i, word in enumerate(base):
            entry_tokens.append(tuple(t + clone * base_vocab for t in word))
            translations.append([i])
            translations[i].append(len(entry_tokens) - 1)
    vocab = first_token + (num_clones + 1) * base_vocab
    return Lexicon.from_entries(entry_tokens, translations, np.full(vocab, WORD_START, dtype=np.uint8),
                                tokenizer_type="synthetic-clone")
