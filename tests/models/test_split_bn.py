"""Split batch norm against S plain batch norms, one per sub-batch (rows j, j + S, ...)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from contrastkit.models.split_bn import SplitBatchNorm, convert_split_bn


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("layer", "shape"), [(nn.BatchNorm2d, (12, 3, 4, 5)), (nn.BatchNorm1d, (12, 3))]
)
@pytest.mark.parametrize("splits", [1, 3, 4])
def test_split_bn_is_one_batch_norm_per_sub_batch(layer, shape, splits):
    plain = layer(3, momentum=0.3)
    with torch.no_grad():
        plain.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        plain.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        plain.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        plain.running_var.copy_(torch.tensor([2.0, 3.0, 4.0]))
    split = convert_split_bn(copy.deepcopy(plain), splits)
    assert isinstance(split, SplitBatchNorm) and split.splits == splits
    x = torch.randn(*shape, generator=_gen(0)) * 3 + 1
    out = split(x)
    oracles = [copy.deepcopy(plain) for _ in range(splits)]
    expected = torch.empty_like(x)
    for j, bn in enumerate(oracles):
        expected[j::splits] = bn(x[j::splits])  # sub-batch j: rows j, j + S, ...
    torch.testing.assert_close(out, expected)
    running = torch.stack([bn.running_mean for bn in oracles]).mean(0)
    torch.testing.assert_close(split.running_mean, running)
    torch.testing.assert_close(
        split.running_var, torch.stack([b.running_var for b in oracles]).mean(0)
    )
    split.eval(), plain.eval()
    plain.load_state_dict(split.state_dict())  # a batch norm's state dict
    torch.testing.assert_close(split(x), plain(x))  # eval: the plain layer of the running stats


def test_convert_split_bn_replaces_every_batch_norm_and_keeps_the_state_dict():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.BatchNorm1d(2)
    )
    before = {k: v.clone() for k, v in net.state_dict().items()}
    convert_split_bn(net, 2)
    assert [type(m).__name__ for m in net if "Norm" in type(m).__name__] == ["SplitBatchNorm"] * 2
    assert net.state_dict().keys() == before.keys()


def test_split_bn_gradcheck():
    layer = SplitBatchNorm(2, 2).double()
    x = torch.randn(8, 2, 3, dtype=torch.float64, generator=_gen(1), requires_grad=True)
    w = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.2, -0.1], dtype=torch.float64, requires_grad=True)

    def f(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _functional(layer, x, w, b)

    assert torch.autograd.gradcheck(f, (x, w, b))


def _functional(
    layer: SplitBatchNorm, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """The layer with ``w`` and ``b`` as its parameters (so gradcheck sees their gradients)."""
    return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))


@pytest.mark.parametrize("splits", [0, 1.5, True])
def test_split_bn_refuses_bad_splits(splits):
    with pytest.raises(ValueError, match="splits must be an integer >= 1"):
        SplitBatchNorm(3, splits)


def test_split_bn_refuses_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="a batch of 10 rows does not split into 4 sub-batches"):
        SplitBatchNorm(3, 4)(torch.zeros(10, 3))
