"""contrastkit: contrastive representation learning in PyTorch.

The loss core lives in :mod:`contrastkit.losses`; the training system in
:mod:`contrastkit.train`. ``pretrain``, ``linear_probe``, ``knn``, ``embed``, ``run``,
``report`` and ``seed_summary`` are importable from here (loaded on first use, so ``import contrastkit`` stays fast).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "pretrain": "contrastkit.train.pretrain",
    "linear_probe": "contrastkit.train.evaluate",
    "knn": "contrastkit.train.evaluate",
    "embed": "contrastkit.train.evaluate",
    "run": "contrastkit.train.run",
    "report": ("contrastkit.train.report", "build_report"),
    "seed_summary": "contrastkit.train.report",
    "ContrastkitError": "contrastkit.errors",
    "ContrastkitWarning": "contrastkit.errors",
}

__all__ = [
    "ContrastkitError",
    "ContrastkitWarning",
    "__version__",
    "embed",
    "knn",
    "linear_probe",
    "pretrain",
    "report",
    "run",
    "seed_summary",
]


def __getattr__(name: str) -> Any:
    """Import the training functions on first access (PEP 562)."""
    import importlib

    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'contrastkit' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    return getattr(importlib.import_module(module), attr)
