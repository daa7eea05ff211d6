import itertools
import math

import pytest

from contrastkit.train.schedules import warmup_cosine


def values(total_steps: int, warmup_steps: int) -> list[float]:
    """The multiplier of every step of a run."""
    return [
        warmup_cosine(s, total_steps=total_steps, warmup_steps=warmup_steps)
        for s in range(total_steps)
    ]


def test_warmup_is_linear_up_to_one():
    v = values(total_steps=20, warmup_steps=4)
    assert v[:4] == [0.25, 0.5, 0.75, 1.0]
    assert len(v) == 20


def test_cosine_values():
    # W = 0, T = 10: f(s) = (1 + cos(π s / 10)) / 2
    v = values(total_steps=10, warmup_steps=0)
    assert v[0] == 1.0
    assert v[5] == pytest.approx(0.5)
    assert v[9] == pytest.approx((1 + math.cos(math.pi * 0.9)) / 2)
    assert all(a > b for a, b in itertools.pairwise(v))  # strictly decreasing
    # after warm-up the cosine starts from 1 again at step W
    assert warmup_cosine(4, total_steps=20, warmup_steps=4) == 1.0
    assert warmup_cosine(12, total_steps=20, warmup_steps=4) == pytest.approx(0.5)


def test_the_end_and_past_it():
    assert warmup_cosine(10, total_steps=10, warmup_steps=0) == pytest.approx(0.0)  # step T
    assert warmup_cosine(50, total_steps=10, warmup_steps=0) == pytest.approx(0.0)
    assert warmup_cosine(9, total_steps=10, warmup_steps=0) > 0.0  # the last step: just above


def test_invalid_arguments():
    with pytest.raises(ValueError):
        warmup_cosine(0, total_steps=5, warmup_steps=6)
    with pytest.raises(ValueError):
        warmup_cosine(0, total_steps=0, warmup_steps=0)
