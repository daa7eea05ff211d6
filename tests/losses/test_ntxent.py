"""NT-Xent: dense ≡ reference, closed forms, numerics, gradcheck."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from contrastkit.losses import NTXentLoss, nt_xent, reference, supcon


@pytest.mark.parametrize(
    ("n", "d", "tau"), list(itertools.product((1, 2, 5, 33), (1, 3, 64), (0.05, 0.1, 0.5, 1.0)))
)
def test_fast_impls_equal_reference(n, d, tau, value_and_grads, close):
    gen = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(2, n, d, dtype=torch.float64, generator=gen)
    z1.requires_grad_()
    z2.requires_grad_()
    temperature = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    ref, ref_grads = value_and_grads(
        lambda: nt_xent(z1, z2, temperature, impl="reference"), z1, z2, temperature
    )
    for impl, options in (("dense", {}), ("tiled", {"tile_size": 8})):
        value, grads = value_and_grads(
            lambda impl=impl, options=options: nt_xent(z1, z2, temperature, impl=impl, **options),
            z1,
            z2,
            temperature,
        )
        close(value, ref, torch.float64)
        for got, want in zip(grads, ref_grads, strict=True):
            close(got, want, torch.float64)


def test_float32_agrees_with_float64_reference(close):
    gen = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 40, 32, generator=gen)
    close(nt_xent(z1, z2, 0.1), reference.nt_xent(z1, z2, 0.1), torch.float32)


# closed forms on every impl; tile_size=3 splits the tiled matrix into several tiles
IMPLS = ["reference", "dense", "tiled"]


@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("impl", IMPLS)
def test_identical_embeddings_give_log_2n_minus_1(n, impl):
    z = torch.ones(n, 4, dtype=torch.float64)
    loss = nt_xent(z, z.clone(), temperature=0.5, impl=impl, tile_size=3)
    torch.testing.assert_close(loss, torch.tensor(math.log(2 * n - 1), dtype=torch.float64))


@pytest.mark.parametrize("impl", IMPLS)
def test_orthogonal_pairs_by_hand(impl):
    # sample k's two views are both e_k: s_ip = 1, every other similarity 0.
    # ℓ = −log(e^{1/τ} / (e^{1/τ} + (2N − 2)·e^0)) for every anchor.
    n, tau = 3, 0.2
    z = torch.eye(n, dtype=torch.float64)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    torch.testing.assert_close(
        nt_xent(z, z.clone(), tau, impl=impl, tile_size=3),
        torch.tensor(expected, dtype=torch.float64),
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_opposite_views_by_hand(impl):
    # N = 2, views of sample 0: e0 and −e0; of sample 1: e1 and −e1 (D = 2).
    # anchor e0: positive −e0 (s = −1), others e1, −e1 (s = 0):
    # ℓ = −log(e^{−1/τ} / (e^{−1/τ} + 2)).
    tau = 0.5
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    expected = -math.log(math.exp(-1 / tau) / (math.exp(-1 / tau) + 2))
    torch.testing.assert_close(
        nt_xent(z1, -z1, tau, impl=impl, tile_size=3), torch.tensor(expected, dtype=torch.float64)
    )


def test_single_sample_is_zero():
    z1, z2 = torch.randn(1, 4), torch.randn(1, 4)
    assert nt_xent(z1, z2).item() == 0.0


def test_normalize_false_uses_raw_dot_products():
    z1 = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z2 = z1.clone()
    assert not torch.isclose(nt_xent(z1, z2, normalize=False), nt_xent(z1, z2))
    torch.testing.assert_close(
        nt_xent(z1, z2, normalize=False), reference.nt_xent(z1, z2, normalize=False)
    )


@pytest.mark.parametrize("impl", ["reference", "dense"])
def test_tau_1e_3_unnormalised_is_finite(impl):
    gen = torch.Generator().manual_seed(2)
    z1 = (5 * torch.randn(8, 16, generator=gen)).requires_grad_()
    z2 = (5 * torch.randn(8, 16, generator=gen)).requires_grad_()
    tau = torch.tensor(1e-3, requires_grad=True)
    loss = nt_xent(z1, z2, tau, normalize=False, impl=impl)
    loss.backward()
    assert torch.isfinite(loss)
    for g in (z1.grad, z2.grad, tau.grad):
        assert torch.isfinite(g).all()


def test_gradcheck():
    gen = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen)
    tau = torch.tensor(0.4, dtype=torch.float64)
    inputs = (z1.requires_grad_(), z2.requires_grad_(), tau.requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b, t: nt_xent(a, b, t), inputs)
    assert torch.autograd.gradcheck(lambda a, b, t: nt_xent(a, b, t, normalize=False), inputs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_float32_loss_and_half_grads(dtype):
    z1 = torch.randn(6, 8).to(dtype).requires_grad_()
    z2 = torch.randn(6, 8).to(dtype).requires_grad_()
    loss = nt_xent(z1, z2, 0.1)
    loss.backward()
    assert loss.dtype == torch.float32
    assert z1.grad.dtype == dtype
    torch.testing.assert_close(loss, nt_xent(z1.detach().float(), z2.detach().float(), 0.1))


def test_module():
    module = NTXentLoss(temperature=0.3)
    z1, z2 = torch.randn(2, 5, 4)
    torch.testing.assert_close(module(z1, z2), nt_xent(z1, z2, 0.3))
    assert "temperature=0.3" in repr(module)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(
    ("impl", "tile"), [("dense", None), ("tiled", None), ("tiled", 7), ("auto", None)]
)
# 192: the first N at which impl="auto" goes tiled (2N × 2N ≥ 384², test_tiled.py asserts it)
@pytest.mark.parametrize("n", [1, 5, 191, 192, 300])
def test_is_supcon_with_two_views_and_no_labels_bit_for_bit(n, impl, tile, normalize, dtype):
    # one implementation: nt_xent is the SupCon core, so values and gradients are equal to the
    # last bit (torch.equal, no tolerance), learnable τ included
    gen = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(2, n, 16, generator=gen, dtype=dtype)
    results = []
    for loss_fn in (
        lambda a, b, t: nt_xent(a, b, t, normalize=normalize, impl=impl, tile_size=tile),
        lambda a, b, t: supcon(
            torch.stack([a, b], 1), None, t, normalize=normalize, impl=impl, tile_size=tile
        ),
    ):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        tau = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        loss = loss_fn(a, b, tau)
        results.append((loss, *torch.autograd.grad(loss, [a, b, tau])))
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want), (got - want).abs().max()
