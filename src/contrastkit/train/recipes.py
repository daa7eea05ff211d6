"""Default hyperparameters per method (and per data set), found by measurement on digits.

``None`` in a :class:`~contrastkit.train.config.PretrainConfig` field means "take the value
from here"; the resolved value is what ``config.yaml`` records.
"""

from __future__ import annotations

from typing import Any

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "simclr": {"lr": 1.0, "weight_decay": 5e-4, "warmup_epochs": 10.0, "temperature": 0.5},
    "supcon": {"lr": 0.5, "weight_decay": 5e-4, "warmup_epochs": 10.0, "temperature": 0.1},
    "ce": {"lr": 0.2, "weight_decay": 5e-4, "warmup_epochs": 5.0, "temperature": 1.0},
}
"""Base learning rate (for batch 256, SGD), weight decay, warm-up epochs, temperature."""

OPTIMIZER_LR_SCALE = {"sgd": 1.0, "lars": 1.0, "adamw": 0.01}
"""AdamW wants a much smaller learning rate than SGD/LARS."""

DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 100, "batch_size": 256, "knn_k": 20},
    "fashion-mnist": {"epochs": 30, "batch_size": 256, "knn_k": 200},
}
"""Epochs and batch size that ``contrastkit run`` uses when not given, and the kNN k (200,
the usual choice, spans several classes of digits' ~144 training images per class)."""


def method_defaults(method: str, optimizer: str) -> dict[str, Any]:
    """Defaults of ``lr``, ``weight_decay``, ``warmup_epochs``, ``temperature`` for a method."""
    d = dict(METHOD_DEFAULTS[method])
    d["lr"] = d["lr"] * OPTIMIZER_LR_SCALE.get(optimizer, 1.0)
    return d


def data_defaults(data: str) -> dict[str, Any]:
    """Epochs, batch size and kNN k for ``data`` (100, 256 and 200 when unknown)."""
    return dict(DATA_DEFAULTS.get(data, {"epochs": 100, "batch_size": 256, "knn_k": 200}))
