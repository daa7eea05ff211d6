"""Shared helpers for the loss tests: values and gradients of a loss in one call."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

ValueAndGrads = Callable[..., tuple[Tensor, list[Tensor]]]


def _value_and_grads(loss_fn: Callable[[], Tensor], *leaves: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Return ``loss_fn()`` detached and d loss / d leaf for every leaf (zeros if unused)."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else ()
    out = [
        torch.zeros_like(leaf) if g is None else g
        for leaf, g in zip(leaves, grads or [None] * len(leaves), strict=True)
    ]
    return loss.detach(), out


@pytest.fixture
def value_and_grads() -> ValueAndGrads:
    return _value_and_grads


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype) -> None:
    """Tolerance ~1e-10 in float64, ~1e-5 in float32 (relative and absolute)."""
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


@pytest.fixture
def close() -> Callable[[Tensor, Tensor, torch.dtype], None]:
    return assert_close
