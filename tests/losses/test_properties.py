"""Property tests: random shapes, labels and τ give finite losses, equal across impls."""

from __future__ import annotations

import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastkit.losses import info_nce, nt_xent, supcon

SETTINGS = settings(max_examples=40, deadline=None)
taus = st.floats(min_value=0.01, max_value=2.0)


@st.composite
def supcon_inputs(draw):
    n = draw(st.integers(1, 9))
    v = draw(st.integers(1, 3))
    d = draw(st.integers(1, 6))
    with_labels = v == 1 or draw(st.booleans())
    labels = (
        torch.tensor(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)))
        if with_labels
        else None
    )
    scale = draw(st.floats(0.1, 10.0))
    seed = draw(st.integers(0, 2**16))
    features = scale * torch.randn(
        n, v, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    return features, labels


@SETTINGS
@given(inputs=supcon_inputs(), tau=taus, mode=st.sampled_from(["all", "one"]), norm=st.booleans())
def test_supcon_finite_and_equal_across_impls(inputs, tau, mode, norm):
    features, labels = inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # batches without any positive
        ref = supcon(features, labels, tau, contrast_mode=mode, normalize=norm, impl="reference")
        dense = supcon(features, labels, tau, contrast_mode=mode, normalize=norm, impl="dense")
    assert torch.isfinite(dense)
    assert float(dense) >= -1e-12  # each term is −mean log-softmax over a superset of P(i)
    torch.testing.assert_close(dense, ref, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(n=st.integers(1, 12), d=st.integers(1, 8), tau=taus, seed=st.integers(0, 2**16))
def test_nt_xent_nonnegative_finite_equal(n, d, tau, seed):
    z1, z2 = torch.randn(
        2, n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    dense = nt_xent(z1, z2, tau)
    assert torch.isfinite(dense)
    assert float(dense) >= -1e-12  # a cross-entropy over ≥ 1 terms
    torch.testing.assert_close(dense, nt_xent(z1, z2, tau, impl="reference"), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(
    n=st.integers(1, 8),
    m=st.integers(1, 5),
    d=st.integers(1, 6),
    tau=taus,
    mode=st.sampled_from(["in-batch", "unpaired", "paired"]),
    seed=st.integers(0, 2**16),
)
def test_info_nce_finite_equal(n, m, d, tau, mode, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, n, d, dtype=torch.float64, generator=gen)
    shape = {"in-batch": None, "unpaired": (m, d), "paired": (n, m, d)}[mode]
    neg = None if shape is None else torch.randn(*shape, dtype=torch.float64, generator=gen)
    negative_mode = "paired" if mode == "paired" else "unpaired"
    dense = info_nce(q, k, neg, tau, negative_mode=negative_mode)
    ref = info_nce(q, k, neg, tau, negative_mode=negative_mode, impl="reference")
    assert torch.isfinite(dense)
    torch.testing.assert_close(dense, ref, rtol=1e-9, atol=1e-9)
