"""Margin pair loss: dense ≡ reference, hand-computed values, finite gradient at d = 0."""

from __future__ import annotations

import pytest
import torch

from contrastkit.losses import MarginPairLoss, margin_pair


@pytest.mark.parametrize("n", [1, 2, 5, 33])
@pytest.mark.parametrize("d", [1, 3, 64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dense_equals_reference(n, d, reduction, value_and_grads, close):
    gen = torch.Generator().manual_seed(n + d)
    x1 = torch.randn(n, d, dtype=torch.float64, generator=gen)
    x2 = (x1 + 0.3 * torch.randn(n, d, dtype=torch.float64, generator=gen)).requires_grad_()
    x1.requires_grad_()
    same = torch.arange(n) % 2 == 0
    results = [
        value_and_grads(
            lambda impl=impl: margin_pair(
                x1, x2, same, margin=1.5, reduction=reduction, impl=impl
            ).sum(),
            x1,
            x2,
        )
        for impl in ("reference", "dense")
    ]
    (ref, ref_grads), (dense, dense_grads) = results
    close(dense, ref, torch.float64)
    for got, want in zip(dense_grads, ref_grads, strict=True):
        close(got, want, torch.float64)


def test_values_by_hand():
    x1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    x2 = torch.tensor([[3.0, 4.0], [0.3, 0.4], [3.0, 4.0]])  # d = 5, 0.5, 5
    same = torch.tensor([1, 0, 0])
    per = margin_pair(x1, x2, same, margin=2.0, reduction="none")
    # similar: ½·25; dissimilar inside the margin: ½·(2 − 0.5)²; beyond it: 0
    torch.testing.assert_close(per, torch.tensor([12.5, 1.125, 0.0]))


@pytest.mark.parametrize("impl", ["reference", "dense"])
def test_gradient_finite_at_zero_distance(impl):
    x1 = torch.tensor([[1.0, 2.0], [1.0, 2.0]], requires_grad=True)
    x2 = torch.tensor([[1.0, 2.0], [1.0, 2.0]], requires_grad=True)
    loss = margin_pair(x1, x2, torch.tensor([True, False]), impl=impl)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(0.25))  # (0 + ½·1²) / 2
    assert torch.equal(x1.grad, torch.zeros_like(x1))
    assert torch.equal(x2.grad, torch.zeros_like(x2))


def test_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen)
    same = torch.tensor([1, 0, 1, 0, 0, 1])
    assert torch.autograd.gradcheck(
        lambda a, b: margin_pair(a, b, same, 2.0), (x1.requires_grad_(), x2.requires_grad_())
    )


def test_module_and_bool_same():
    x1, x2 = torch.randn(2, 4, 3)
    same = torch.tensor([True, False, True, False])
    torch.testing.assert_close(
        MarginPairLoss(margin=0.5)(x1, x2, same), margin_pair(x1, x2, same.long(), 0.5)
    )
