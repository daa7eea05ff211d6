"""Learning-rate schedule: linear warm-up, then cosine decay, one value per optimisation step."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, *, total_steps: int, warmup_steps: int, final_ratio: float = 0.0
) -> float:
    r"""Multiplier of the peak learning rate at ``step`` (0-based), a pure function.

    .. math::
        f(s) = \frac{s + 1}{W} \; (s < W), \qquad
        f(s) = r + (1 - r) \cdot \tfrac12 \left(1 + \cos \frac{π (s - W)}{T - W}\right) \; (s ≥ W)

    with W warm-up steps, T total steps and r = ``final_ratio``: the warm-up reaches 1 at its
    last step and the cosine goes from 1 at step W to r at step T (never reached: the last
    step T - 1 is just above r). Stepped per iteration (sthalles#8 stepped per epoch).

    Args:
        step: The optimisation step, 0 ≤ step.
        total_steps: T ≥ 1, the number of steps of the whole run.
        warmup_steps: W, 0 ≤ W ≤ T.
        final_ratio: r, the value the cosine tends to.

    Returns:
        The multiplier in [r, 1].
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps})")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_values(
    *, total_steps: int, warmup_steps: int, final_ratio: float = 0.0
) -> list[float]:
    """All multipliers of a run, one per step (length ``total_steps``), for plots and tests."""
    values = [
        warmup_cosine(
            s, total_steps=total_steps, warmup_steps=warmup_steps, final_ratio=final_ratio
        )
        for s in range(total_steps)
    ]
    assert len(values) == total_steps
    return values
