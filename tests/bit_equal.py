"""Bit-for-bit comparison of checkpoint contents (shared by the resume tests)."""

from __future__ import annotations

from typing import Any

import torch


def assert_bit_equal(a: Any, b: Any, where: str) -> None:
    """Assert ``a`` equals ``b`` bit for bit: tensors (dtype and values), containers item by item.

    The message names the first differing place (``encoder.features.0.weight``, ``rng.cuda[0]``).
    """
    if isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: max difference {(a.double() - b.double()).abs().max()}"
    elif isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in b:
            assert_bit_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bit_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
