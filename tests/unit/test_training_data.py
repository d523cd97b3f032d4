"""`training.data.counting`: switch statistics and the data-wait time of the batches consumed."""
from __future__ import annotations

import time

import torch

from megatron_prealign.training.data import SwitchCounter, counting


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
