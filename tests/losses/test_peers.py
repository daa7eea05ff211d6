"""Differential tests: the same inputs give the same numbers as the peers' published losses.

PML = pytorch-metric-learning 2.9.0, RE = info-nce-pytorch 0.1.4 (see ../shared/ANCHORS.md).
"""

from __future__ import annotations

import pytest
import torch

from contrastkit.losses import info_nce, nt_xent, supcon

pml_losses = pytest.importorskip("pytorch_metric_learning.losses", reason="dev extra: PML")
re_info_nce = pytest.importorskip("info_nce", reason="dev extra: info-nce-pytorch")


@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5])
@pytest.mark.parametrize("n", [2, 9, 32])
def test_supcon_two_views_with_labels_equals_pml(n, tau):
    gen = torch.Generator().manual_seed(n)
    features = torch.randn(n, 2, 16, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = torch.randint(0, max(2, n // 3), (n,), generator=gen)
    ours = supcon(features, labels, tau)
    # PML wants the 2N views as rows with their labels repeated
    flat = features.transpose(0, 1).reshape(2 * n, 16)
    theirs = pml_losses.SupConLoss(temperature=tau)(flat, labels.repeat(2))
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    (g_ours,) = torch.autograd.grad(ours, features)
    (g_theirs,) = torch.autograd.grad(theirs, features)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("n", [2, 16])
def test_nt_xent_equals_pml_ntxent_with_one_positive_per_anchor(n, tau):
    gen = torch.Generator().manual_seed(n + 1)
    z1, z2 = torch.randn(2, n, 8, dtype=torch.float64, generator=gen)
    theirs = pml_losses.NTXentLoss(temperature=tau)(torch.cat([z1, z2]), torch.arange(n).repeat(2))
    torch.testing.assert_close(nt_xent(z1, z2, tau), theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["in-batch", "unpaired", "paired"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_info_nce_equals_info_nce_pytorch(mode, reduction):
    gen = torch.Generator().manual_seed(3)
    query, key = torch.randn(2, 10, 12, dtype=torch.float64, generator=gen)
    negatives = {
        "in-batch": None,
        "unpaired": torch.randn(6, 12, dtype=torch.float64, generator=gen),
        "paired": torch.randn(10, 6, 12, dtype=torch.float64, generator=gen),
    }[mode]
    negative_mode = "paired" if mode == "paired" else "unpaired"
    ours = info_nce(query, key, negatives, 0.2, negative_mode=negative_mode, reduction=reduction)
    theirs = re_info_nce.info_nce(
        query, key, negatives, temperature=0.2, reduction=reduction, negative_mode=negative_mode
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
