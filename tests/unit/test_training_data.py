"""`training.data`: the code-switch knobs of `DataConfig` (their one owner), and `counting`:
switch statistics and the data-wait time of the batches consumed."""
from __future__ import annotations

import time

import pytest
import torch

from megatron_prealign.training.data import DataConfig, SwitchCounter, counting


def test_codeswitch_knobs_are_validated_naming_the_flag():
    assert DataConfig(lexicon="x.lex").codeswitch_ratio == 0.0  # --codeswitch-ratio's one default
    DataConfig(codeswitch_ratio=0.0)  # no lexicon needed when switching is off
    DataConfig(codeswitch_ratio=0.05, lexicon="x.lex", codeswitch_seed=2**64 - 1)
    with pytest.raises(ValueError, match="--codeswitch-ratio"):
        DataConfig(codeswitch_ratio=1.5, lexicon="x.lex")
    with pytest.raises(ValueError, match="--codeswitch-ratio"):
        DataConfig(codeswitch_ratio=float("nan"), lexicon="x.lex")
    with pytest.raises(ValueError, match="--codeswitch-ratio"):
        DataConfig(codeswitch_ratio="0.1", lexicon="x.lex")
    with pytest.raises(ValueError, match="--codeswitch-seed"):
        DataConfig(codeswitch_seed=-1, lexicon="x.lex")
    with pytest.raises(ValueError, match="--codeswitch-seed"):
        DataConfig(codeswitch_seed=2**64, lexicon="x.lex")
    with pytest.raises(ValueError, match="--lexicon"):
        DataConfig(codeswitch_ratio=0.1)


def slow_batches(n: int, delay: float):
    for i in range(n):
        time.sleep(delay)
        yield {"tokens": torch.full((2, 4), i), "cs_switched_words": torch.tensor([1, 2]),
               "cs_eligible_words": torch.tensor([10, 10])}


def test_counting_sums_switches_and_times_the_wait():
    counter = SwitchCounter()
    batches = list(counting(slow_batches(3, 0.02), counter))
    assert len(batches) == 3
    assert (counter.switched_words, counter.eligible_words, counter.tokens) == (9, 60, 24)
    assert 0.06 <= counter.data_wait_seconds < 1.0
    # Time spent by the consumer between batches is not data wait.
    counter.reset()
    assert counter.data_wait_seconds == 0.0
    for _ in counting(slow_batches(2, 0.0), counter):
        time.sleep(0.05)
    assert counter.data_wait_seconds < 0.05


def test_heldout_words_are_never_switched(tmp_path, data_prefixes, data_tokenizer, data_lexicon_path):
    """`codeswitch_exclude` (the pre-pass's held-out words): those entries lose their
    translations for the switcher, so they are neither eligible nor switched; the exclusion is
    part of the index cache key."""
    import numpy as np

    from megatron_prealign.data.dataset import load_lexicon_arrays
    from megatron_prealign.lexicon import load_lexicon
    from megatron_prealign.training.data import build_datasets

    lexicon = load_lexicon(data_lexicon_path)
    arrays, _, _ = load_lexicon_arrays(data_lexicon_path)
    translated = np.flatnonzero(np.diff(lexicon.translation_offsets) > 0)
    half = translated[::2]
    trimmed = arrays.without_sources(half)
    for entry in range(lexicon.num_entries):
        got = trimmed.translation_flat[trimmed.translation_offsets[entry]:trimmed.translation_offsets[entry + 1]]
        want = [] if entry in half else lexicon.translations(entry)
        assert list(got) == list(want), entry

    cfg = DataConfig(data_path=(data_prefixes[0],), split="100,0,0", tokenizer_model="x", lexicon=data_lexicon_path,
                     codeswitch_ratio=1.0, data_cache_path=str(tmp_path / "cache"))

    def totals(exclude):
        train = build_datasets(cfg, data_tokenizer, seq_length=32, seed=3, num_samples=[40, 0, 0],
                               is_built_on_rank=lambda: True, codeswitch_exclude=exclude)[0]
        samples = [train[i] for i in range(40)]
        return (sum(s["cs_switched_words"] for s in samples), sum(s["cs_eligible_words"] for s in samples),
                train.unique_description_hash)

    switched, eligible, key = totals(())
    assert switched == eligible > 0  # ratio 1: every eligible word is switched
    switched_half, eligible_half, key_half = totals(half)
    assert 0 < eligible_half < eligible and switched_half == eligible_half
    assert totals(translated)[:2] == (0, 0)
    assert len({key, key_half}) == 2


@pytest.mark.parametrize("argv, message", [
    (["--data-path", "0", "a", "1", "b"], "--data-path: blend weight 0 of a must be a positive number"),
    (["--data-path", "-0.5", "a", "1", "b"], "--data-path: blend weight -0.5 of a must be a positive number"),
    (["--train-data-path", "1", "a", "nan", "b"], "--train-data-path: blend weight nan of b must be a positive"),
    (["--data-path", "a", "--split", "98,2"], "--split '98,2': expected three comma-separated proportions"),
    (["--data-path", "a", "--split", "90,5,5,0"], "--split '90,5,5,0': expected three"),
    (["--data-path", "a", "--split", "a,b,c"], "--split 'a,b,c': expected three"),
    (["--data-path", "a", "--split", "0,0,0"], "--split '0,0,0': expected three"),
])
def test_blend_weights_and_split_are_command_line_errors(argv, message, capsys):
    """Refused where the command line is read (usage and one error line, exit code 2), not in
    megatron-core's dataset builder after the model is built."""
    from megatron_prealign.config import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err
    assert DataConfig(data_path=("1", "a", "2.5", "b"), split="969, 30, 1").blend() == (["a", "b"], [1.0, 2.5])


def test_a_split_without_documents_is_refused_before_megatron_core_loops_on_it(data_prefixes):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_prealign.data.integrity import DataError
    from megatron_prealign.training.data import check_split_documents

    prefix = str(data_prefixes[0])
    documents = len(IndexedDataset(prefix, mmap=True).document_indices) - 1
    assert documents < 500  # 969,30,1 rounds the test share to no document
    with pytest.raises(DataError, match=r"--split 969,30,1 leaves the test split of .*without a document"):
        check_split_documents([prefix], "969,30,1", [8, 8, 8])
    check_split_documents([prefix], "969,30,1", [8, 8, 0])  # no test samples asked for: fine
    check_split_documents([prefix], "80,10,10", [8, 8, 8])
