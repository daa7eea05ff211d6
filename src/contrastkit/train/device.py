"""``--device auto|cpu|cuda`` → a ``torch.device``."""

from __future__ import annotations

import torch

from contrastkit.errors import ContrastkitError


def resolve_device(name: str) -> torch.device:
    """Return CUDA for ``auto`` when available (else CPU); check that ``cuda`` exists.

    Raises:
        ContrastkitError: for an unknown name or ``cuda`` without a GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ContrastkitError(f"device {name!r} requested but CUDA is not available")
        return torch.device(name)
    raise ContrastkitError(f"unknown device {name!r}; choose auto, cpu or cuda")
