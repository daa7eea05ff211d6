"""Training: configs, the pretraining loop, linear probe, kNN, schedules, checkpoints, reports.

The functions below load on first access (PEP 562), so that importing the light modules
(``contrastkit.train.config`` for the CLI's ``--help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PretrainResult": "contrastkit.train.pretrain",
    "pretrain": "contrastkit.train.pretrain",
    "linear_probe": "contrastkit.train.evaluate",
    "knn": "contrastkit.train.evaluate",
    "embed": "contrastkit.train.evaluate",
    "build_report": "contrastkit.train.report",
    "run": "contrastkit.train.run",
}

__all__ = ["PretrainResult", "build_report", "embed", "knn", "linear_probe", "pretrain", "run"]


def __getattr__(name: str) -> Any:
    """Import the public functions on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'contrastkit.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
