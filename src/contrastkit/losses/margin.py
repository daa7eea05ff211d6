"""Margin (hinge) pair loss of Hadsell, Chopra & LeCun (2006) on raw embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.losses import _validate, reference

IMPLS = ("auto", "reference", "dense")


def margin_pair(
    x1: Tensor,
    x2: Tensor,
    same: Tensor,
    margin: float = 1.0,
    *,
    reduction: str = "mean",
    impl: str = "auto",
) -> Tensor:
    r"""Margin pair loss: pull similar pairs together, push dissimilar ones beyond a margin.

    .. math::
        d_i = \lVert x1_i - x2_i \rVert_2, \qquad
        ℓ_i = y_i \tfrac12 d_i^2 + (1 - y_i) \tfrac12 \max(0, m - d_i)^2

    on raw (not normalised) embeddings, y_i = 1 for a similar pair. The gradient is finite
    everywhere: at d_i = 0 the hinge term's gradient (whose direction is undefined there) is 0.

    Args:
        x1: First embedding of each pair. Shape: (N, D).
        x2: Second embedding of each pair. Shape: (N, D).
        same: 1/True where the pair is similar, 0/False where not. Shape: (N,).
        margin: m ≥ 0, the distance beyond which dissimilar pairs cost nothing. Default 1.0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-pair losses, shape (N,)).
        impl: ``"dense"`` (vectorised), ``"reference"`` (loop oracle) or ``"auto"``.

    Returns:
        A 0-dim tensor, or shape (N,) for ``reduction="none"`` (float64 for float64 inputs,
        else float32).

    Raises:
        ValueError: on wrong shapes, ``same`` not (N,) bool/0-1, x1 and x2 of different dtypes,
            inputs on different devices or on the meta device, empty or non-finite input,
            negative margin, unknown ``reduction`` or ``impl``.

    Reference: Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant
    Mapping", CVPR 2006, eq. 4.
    """
    x1, x2, same, margin, reduction = _validate.margin_args(x1, x2, same, margin, reduction)
    impl = _validate.choice("impl", impl, IMPLS)
    if impl == "reference":
        return reference.margin_pair(x1, x2, same, margin, reduction=reduction)
    dtype = _validate.compute_dtype(x1)
    squared = (x1.to(dtype) - x2.to(dtype)).pow(2).sum(1)  # (N,) d²
    positive = squared > 0
    # sqrt has an infinite derivative at 0: take it only where d > 0 (the "double where")
    d = torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)  # (N,)
    y = same.to(dtype)
    per_pair = y * 0.5 * squared + (1 - y) * 0.5 * (margin - d).clamp(min=0).pow(2)
    if reduction == "none":
        return per_pair
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


class MarginPairLoss(nn.Module):
    """Module form of :func:`margin_pair`: stores the hyperparameters, validates them once."""

    def __init__(self, margin: float = 1.0, *, reduction: str = "mean", impl: str = "auto"):
        super().__init__()
        self.margin = _validate.margin_value(margin)
        self.reduction = _validate.choice("reduction", reduction, ("mean", "sum", "none"))
        self.impl = _validate.choice("impl", impl, IMPLS)

    def forward(self, x1: Tensor, x2: Tensor, same: Tensor) -> Tensor:
        """Compute the loss; see :func:`margin_pair`."""
        return margin_pair(x1, x2, same, self.margin, reduction=self.reduction, impl=self.impl)

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``print(module)``."""
        return f"margin={self.margin}, reduction={self.reduction!r}"
