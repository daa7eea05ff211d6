"""contrastkit: contrastive representation learning in PyTorch.

The loss core lives in :mod:`contrastkit.losses`; the training system in
:mod:`contrastkit.train`. The commands' functions (``pretrain``, ``run``, ``resume``,
``linear_probe``, ``knn``, ``retrieval``, ``embed``, ``report``, ``seed_summary``) and their
typed configs (``PretrainConfig``, ``RunConfig``, ``ProbeConfig``, ``KnnConfig``,
``RetrievalConfig``, ``EmbedConfig``) are importable from here, loaded on first use, so ``import contrastkit`` stays fast::

    import contrastkit as ck

    r = ck.pretrain(ck.PretrainConfig(method="simclr", epochs=100, out="runs/x"))
    ck.linear_probe("runs/x")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "pretrain": "contrastkit.train.pretrain",
    "linear_probe": "contrastkit.train.evaluate",
    "knn": "contrastkit.train.evaluate",
    "embed": "contrastkit.train.evaluate",
    "retrieval": "contrastkit.train.evaluate",
    "run": "contrastkit.train.run",
    "resume": "contrastkit.train.resume",
    "report": ("contrastkit.train.report", "build_report"),
    "seed_summary": "contrastkit.train.summary",
    "PretrainConfig": "contrastkit.train.config",
    "RunConfig": "contrastkit.train.config",
    "ProbeConfig": "contrastkit.train.config",
    "ProbeSettings": "contrastkit.train.config",
    "KnnConfig": "contrastkit.train.config",
    "EmbedConfig": "contrastkit.train.config",
    "RetrievalConfig": "contrastkit.train.config",
    "PretrainResult": "contrastkit.train.pretrain",
    "RunResult": "contrastkit.train.run",
    "ContrastkitError": "contrastkit.errors",
    "ContrastkitWarning": "contrastkit.errors",
}

__all__ = [
    "ContrastkitError",
    "ContrastkitWarning",
    "EmbedConfig",
    "KnnConfig",
    "PretrainConfig",
    "PretrainResult",
    "ProbeConfig",
    "ProbeSettings",
    "RetrievalConfig",
    "RunConfig",
    "RunResult",
    "__version__",
    "embed",
    "knn",
    "linear_probe",
    "pretrain",
    "report",
    "resume",
    "retrieval",
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
