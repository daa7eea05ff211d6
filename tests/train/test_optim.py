import torch
from torch import nn

from contrastkit.train.optim import LARS, build_optimizer, param_groups


def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def test_no_weight_decay_on_bias_and_norm():
    m = net()
    decay, no_decay = param_groups([m], 0.1)
    assert {id(p) for p in decay["params"]} == {id(m[0].weight), id(m[3].weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(m[0].bias),
        id(m[1].weight),
        id(m[1].bias),
        id(m[3].bias),
    }
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"]


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [
            {"params": [w], "weight_decay": 0.1},
            {"params": [b], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=0.5,
        momentum=0.9,
        trust_coefficient=0.01,
    )
    w.grad = torch.tensor([0.0, 1.0])
    b.grad = torch.tensor([2.0])
    opt.step()
    g = torch.tensor([0.0, 1.0]) + 0.1 * torch.tensor([3.0, 4.0])
    trust = 0.01 * 5.0 / g.norm()
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * trust * g)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))  # plain SGD
    b.grad = torch.tensor([2.0])
    opt.step()  # momentum: buffer = 0.9 * 2 + 2
    assert torch.allclose(b.detach(), torch.tensor([0.0 - 0.5 * 3.8]))


def test_build_each_optimizer_steps():
    for name in ["sgd", "lars", "adamw"]:
        m = net()
        opt = build_optimizer(name, [m], lr=0.1, momentum=0.9, weight_decay=1e-4)
        before = m[3].weight.detach().clone()
        m(torch.randn(8, 1, 6, 6)).sum().backward()
        opt.step()
        assert not torch.equal(before, m[3].weight)
