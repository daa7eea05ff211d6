"""Small numerical helpers shared by the loss families (not part of the public API)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.losses._validate import Temperature, compute_dtype


def prepare(x: Tensor, normalize: bool, dtype: torch.dtype | None = None) -> Tensor:
    """Cast to the compute dtype (half precision goes to float32) and L2-normalise the last dim."""
    x = x.to(dtype or compute_dtype(x))
    return F.normalize(x, dim=-1) if normalize else x


def as_tensor_temperature(t: Temperature, like: Tensor) -> Tensor | float:
    """Move a tensor temperature to ``like``'s dtype and device (keeping its graph); floats pass."""
    return t.to(dtype=like.dtype, device=like.device) if isinstance(t, Tensor) else t


def zero_loss(*inputs: Tensor | float, reason: str, dtype: torch.dtype) -> Tensor:
    """Return a 0 loss connected to ``inputs`` (backward works, gradients are 0) and warn why."""
    warnings.warn(f"loss is 0: {reason}", UserWarning, stacklevel=4)
    tensors = [t for t in inputs if isinstance(t, Tensor)]
    zero = torch.zeros((), dtype=dtype, device=tensors[0].device if tensors else None)
    for t in tensors:
        zero = zero + (t.to(dtype) * 0).sum()
    return zero
