"""Default hyperparameters per method and per data set, found by measurement on digits.

``None`` in a :class:`~contrastkit.train.config.PretrainConfig` field means "take the value
from here"; :func:`resolve` fills them, and the resolved values are what ``config.yaml``
records. This is the one place of these defaults, for ``pretrain`` and ``run`` alike.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from datetime import datetime
from typing import Any

from contrastkit.errors import ContrastkitWarning
from contrastkit.train.config import METHOD_OPTIONS, PretrainConfig, check_method_options
from contrastkit.train.rules import MOMENTUM_METHODS, QUEUE_METHODS

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "simclr": {"lr": 1.0, "weight_decay": 5e-4, "warmup_epochs": 10.0, "temperature": 0.5},
    "supcon": {"lr": 0.5, "weight_decay": 5e-4, "warmup_epochs": 10.0, "temperature": 0.1},
    "ce": {"lr": 0.2, "weight_decay": 5e-4, "warmup_epochs": 5.0, "temperature": 1.0},
    "moco": {"lr": 0.5, "weight_decay": 5e-4, "warmup_epochs": 10.0, "temperature": 0.2},
    "mocov3": {"lr": 0.5, "weight_decay": 5e-4, "warmup_epochs": 10.0, "temperature": 0.2},
    "supcon-moco": {"lr": 0.5, "weight_decay": 5e-4, "warmup_epochs": 10.0, "temperature": 0.1},
}
"""Base learning rate (for batch 256, SGD), weight decay, warm-up epochs, temperature.

MoCo's τ = 0.2 is MoCo v2's (Chen et al. 2020); its learning rate is supcon's, not tuned."""

MOMENTUM_DEFAULTS: dict[str, Any] = {"momentum_ema": 0.99, "ema_schedule": "constant"}
"""The key network of the momentum methods: m = 0.99 (MoCo v3's and the small-data choice;
MoCo v2's 0.999 suits ImageNet's long runs), constant unless ``--ema-schedule cosine``."""

QUEUE_SIZE = 4096
"""Keys in the queue of moco and supcon-moco (MoCo's CIFAR demo; 65,536 on ImageNet)."""

BN_SPLITS = 8
"""Sub-batches of ``--norm split`` (lightly's and the MoCo CIFAR demo's choice)."""

OPTIMIZER_LR_SCALE = {"sgd": 1.0, "lars": 1.0, "adamw": 0.01}
"""AdamW wants a much smaller learning rate than SGD/LARS."""

GENERIC_DATA_DEFAULTS: dict[str, Any] = {"epochs": 100, "batch_size": 256, "knn_k": 200}
"""What a data set without its own line below gets (a folder, a ``Dataset`` object, CIFAR...)."""

DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 100, "batch_size": 256, "knn_k": 20},
    "fashion-mnist": {"epochs": 30, "batch_size": 256, "knn_k": 200},
}
"""Epochs, batch size and the kNN k per data set (k = 200, the usual choice, would span
several classes of digits' ~144 training images per class)."""


def method_defaults(method: str, optimizer: str) -> dict[str, Any]:
    """Defaults of ``lr``, ``weight_decay``, ``warmup_epochs``, ``temperature`` for a method."""
    d = dict(METHOD_DEFAULTS[method])
    d["lr"] = d["lr"] * OPTIMIZER_LR_SCALE.get(optimizer, 1.0)
    return d


def data_defaults(data: str) -> dict[str, Any]:
    """Epochs, batch size and kNN k for ``data`` (100, 256 and 200 when unknown).

    ``shards:DIR`` gets the line of the data set it was prepared from (its ``index.json``).
    """
    from contrastkit.data.shards import PREFIX, prepared_from

    if data.startswith(PREFIX):
        data = prepared_from(data[len(PREFIX) :])
    return dict(DATA_DEFAULTS.get(data, GENERIC_DATA_DEFAULTS))


def with_data_defaults(cfg: PretrainConfig) -> PretrainConfig:
    """``cfg`` with its unset epochs, batch size and kNN k taken from its data set's line."""
    defaults = data_defaults(cfg.data)
    return replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})


def resolve(cfg: PretrainConfig) -> PretrainConfig:
    """Every recipe default filled in (the model, which depends on the images, excepted).

    First the options only some methods use are checked against the method
    (:func:`~contrastkit.train.config.check_method_options`).

    The data set's epochs, batch size and kNN k, the method's learning rate, weight decay,
    warm-up and temperature, a warm-up that fits the run (:func:`fit_warmup`) and the default
    run directory ``runs/<data>-<method>-<timestamp>``.
    """
    check_method_options([cfg.method], cfg)
    cfg = with_data_defaults(cfg)
    defaults = method_defaults(cfg.method, cfg.optimizer)
    cfg = fit_warmup(replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None}))
    cfg = replace(
        cfg, **{k: v for k, v in _momentum_defaults(cfg).items() if getattr(cfg, k) is None}
    )
    if cfg.out is None:
        cfg = replace(cfg, out=default_out(cfg.data, cfg.method))
    return cfg


def _momentum_defaults(cfg: PretrainConfig) -> dict[str, Any]:
    """The key network's and queue's defaults where the method uses them; the split count."""
    out: dict[str, Any] = {"bn_splits": BN_SPLITS} if cfg.norm == "split" else {}
    if cfg.method in MOMENTUM_METHODS:
        out.update(MOMENTUM_DEFAULTS)
    if cfg.method in QUEUE_METHODS:
        out["queue_size"] = QUEUE_SIZE
    return out


def for_method(recipe: PretrainConfig, method: str, out: str) -> PretrainConfig:
    """A ``run``'s shared ``recipe`` for one of its methods: the options it does not use dropped.

    A run of ``moco,simclr`` with ``--queue-size 8192`` gives the queue to moco; simclr's
    config leaves it unset (a single method refuses an option it does not use).
    """
    unused: dict[str, Any] = {
        name: (False if name == "symmetric" else None)
        for name, users in METHOD_OPTIONS.items()
        if method not in users
    }
    return replace(recipe, **unused, method=method, out=out)


def default_out(data: str, method: str | None = None) -> str:
    """``runs/<data>-<method>-<timestamp>`` (``runs/<data>-<timestamp>`` for a whole ``run``)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = data.replace(":", "-").replace("/", "-").strip("<>").replace(" ", "-")
    return f"runs/{name}-{method}-{stamp}" if method else f"runs/{name}-{stamp}"


WARMUP_SHARE = 0.1
"""The warm-up used, as a share of the run, when the one given is not shorter than the run:
the share of the 10 warm-up epochs in the 100-epoch SimCLR and SupCon recipes."""


def fit_warmup(cfg: PretrainConfig) -> PretrainConfig:
    """Shorten a warm-up that is not shorter than the run, with a warning.

    Such a warm-up ends the run at the peak learning rate, without any decay (``--epochs 1``
    with the 10-epoch default is all warm-up); it becomes :data:`WARMUP_SHARE` of the run,
    the value ``config.yaml`` then records.
    """
    assert cfg.warmup_epochs is not None and cfg.epochs is not None
    if cfg.warmup_epochs < cfg.epochs:
        return cfg
    used = WARMUP_SHARE * cfg.epochs
    warnings.warn(
        f"a warm-up of {cfg.warmup_epochs:g} epochs (--warmup-epochs) is not shorter than the "
        f"run ({cfg.epochs} epoch{'s' if cfg.epochs > 1 else ''}): the learning rate would "
        f"only rise; warming up for {used:g} epochs instead (a tenth of the run; config.yaml "
        "records it)",
        ContrastkitWarning,
        stacklevel=4,
    )
    return replace(cfg, warmup_epochs=used)
