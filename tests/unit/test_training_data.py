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
