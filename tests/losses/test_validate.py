"""Every bad input raises a ValueError that names the argument and says what was expected."""

from __future__ import annotations

import pytest
import torch

from contrastkit.losses import (
    InfoNCELoss,
    MarginPairLoss,
    NTXentLoss,
    SupConLoss,
    info_nce,
    margin_pair,
    nt_xent,
    reference,
    supcon,
)

Z = torch.randn(4, 3)
F3 = torch.randn(4, 2, 3)
NAN = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
INF = torch.tensor([[0.0, float("inf")], [1.0, 1.0]])

CASES = [
    # (call, expected message fragment)
    (lambda: nt_xent(torch.randn(4), torch.randn(4)), r"z1 must have 2 dimensions \(N, D\)"),
    (lambda: nt_xent(Z, torch.randn(5, 3)), r"z1 and z2 must have the same shape"),
    (lambda: nt_xent(Z, torch.randn(4, 2)), r"same shape \(N, D\), got \(4, 3\) and \(4, 2\)"),
    (lambda: nt_xent(torch.empty(0, 3), torch.empty(0, 3)), r"z1 must be non-empty"),
    (lambda: nt_xent(NAN, NAN.clone()), r"z1 must be finite, got 1 NaN/inf"),
    (lambda: nt_xent(Z, Z.clone(), 0.0), r"temperature must be a finite number > 0, got 0.0"),
    (lambda: nt_xent(Z, Z.clone(), -1.0), r"temperature must be a finite number > 0"),
    (lambda: nt_xent(Z, Z.clone(), float("inf")), r"temperature must be a finite number > 0"),
    (lambda: nt_xent(Z, Z.clone(), float("nan")), r"temperature must be a finite number > 0"),
    (lambda: nt_xent(Z, Z.clone(), torch.tensor([0.1])), r"0-dim tensor, got shape \(1,\)"),
    (lambda: nt_xent(Z, Z.clone(), "0.1"), r"temperature must be a float or a 0-dim tensor"),
    (lambda: nt_xent(Z, Z.clone(), impl="fast"), r"impl must be one of 'auto', 'reference'"),
    (lambda: nt_xent(Z.long(), Z.long()), r"z1 must be a floating-point tensor"),
    (lambda: nt_xent(Z.numpy(), Z), r"z1 must be a torch.Tensor of shape \(N, D\), got ndarray"),
    (lambda: supcon(Z), r"features must have 3 dimensions \(N, V, D\), got shape \(4, 3\)"),
    (lambda: supcon(F3, torch.arange(5)), r"labels must have one entry per sample: expected N"),
    (lambda: supcon(F3, torch.zeros(4, 1).long()), r"labels must have shape \(N,\)"),
    (lambda: supcon(F3, torch.zeros(4)), r"labels must be an integer tensor.*float32"),
    (lambda: supcon(F3, torch.zeros(4).bool()), r"labels must be an integer tensor.*bool"),
    (lambda: supcon(F3, [0, 1, 2, 3]), r"labels must be a torch.Tensor"),
    (lambda: supcon(torch.randn(4, 1, 3)), r"V = 1 view and labels is None"),
    (lambda: supcon(F3, contrast_mode="two"), r"contrast_mode must be one of 'all', 'one'"),
    (lambda: supcon(F3, base_temperature=0.0), r"base_temperature must be a finite number > 0"),
    (lambda: supcon(F3, temperature=0), r"temperature must be a finite number > 0"),
    (lambda: supcon(INF[:, None]), r"features must be finite"),
    (lambda: supcon(torch.empty(0, 2, 3)), r"features must be non-empty"),
    (lambda: supcon(F3, impl="tiledd"), r"impl must be one of"),
    (lambda: info_nce(Z, torch.randn(3, 3)), r"query and positive_key must have the same shape"),
    (lambda: info_nce(Z, Z, torch.randn(5, 2)), r"negative_keys must have D = 3"),
    (lambda: info_nce(Z, Z, torch.randn(4, 5, 3)), r"negative_keys must have 2 dimensions"),
    (
        lambda: info_nce(Z, Z, torch.randn(5, 3), negative_mode="paired"),
        r"negative_keys must have 3 dimensions \(N, M, D\) when paired",
    ),
    (
        lambda: info_nce(Z, Z, torch.randn(3, 5, 3), negative_mode="paired"),
        r"negative_keys must have N = 4",
    ),
    (lambda: info_nce(Z, Z, negative_mode="both"), r"negative_mode must be one of"),
    (lambda: info_nce(Z, Z, reduction="max"), r"reduction must be one of 'mean', 'sum', 'none'"),
    (lambda: info_nce(Z, Z, temperature=-0.1), r"temperature must be a finite number > 0"),
    (lambda: info_nce(Z, Z, NAN), r"negative_keys must be finite"),
    (lambda: margin_pair(Z, Z, torch.ones(3)), r"same must have shape \(N,\) = \(4,\)"),
    (lambda: margin_pair(Z, Z, torch.tensor([0, 1, 2, 1])), r"same must be bool or hold only 0/1"),
    (lambda: margin_pair(Z, torch.randn(4, 2), torch.ones(4)), r"x1 and x2 must have the same"),
    (lambda: margin_pair(Z, Z, torch.ones(4), margin=-1.0), r"margin must be a finite number >= 0"),
    (lambda: margin_pair(Z, Z, torch.ones(4), reduction="avg"), r"reduction must be one of"),
    (lambda: margin_pair(Z, Z, [1, 1, 1, 1]), r"same must be a torch.Tensor"),
    (lambda: NTXentLoss(temperature=0), r"temperature must be a finite number > 0"),
    (lambda: SupConLoss(contrast_mode="x"), r"contrast_mode must be one of"),
    (lambda: InfoNCELoss(reduction="x"), r"reduction must be one of"),
    (lambda: MarginPairLoss(margin=-2), r"margin must be a finite number >= 0"),
    # the oracles validate exactly like the fast code
    (lambda: reference.nt_xent(Z, torch.randn(5, 3)), r"z1 and z2 must have the same shape"),
    (lambda: reference.supcon(F3, torch.arange(3)), r"labels must have one entry per sample"),
    (lambda: reference.info_nce(Z, Z, reduction="x"), r"reduction must be one of"),
    (lambda: reference.margin_pair(Z, Z, torch.ones(5)), r"same must have shape"),
]


@pytest.mark.parametrize(("call", "message"), CASES, ids=[m for _, m in CASES])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
