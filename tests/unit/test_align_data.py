"""Tier 1 (no devices): word-pair data, config validation and metric helpers of the pre-pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_prealign.align.data import (
    WordPairSampler,
    build_microbatches,
    clone_lexicon,
    pad_words,
    pool_masks,
    split_entries,
)
from megatron_prealign.align.metrics import evaluation_pairs, write_gap_plot
from megatron_prealign.align.prepass import AlignConfig
from megatron_prealign.lexicon import WORD_START, Lexicon


@pytest.fixture(scope="module")
def clone3():
    """40 groups: word, clone 1, clone 2 (clones are not each other's translations)."""
    return clone_lexicon(40, 30, num_clones=2, max_word_tokens=3, seed=1)


@pytest.fixture(scope="module")
def bank_lexicon():
    """bank <-> Ufer, bank <-> Bank (one group of three, Ufer and Bank not translations),
    house <-> Haus, and a long word (5 tokens) <-> its translation."""
    entries = [(10,), (11,), (12,), (13, 14), (15,), (20, 21, 22, 23, 24), (25,)]
    translations = [[1, 2], [0], [0], [4], [3], [6], [5]]
    return Lexicon.from_entries(entries, translations, np.full(32, WORD_START, dtype=np.uint8))


def test_clone_lexicon_structure(clone3):
    assert clone3.num_entries == 120
    for i in range(40):
        word = clone3.entry_tokens(i)
        assert list(clone3.translations(i)) == [40 + i, 80 + i]
        np.testing.assert_array_equal(clone3.entry_tokens(40 + i), word + 30)
        np.testing.assert_array_equal(clone3.entry_tokens(80 + i), word + 60)
        assert list(clone3.translations(40 + i)) == [i]
        assert clone3.group_id(i) == clone3.group_id(40 + i) == clone3.group_id(80 + i)


def test_split_entries_holds_out_whole_groups_deterministically(clone3):
    train, heldout = split_entries(clone3, 0.25, seed=5)
    assert len(np.intersect1d(train, heldout)) == 0
    assert len(train) + len(heldout) == clone3.num_entries
    groups = clone3.group_ids
    assert len(np.unique(groups[heldout])) == 10
    assert not set(groups[heldout]) & set(groups[train])
    again = split_entries(clone3, 0.25, seed=5)
    np.testing.assert_array_equal(again[1], heldout)
    assert not np.array_equal(split_entries(clone3, 0.25, seed=6)[1], heldout)
    assert len(split_entries(clone3, 0.0, seed=5)[1]) == 0
    with pytest.raises(ValueError, match="--align-heldout-fraction"):
        split_entries(clone3, 1.0, seed=5)


def test_split_entries_holds_out_only_groups_with_translations():
    entries = [(10,), (11,), (12,), (13,), (14,), (15,)]
    translations = [[1], [0], [], [], [5], [4]]  # entries 2 and 3 have no translation
    lexicon = Lexicon.from_entries(entries, translations, np.full(16, WORD_START, dtype=np.uint8))
    for seed in range(6):
        train, heldout = split_entries(lexicon, 0.5, seed)
        assert sorted(heldout.tolist()) in ([0, 1], [4, 5])
        assert {2, 3} <= set(train.tolist())


def test_sampler_draws_translation_pairs_from_its_split_deterministically(clone3):
    train, _ = split_entries(clone3, 0.25, seed=5)
    sampler = WordPairSampler(clone3, train, pairs_per_batch=16, seed=3, max_word_tokens=3)
    assert sampler.num_groups == 30 and sampler.num_anchors == 90  # 3-way groups
    pairs = sampler.global_pairs(7)
    assert pairs.shape == (16, 2) and pairs.dtype == np.int64
    for a, b in pairs:
        assert b in clone3.translations(a)
        assert a in train and b in train
    # Without replacement while there are enough anchors: every anchor at most once.
    assert len(set(pairs[:, 0].tolist())) == 16
    np.testing.assert_array_equal(sampler.global_pairs(7), pairs)
    assert not np.array_equal(sampler.global_pairs(8), pairs)
    other_seed = WordPairSampler(clone3, train, pairs_per_batch=16, seed=4, max_word_tokens=3)
    assert not np.array_equal(other_seed.global_pairs(7), pairs)
    # More pairs than anchors: anchors repeat.
    many = WordPairSampler(clone3, train, pairs_per_batch=128, seed=3, max_word_tokens=3).global_pairs(0)
    assert len(many) == 128 and len(set(many[:, 0].tolist())) <= 90


def test_every_entry_of_a_giant_component_is_an_anchor_as_often_as_the_others():
    """A real dictionary's function words join most entries into one component (a chain here:
    entry i translates i+1). Anchors are drawn per entry, so in 40 steps of 32 pairs every one of
    the 200 entries (chain of 150 plus 25 two-word groups) is drawn as an anchor, each about
    40 * 32 / 200 = 6.4 times (drawing components, the chain's words would be anchors 26 times
    less often than the pairs' words)."""
    chain = 150
    entries = [(10 + i,) for i in range(chain + 50)]
    translations = [[j for j in (i - 1, i + 1) if 0 <= j < chain] for i in range(chain)]
    translations += [[chain + (k ^ 1)] for k in range(50)]
    lexicon = Lexicon.from_entries(entries, translations, np.full(300, WORD_START, dtype=np.uint8))
    sampler = WordPairSampler(lexicon, np.arange(len(entries)), pairs_per_batch=32, seed=1, max_word_tokens=2)
    counts = np.bincount(np.concatenate([sampler.global_pairs(step)[:, 0] for step in range(40)]),
                         minlength=len(entries))
    assert counts.min() >= 1
    assert abs(counts[:chain].mean() - counts[chain:].mean()) < 1.0


def test_sampler_skips_words_longer_than_the_limit(bank_lexicon):
    sampler = WordPairSampler(bank_lexicon, np.arange(7), pairs_per_batch=50, seed=0, max_word_tokens=2)
    drawn = set(sampler.global_pairs(0).reshape(-1).tolist())
    assert drawn <= {0, 1, 2, 3, 4} and {5, 6}.isdisjoint(drawn)
    with pytest.raises(ValueError, match="--align-max-word-tokens"):
        WordPairSampler(bank_lexicon, np.array([5, 6]), pairs_per_batch=4, seed=0, max_word_tokens=2)


def test_pool_masks_are_pair_level(bank_lexicon):
    pool = np.array([0, 1, 2, 3, 4, 0])  # bank Ufer Bank house Haus bank(again)
    positive, negative = pool_masks(bank_lexicon, pool, pool)
    expected_positive = np.zeros((6, 6), dtype=bool)
    for i, j in [(0, 1), (0, 2), (1, 0), (2, 0), (3, 4), (4, 3), (5, 1), (5, 2), (1, 5), (2, 5)]:
        expected_positive[i, j] = True
    np.testing.assert_array_equal(positive, expected_positive)
    # Ufer and Bank share bank's component but are not translations of each other: negatives.
    assert not positive[1, 2] and negative[1, 2] and negative[2, 1]
    # A word is never its own positive or negative, nor is a repeat of it.
    assert not positive[0, 0] and not negative[0, 0] and not positive[0, 5] and not negative[0, 5]
    np.testing.assert_array_equal(negative[0], [False, False, False, True, True, False])
    np.testing.assert_array_equal(negative[1], [False, False, True, True, True, False])


def test_pad_words_tensors(bank_lexicon):
    t = pad_words(bank_lexicon, np.array([3, 0, 5]), seq_length=5, pad_id=2)
    assert t["tokens"].dtype == torch.int64 and t["loss_mask"].dtype == torch.float32
    assert t["tokens"].tolist() == [[13, 14, 2, 2, 2], [10, 2, 2, 2, 2], [20, 21, 22, 23, 24]]
    assert t["labels"].tolist() == [[14, 2, 2, 2, 2], [2, 2, 2, 2, 2], [21, 22, 23, 24, 2]]
    assert t["loss_mask"].tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]]
    assert t["word_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert t["position_ids"].tolist() == [list(range(5))] * 3


@pytest.mark.parametrize("dp_size", [2, 4])
def test_microbatches_split_the_same_global_batch_across_data_parallel_ranks(clone3, dp_size):
    train, _ = split_entries(clone3, 0.25, seed=5)
    pairs = WordPairSampler(clone3, train, pairs_per_batch=16, seed=3, max_word_tokens=3).global_pairs(0)
    single = build_microbatches(clone3, pairs, dp_rank=0, dp_size=1, num_microbatches=2, pad_id=0)
    ranks = [build_microbatches(clone3, pairs, dp_rank=r, dp_size=dp_size, num_microbatches=2, pad_id=0)
             for r in range(dp_size)]
    lengths = np.diff(clone3.entry_offsets)
    for micro in range(2):
        whole = single[micro]
        assert whole.tokens.shape == (16, int(lengths[pairs.reshape(-1)].max()))
        assert whole.entry_ids.tolist() == pairs[8 * micro:8 * (micro + 1)].reshape(-1).tolist()
        assert whole.num_pool_anchors == 16  # every word has its pair partner as a positive
        assert whole.num_words_global == 32
        assert whole.num_lm_tokens_global == int((lengths[pairs.reshape(-1)] - 1).sum())
        for key in ("tokens", "labels", "loss_mask", "word_mask", "entry_ids", "positive_mask", "negative_mask"):
            joined = torch.cat([getattr(r[micro], key) for r in ranks])
            assert torch.equal(joined, getattr(whole, key)), key
        assert [r[micro].pool_offset for r in ranks] == [16 // dp_size * r for r in range(dp_size)]
        assert all(r[micro].num_pool_anchors == whole.num_pool_anchors for r in ranks)
    with pytest.raises(ValueError, match="--align-pairs-per-batch"):
        build_microbatches(clone3, pairs, dp_rank=0, dp_size=3, num_microbatches=2, pad_id=0)


def test_evaluation_pairs(clone3):
    words = np.arange(0, 120, 2)
    aligned, random_pairs = evaluation_pairs(clone3, words, 300, seed=0)
    for i, j in aligned:
        assert i < j and words[j] in clone3.translations(words[i])
    expected = sum(1 for e in words for t in clone3.translations(e) if t > e and t in set(words))
    assert len(aligned) == expected > 0
    assert len(random_pairs) == 300
    groups = clone3.group_ids[words]
    assert np.all(groups[random_pairs[:, 0]] != groups[random_pairs[:, 1]])
    np.testing.assert_array_equal(evaluation_pairs(clone3, words, 300, seed=0)[1], random_pairs)


def test_align_config_defaults_and_layer_slots():
    cfg = AlignConfig()
    assert (cfg.lr, cfg.warmup_fraction, cfg.weight_decay, cfg.temperature) == (5e-4, 0.05, 0.1, 0.1)
    assert cfg.layer_slots(4) == (0, 1, 2, 3, 4, 5)
    assert AlignConfig(layers="top").layer_slots(4) == (4,)
    assert AlignConfig(layers="5, 0,2").layer_slots(4) == (0, 2, 5)
    with pytest.raises(ValueError, match="--align-layers"):
        AlignConfig(layers="0,6").layer_slots(4)


@pytest.mark.parametrize("kwargs, flag", [
    (dict(steps=-1), "--align-steps"),
    (dict(lr=0.0), "--align-lr"),
    (dict(min_lr=1.0), "--align-min-lr"),
    (dict(warmup_fraction=1.0), "--align-warmup-fraction"),
    (dict(weight_decay=-0.1), "--align-weight-decay"),
    (dict(clip_grad=-1.0), "--align-clip-grad"),
    (dict(temperature=0.0), "--align-temperature"),
    (dict(align_weight=-1.0), "--align-weight"),
    (dict(lm_weight=float("nan")), "--align-lm-weight"),
    (dict(collapse_weight=-0.5), "--align-collapse-weight"),
    (dict(align_weight=0.0, lm_weight=0.0), "all 0"),
    (dict(layers="top,1"), "--align-layers"),
    (dict(layers="1,1"), "--align-layers"),
    (dict(pairs_per_batch=0), "--align-pairs-per-batch"),
    (dict(pairs_per_batch=10, num_microbatches=3), "--align-num-microbatches"),
    (dict(max_word_tokens=0), "--align-max-word-tokens"),
    (dict(heldout_fraction=-0.1), "--align-heldout-fraction"),
    (dict(eval_max_words=1), "--align-eval-max-words"),
    (dict(log_interval=0), "--align-log-interval"),
])
def test_align_config_rejects_bad_values_naming_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        AlignConfig(**kwargs)


def test_write_gap_plot_writes_a_png(tmp_path):
    before = {"embedding": 0.01, "layer_1": -0.02, "output_embedding": 0.0}
    after = {"embedding": 0.4, "layer_1": 0.6, "output_embedding": 0.3}
    path = tmp_path / "plots" / "alignment_gap.png"
    write_gap_plot({"before": before, "after": after}, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
