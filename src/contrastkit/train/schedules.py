"""Learning-rate schedule: linear warm-up, then cosine decay, one value per optimisation step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int) -> float:
    r"""Multiplier of the peak learning rate at ``step`` (0-based), a pure function.

    .. math::
        f(s) = \frac{s + 1}{W} \; (s < W), \qquad
        f(s) = \tfrac12 \left(1 + \cos \frac{π (s - W)}{T - W}\right) \; (s ≥ W)

    with W warm-up steps and T total steps: the warm-up reaches 1 at its last step and the
    cosine goes from 1 at step W to 0 at step T (never reached: the last step T - 1 is just
    above 0). Stepped per iteration (sthalles#8 stepped per epoch).

    Args:
        step: The optimisation step, 0 ≤ step.
        total_steps: T ≥ 1, the number of steps of the whole run.
        warmup_steps: W, 0 ≤ W ≤ T.

    Returns:
        The multiplier in [0, 1].
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps})")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
