"""Optimisers: SGD with momentum, LARS and AdamW, with weight decay off for biases and norms."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer

from contrastkit.errors import ContrastkitError


class LARS(Optimizer):
    r"""SGD with momentum and layer-wise trust ratios (You et al., 2017).

    For each parameter w with gradient g in a group whose ``lars_exclude`` is False:

    .. math::
        g ← g + λ w, \qquad g ← η \frac{\lVert w \rVert}{\lVert g \rVert} g, \qquad
        m ← μ m + g, \qquad w ← w - \mathrm{lr} \cdot m

    (the trust ratio is 1 when either norm is 0). Groups with ``lars_exclude=True`` (biases and
    norm parameters) skip the weight decay and the trust ratio: plain SGD with momentum.

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        momentum: μ.
        weight_decay: λ.
        trust_coefficient: η. Default 0.001.

    Reference: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", 2017.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, object]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one optimisation step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["lars_exclude"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0),
                        group["trust_coefficient"] * w_norm / g_norm,
                        torch.ones_like(w_norm),
                    )
                    g = g * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict[str, object]]:
    """Split parameters into a decayed group (weights) and an undecayed one (biases, norms).

    Every parameter with fewer than 2 dimensions (biases, BatchNorm/GroupNorm affine) goes to the
    second group, which also carries ``lars_exclude=True``.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(
    name: str,
    modules: Iterable[nn.Module],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> Optimizer:
    """Create optimiser ``name`` (``sgd``, ``lars``, ``adamw``) over ``modules``' parameters.

    Raises:
        ContrastkitError: for an unknown name.
    """
    groups = param_groups(modules, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ContrastkitError(f"unknown optimizer {name!r}; choose one of sgd, lars, adamw")
