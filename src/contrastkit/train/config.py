"""Typed, validated configs: one dataclass per command; unknown keys are rejected.

Each field's ``metadata["help"]`` is its documentation, shown by ``--help`` in the CLI, so the
text exists once. :func:`from_dict` builds a config from a YAML mapping or keyword options and
says which key is wrong.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from contrastkit.errors import ContrastkitError

METHODS = ("simclr", "supcon", "ce")
OPTIMIZERS = ("sgd", "lars", "adamw")
DEVICES = ("auto", "cpu", "cuda")


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class PretrainConfig:
    """Options of ``contrastkit pretrain`` (None = the recipe's default for the method)."""

    data: str = _f(
        "digits", "data set: digits, fashion-mnist, cifar10, cifar100, stl10 or folder:PATH"
    )
    data_root: str | None = _f(None, "directory of the data files (each data set has a default)")
    download: bool = _f(False, "download the data with torchvision first (needs internet)")
    train_split: str | None = _f(
        None, "split to pretrain on (default train; stl10 also unlabeled, train+unlabeled)"
    )
    image_size: int | None = _f(None, "resize folder images to this square size")
    limit: int | None = _f(None, "use only this many training images (a seeded random subset)")
    augment: str | None = _f(
        None,
        "augmentation preset: digits, fashion-mnist, shift-flip, simclr or none"
        " (default: the data set's)",
    )
    method: str = _f("supcon", "simclr (labels unused), supcon (labels) or ce (cross-entropy)")
    model: str | None = _f(
        None,
        "encoder: small_cnn, small_cnn_s2, resnet18, resnet34, resnet50 (default by image size)",
    )
    norm: str = _f("batch", "normalisation layers: batch or group (BN-free)")
    epochs: int = _f(100, "training epochs")
    batch_size: int = _f(256, "images per step, all processes together (each gives `views` views)")
    views: int = _f(2, "augmented views per image for simclr/supcon (ce uses 1)")
    optimizer: str = _f("sgd", "sgd (momentum), lars or adamw")
    lr: float | None = _f(None, "base learning rate for batch 256 (scaled by batch_size/256)")
    momentum: float = _f(0.9, "momentum of sgd and lars")
    weight_decay: float | None = _f(None, "weight decay (never on biases and norm parameters)")
    warmup_epochs: float | None = _f(None, "linear warm-up epochs before the per-step cosine decay")
    temperature: float | None = _f(None, "loss temperature τ (simclr 0.5, supcon 0.1 by default)")
    proj_dim: int = _f(128, "projection-head output size D")
    knn_k: int | None = _f(None, "neighbours of the kNN monitor (200; 20 on digits)")
    knn_t: float = _f(0.1, "temperature of the weighted kNN vote")
    knn_every: int = _f(1, "run the kNN monitor every this many epochs (0 = only at the end)")
    seed: int = _f(0, "random seed (model init, data order, augmentation)")
    device: str = _f("auto", "auto, cpu or cuda")
    precision: str = _f(
        "auto",
        "autocast: auto (float16 + grad scaling on CUDA, float32 on CPU), fp32, bf16 or fp16 (CUDA)",
    )
    sync_bn: bool = _f(
        False, "SyncBatchNorm over all processes under torchrun (CUDA, --norm batch)"
    )
    channels_last: bool = _f(True, "channels-last memory format for convolutions")
    out: str | None = _f(None, "run directory (default runs/<data>-<method>-<timestamp>)")
    resume: bool = _f(False, "continue the run in `out` from checkpoints/last.pt")
    quiet: bool = _f(False, "no progress bars")


@dataclass
class ProbeConfig:
    """Options of ``contrastkit linear-probe``: a linear classifier on frozen features."""

    run_dir: str = _f("", "run directory written by pretrain")
    epochs: int = _f(100, "probe training epochs")
    batch_size: int = _f(256, "probe batch size")
    lr: float = _f(0.01, "AdamW learning rate of the probe (cosine decay)")
    weight_decay: float = _f(1e-4, "probe weight decay")
    seed: int = _f(0, "random seed of the probe")
    device: str = _f("auto", "auto, cpu or cuda")
    quiet: bool = _f(False, "no progress bars")


@dataclass
class KnnConfig:
    """Options of ``contrastkit knn``: weighted cosine kNN on frozen features."""

    run_dir: str = _f("", "run directory written by pretrain")
    k: int | None = _f(None, "neighbours (default: the run's knn_k)")
    t: float | None = _f(
        None, "temperature of the vote weights exp(s/t) (default: the run's knn_t)"
    )
    device: str = _f("auto", "auto, cpu or cuda")


@dataclass
class EmbedConfig:
    """Options of ``contrastkit embed``: backbone features of a split to an ``.npz`` file."""

    run_dir: str = _f("", "run directory written by pretrain")
    split: str = _f("test", "split to embed")
    out: str = _f(
        "embeddings.npz", "output .npz with features (N, F) float32 and labels (N,) int64"
    )
    device: str = _f("auto", "auto, cpu or cuda")


@dataclass
class RunConfig:
    """Options of ``contrastkit run``: pretrain each method, probe, kNN, table and report."""

    data: str = _f("digits", "data set (see pretrain)")
    methods: str = _f("simclr,supcon,ce", "comma-separated methods")
    out: str | None = _f(None, "directory of the whole run (default runs/<data>-<timestamp>)")
    data_root: str | None = _f(None, "directory of the data files")
    download: bool = _f(False, "download the data with torchvision first")
    image_size: int | None = _f(None, "resize folder images to this square size")
    limit: int | None = _f(None, "use only this many training images")
    model: str | None = _f(None, "encoder (default by image size)")
    norm: str = _f("batch", "batch or group")
    epochs: int | None = _f(None, "pretraining epochs (default: the data set's recipe)")
    batch_size: int | None = _f(None, "pretraining batch size (default: the recipe's)")
    optimizer: str = _f("sgd", "sgd, lars or adamw")
    lr: float | None = _f(None, "base learning rate for batch 256 (default: each method's recipe)")
    weight_decay: float | None = _f(None, "weight decay (default: each method's recipe)")
    warmup_epochs: float | None = _f(None, "warm-up epochs (default: each method's recipe)")
    temperature: float | None = _f(None, "loss temperature τ (default: each method's recipe)")
    augment: str | None = _f(None, "augmentation preset (default: the data set's)")
    views: int | None = _f(None, "augmented views per image for simclr/supcon (default 2)")
    proj_dim: int | None = _f(None, "projection-head output size D (default 128)")
    channels_last: bool = _f(True, "channels-last memory format for convolutions")
    precision: str = _f("auto", "autocast: auto, fp32, bf16 or fp16 (see pretrain)")
    knn_every: int | None = _f(
        None, "kNN monitor every this many epochs (default 1); knn.json gives the last epoch's"
    )
    seed: int = _f(0, "random seed")
    probe_epochs: int = _f(100, "linear-probe epochs")
    knn_k: int | None = _f(None, "neighbours of the kNN evaluation (200; 20 on digits)")
    knn_t: float = _f(0.1, "temperature of the kNN vote")
    device: str = _f("auto", "auto, cpu or cuda")
    resume: bool = _f(False, "continue the run in `out` (--methods may add methods to it)")
    quiet: bool = _f(False, "no progress bars")


C = TypeVar("C")


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """Coerce ints to floats where a float is wanted; reject anything else of the wrong type."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ContrastkitError(f"option {name!r} must not be empty")
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
    raise ContrastkitError(f"option {name!r} must be {names}, got {value!r}")


def comma_list(*texts: str) -> list[str]:
    """The items of comma-separated lists, stripped, empty ones dropped: ``"a, b,"`` → ``["a", "b"]``."""
    return [item.strip() for text in texts for item in text.split(",") if item.strip()]


def upgrade_legacy(values: dict[str, Any]) -> dict[str, Any]:
    """Map options of configs written by older versions to current ones.

    ``amp: true|false`` (before ``precision`` existed: float16 autocast on CUDA or none)
    becomes ``precision: auto|fp32`` unless ``precision`` is given too.
    """
    if "amp" not in values:
        return values
    out = {k: v for k, v in values.items() if k != "amp"}
    out.setdefault("precision", "auto" if values["amp"] else "fp32")
    return out


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build config ``cls`` from ``values``; unknown keys and wrong types are errors.

    Keys of older versions are upgraded first (:func:`upgrade_legacy`) where ``cls`` has
    their successor, so old ``config.yaml`` files still resume and still work as ``--config``.

    Raises:
        ContrastkitError: naming the unknown key (with the known ones) or the mistyped value.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if "precision" in known:
        values = upgrade_legacy(values)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ContrastkitError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"known: {', '.join(sorted(known))}"
        )
    checked = {k: _check_type(k, v, hints[k]) for k, v in values.items()}
    return cls(**checked)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a plain dict (for YAML)."""
    return dataclasses.asdict(config)


def field_help(cls: type) -> dict[str, str]:
    """Field name → help text, for the CLI."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping of options.

    Raises:
        ContrastkitError: if the file is missing, not YAML or not a mapping.
    """
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ContrastkitError(f"config file {path} not found") from None
    except yaml.YAMLError as e:
        raise ContrastkitError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ContrastkitError(f"config file {path} must hold a mapping of options")
    return data
