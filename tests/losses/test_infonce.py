"""InfoNCE: dense ≡ reference in all three negative modes, reductions, gradcheck."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from contrastkit.losses import InfoNCELoss, info_nce

MODES = ("in-batch", "unpaired", "paired")


def make_inputs(mode: str, n: int, m: int, d: int, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(n, d, dtype=dtype, generator=gen, requires_grad=True)
    key = torch.randn(n, d, dtype=dtype, generator=gen, requires_grad=True)
    negatives = {
        "in-batch": None,
        "unpaired": torch.randn(m, d, dtype=dtype, generator=gen, requires_grad=True),
        "paired": torch.randn(n, m, d, dtype=dtype, generator=gen, requires_grad=True),
    }[mode]
    negative_mode = "paired" if mode == "paired" else "unpaired"
    return query, key, negatives, negative_mode


@pytest.mark.parametrize(
    ("mode", "n", "d", "tau", "reduction"),
    list(itertools.product(MODES, (1, 2, 5, 33), (1, 3, 64), (0.05, 0.5), ("mean", "sum", "none"))),
)
def test_fast_impls_equal_reference(mode, n, d, tau, reduction, value_and_grads, close):
    query, key, negatives, negative_mode = make_inputs(mode, n, 7, d, seed=n + d)
    temperature = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    leaves = [query, key, temperature] + ([] if negatives is None else [negatives])
    results = [
        value_and_grads(
            lambda impl=impl: info_nce(
                query,
                key,
                negatives,
                temperature,
                negative_mode=negative_mode,
                reduction=reduction,
                impl=impl,
                **({"tile_size": 4} if impl == "tiled" else {}),
            ).sum(),
            *leaves,
        )
        for impl in ("reference", "dense", "tiled")
    ]
    ref, ref_grads = results[0]
    for value, grads in results[1:]:
        close(value, ref, torch.float64)
        for got, want in zip(grads, ref_grads, strict=True):
            close(got, want, torch.float64)


@pytest.mark.parametrize("impl", ["reference", "dense", "tiled"])
def test_by_hand_unpaired(impl):
    # q = e0, k = e0, negatives e1 and −e0: ℓ = −log(e^{1/τ}/(e^{1/τ} + e^0 + e^{−1/τ}))
    tau = 0.5
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    neg = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    e = math.exp(1 / tau)
    expected = -math.log(e / (e + 1 + 1 / e))
    torch.testing.assert_close(
        info_nce(q, q.clone(), neg, tau, impl=impl, tile_size=1),
        torch.tensor(expected, dtype=torch.float64),
    )


def test_reduction_none_shape_and_sum():
    query, key, negatives, _ = make_inputs("unpaired", 6, 4, 8, seed=0, dtype=torch.float32)
    per = info_nce(query, key, negatives, reduction="none")
    assert per.shape == (6,)
    torch.testing.assert_close(per.sum(), info_nce(query, key, negatives, reduction="sum"))
    torch.testing.assert_close(per.mean(), info_nce(query, key, negatives))


def test_gradcheck_all_modes():
    for mode in MODES:
        query, key, negatives, negative_mode = make_inputs(mode, 3, 2, 4, seed=1)
        tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        leaves = (query, key, tau) + (() if negatives is None else (negatives,))

        def loss(q, k, t, *neg, negative_mode=negative_mode):
            return info_nce(q, k, neg[0] if neg else None, t, negative_mode=negative_mode)

        assert torch.autograd.gradcheck(loss, leaves)


def test_module():
    module = InfoNCELoss(temperature=0.2, negative_mode="paired", reduction="sum")
    query, key, negatives, _ = make_inputs("paired", 4, 3, 5, seed=2, dtype=torch.float32)
    torch.testing.assert_close(
        module(query, key, negatives),
        info_nce(query, key, negatives, 0.2, negative_mode="paired", reduction="sum"),
    )
