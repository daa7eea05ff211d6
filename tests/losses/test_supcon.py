"""SupCon: dense ≡ reference over the grid, closed forms, edge cases, gradcheck."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from contrastkit.losses import SupConLoss, nt_xent, reference, supcon

NS = (1, 2, 5, 33)
VS = (1, 2, 3, 4)
DS = (1, 3, 64)
TAUS = (0.05, 0.1, 0.5, 1.0)
LABELS = ("none", "distinct", "repeated", "singletons")
MODES = ("all", "one")


def make_labels(kind: str, n: int) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "distinct":
        return torch.arange(n)
    if kind == "repeated":
        return torch.arange(n) % 3
    # classes of size 2 except every third sample, which is alone in its class
    return torch.tensor([100 + i if i % 3 == 2 else i // 3 for i in range(n)])


def grid() -> list[tuple[int, int, int, float, str, str]]:
    """Full product for N ≤ 5; for N = 33 every (V, labels, mode) with D and τ cycled."""
    cases = [
        (n, v, d, t, lab, mode)
        for n, v, d, t, lab, mode in itertools.product(NS[:3], VS, DS, TAUS, LABELS, MODES)
    ]
    for k, (v, lab, mode) in enumerate(itertools.product(VS, LABELS, MODES)):
        cases.append((33, v, DS[k % 3], TAUS[k % 4], lab, mode))
    return [c for c in cases if not (c[4] == "none" and c[1] == 1)]  # no positive can exist


@pytest.mark.filterwarnings("ignore:loss is 0")
@pytest.mark.parametrize(("n", "v", "d", "tau", "labels", "mode"), grid())
def test_fast_impls_equal_reference(n, v, d, tau, labels, mode, value_and_grads, close):
    gen = torch.Generator().manual_seed(n * 1000 + v * 100 + d)
    features = torch.randn(n, v, d, dtype=torch.float64, generator=gen, requires_grad=True)
    temperature = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    y = make_labels(labels, n)
    base = None if (n + v) % 2 else 0.07  # alternate the τ/τ_b rescale through the grid
    # tile 4: N·V up to 132 spans many tiles, with a remainder, and N·V < 4 sits inside one tile
    options = {"reference": {}, "dense": {}, "tiled": {"tile_size": 4}}
    results = {
        impl: value_and_grads(
            lambda impl=impl: supcon(
                features,
                y,
                temperature,
                base_temperature=base,
                contrast_mode=mode,
                impl=impl,
                **options[impl],
            ),
            features,
            temperature,
        )
        for impl in options
    }
    ref, ref_grads = results["reference"]
    for impl in ("dense", "tiled"):
        value, grads = results[impl]
        assert torch.isfinite(value), impl
        close(value, ref, torch.float64)
        for got, want in zip(grads, ref_grads, strict=True):
            close(got, want, torch.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("labels", LABELS[1:])
@pytest.mark.parametrize("impl", ["dense", "tiled"])
def test_fast_equals_reference_float32(impl, mode, labels, value_and_grads, close):
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(12, 3, 16, generator=gen, requires_grad=True)
    y = make_labels(labels, 12)
    ref, (ref_grad,) = value_and_grads(
        lambda: supcon(features, y, 0.1, contrast_mode=mode, impl="reference"), features
    )
    dense, (dense_grad,) = value_and_grads(
        lambda: supcon(features, y, 0.1, contrast_mode=mode, impl=impl), features
    )
    assert dense.dtype == torch.float32
    close(dense, ref, torch.float32)
    close(dense_grad, ref_grad, torch.float32)


@pytest.mark.parametrize("tau", TAUS)
def test_two_views_without_labels_is_nt_xent(tau):
    gen = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(2, 9, 5, dtype=torch.float64, generator=gen)
    expected = nt_xent(z1, z2, temperature=tau)
    torch.testing.assert_close(
        supcon(torch.stack([z1, z2], 1), temperature=tau), expected, rtol=1e-12, atol=1e-12
    )
    # the same pairs given as labels of a V = 1 batch of 2N samples
    torch.testing.assert_close(
        supcon(torch.cat([z1, z2])[:, None], torch.arange(9).repeat(2), temperature=tau),
        expected,
        rtol=1e-12,
        atol=1e-12,
    )


def test_identical_embeddings_closed_form():
    # every similarity is 1: each positive has log-probability −log(NV − 1)
    n, v = 4, 3
    features = torch.ones(n, v, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])
    for impl in ("reference", "dense", "tiled"):
        loss = supcon(features, labels, temperature=0.3, impl=impl, tile_size=5)
        torch.testing.assert_close(loss, torch.tensor(math.log(n * v - 1), dtype=torch.float64))


def test_orthogonal_two_classes_by_hand():
    # samples 0, 1 share class 0 and direction e0; sample 2 (class 1) points along e1.
    # anchor 0: positive s = 1, denominator e^{1/τ} + e^{0}: ℓ = −log(e^{1/τ}/(e^{1/τ}+1)).
    tau = 0.5
    features = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    anchor_loss = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 1.0))
    for impl in ("reference", "dense", "tiled"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # some anchors have positives: no warning
            loss = supcon(features, labels, temperature=tau, impl=impl, tile_size=2)
        # sample 2 has no positive and is left out of the mean
        torch.testing.assert_close(loss, torch.tensor(anchor_loss, dtype=torch.float64))


def test_base_temperature_scales_by_tau_over_tau_b():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 2, 4, dtype=torch.float64, generator=gen)
    plain = supcon(features, temperature=0.2)
    scaled = supcon(features, temperature=0.2, base_temperature=0.07)
    torch.testing.assert_close(scaled, plain * 0.2 / 0.07)
    torch.testing.assert_close(supcon(features, temperature=0.2, base_temperature=0.2), plain)


def test_contrast_mode_one_uses_view_zero_anchors_only():
    # with contrast_mode="one" the loss of view 0 anchors alone, contrasts all views: changing
    # only view 1 of sample 0 changes the loss through the denominators, not through anchors
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(5, 2, 4, dtype=torch.float64, generator=gen)
    one = supcon(features, temperature=0.5, contrast_mode="one")
    all_ = supcon(features, temperature=0.5, contrast_mode="all")
    assert not torch.isclose(one, all_)
    swapped = supcon(features.flip(1), temperature=0.5, contrast_mode="one")
    assert not torch.isclose(one, swapped)  # the anchors are now the other view


def test_anchor_without_positive_is_left_out_not_nan():
    features = torch.randn(4, 1, 3, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])  # samples 2 and 3 are alone in their class
    loss = supcon(features, labels, temperature=0.1)
    assert torch.isfinite(loss)
    only_pair = supcon(features[:2], labels[:2], temperature=0.1)
    assert not torch.isclose(loss, only_pair)  # 2 and 3 still sit in the denominators


@pytest.mark.parametrize("impl", ["reference", "dense"])
def test_no_positive_anywhere_returns_zero_with_graph_and_warns(impl):
    features = torch.randn(4, 1, 3, requires_grad=True)
    temperature = torch.tensor(0.1, requires_grad=True)
    with pytest.warns(UserWarning, match="no anchor in the batch has a positive"):
        loss = supcon(features, torch.arange(4), temperature, impl=impl)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))
    assert temperature.grad == 0


@pytest.mark.parametrize("impl", ["reference", "dense"])
def test_small_temperature_unnormalised_is_finite(impl):
    gen = torch.Generator().manual_seed(2)
    features = (10 * torch.randn(6, 2, 8, generator=gen)).requires_grad_()
    temperature = torch.tensor(1e-3, requires_grad=True)
    loss = supcon(
        features, torch.tensor([0, 0, 1, 1, 2, 3]), temperature, normalize=False, impl=impl
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(features.grad).all()
    assert torch.isfinite(temperature.grad)


def test_float32_at_tau_0_005_is_finite_where_self_in_shift_fails():
    # HL includes the self-similarity in the row max: every other exp underflows to 0 → NaN.
    gen = torch.Generator().manual_seed(4)
    features = torch.nn.functional.normalize(torch.randn(16, 2, 32, generator=gen), dim=-1)
    tau = 0.005
    logits = features[:, 0] @ features.reshape(-1, 32).T / tau
    shifted = logits - logits.max(1, keepdim=True).values  # the published trick, self included
    assert (shifted.exp().sum(1) - 1).eq(0).any()  # denominators without self underflow to 0
    loss = supcon(features, temperature=tau)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(8, 2, 16, generator=gen)
    labels = torch.arange(8) % 3
    loss = supcon(features.to(dtype).requires_grad_(), labels, 0.1)
    assert loss.dtype == torch.float32
    expected = supcon(features.to(dtype).float(), labels, 0.1)
    torch.testing.assert_close(loss, expected)


def test_gradcheck_features_and_temperature():
    gen = torch.Generator().manual_seed(6)
    features = torch.randn(5, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1])
    for mode in MODES:
        assert torch.autograd.gradcheck(
            lambda f, t, mode=mode: supcon(f, labels, t, base_temperature=0.5, contrast_mode=mode),
            (features, tau),
        )


def test_module_matches_function():
    gen = torch.Generator().manual_seed(8)
    features = torch.randn(6, 2, 4, generator=gen)
    labels = torch.arange(6) % 2
    module = SupConLoss(temperature=0.2, contrast_mode="one")
    assert "contrast_mode='one'" in repr(module)
    torch.testing.assert_close(
        module(features, labels), supcon(features, labels, 0.2, contrast_mode="one")
    )


def test_learnable_temperature_parameter_in_module():
    tau = torch.nn.Parameter(torch.tensor(0.5))
    module = SupConLoss(temperature=tau)
    module(torch.randn(4, 2, 3)).backward()
    assert tau.grad is not None and torch.isfinite(tau.grad)


def test_reference_reads_like_formula_and_agrees_without_labels():
    gen = torch.Generator().manual_seed(9)
    features = torch.randn(3, 2, 2, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(
        reference.supcon(features, temperature=0.5), supcon(features, temperature=0.5)
    )
