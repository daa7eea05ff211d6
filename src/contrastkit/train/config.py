"""Typed, validated configs: one dataclass per command; unknown keys are rejected.

Each field's ``metadata["help"]`` is its documentation, shown by ``--help`` in the CLI, so the
text exists once; its ``metadata["rule"]`` is what it accepts (a number range or a list of
names), checked by :func:`validate`, the one place of these rules. :func:`from_dict` builds a
config from a YAML mapping or keyword options, checks types and rules and says which key is
wrong, before anything is created on disk.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from contrastkit.errors import ContrastkitError

METHODS = ("simclr", "supcon", "ce")
OPTIMIZERS = ("sgd", "lars", "adamw")
DEVICES = ("auto", "cpu", "cuda")


def spelling(name: str) -> str:
    """How users spell option ``name``: the CLI flag and the keyword / YAML key."""
    return f"--{name.replace('_', '-')} ({name})"


@dataclass(frozen=True)
class Bounds:
    """A number rule: finite, at least ``low`` (above it if ``above``), below ``high`` if given."""

    low: float
    above: bool = False
    high: float | None = None
    why: str = ""

    def expected(self, integer: bool) -> str:
        """The rule in words, e.g. ``a finite number > 0`` or ``an integer >= 1``."""
        kind = "an integer" if integer else "a finite number"
        low = f"{self.low:g}" if not integer else str(int(self.low))
        if self.high is None:
            text = f"{kind} {'>' if self.above else '>='} {low}"
        else:
            high = f"{self.high:g}" if not integer else f"2**{int(self.high).bit_length() - 1}"
            text = f"{kind} in {'(' if self.above else '['}{low}, {high})"
        return text + (f" ({self.why})" if self.why else "")

    def check(self, name: str, value: float) -> None:
        """Raise :class:`ContrastkitError` naming the option unless ``value`` keeps the rule."""
        finite = isinstance(value, int) or math.isfinite(value)
        ok = finite and (value > self.low if self.above else value >= self.low)
        if not ok or (self.high is not None and value >= self.high):
            integer = isinstance(value, int)
            raise ContrastkitError(
                f"{spelling(name)} must be {self.expected(integer)}, got {value!r}"
            )


@dataclass(frozen=True)
class Names:
    """A name rule: one of ``names()`` (read when checked: registries fill up on import).

    ``also`` accepts names of a pattern (``folder:PATH``, ``cuda:N``); ``many`` takes a
    comma-separated list, each item a name and at least one item.
    """

    what: str
    names: Callable[[], Sequence[str]]
    also: Callable[[str], bool] | None = None
    shown: str = ""
    many: bool = False

    def check(self, name: str, value: str) -> None:
        """Raise :class:`ContrastkitError` naming the option unless every name is known."""
        items = comma_list(value) if self.many else [value]
        bad = [v for v in items if v not in self.names() and not (self.also and self.also(v))]
        choices = ", ".join(self.names()) + (f" or {self.shown}" if self.shown else "")
        if not items:
            raise ContrastkitError(
                f"{spelling(name)} must name at least one {self.what}, got {value!r}; "
                f"choose from {choices}"
            )
        if bad:
            raise ContrastkitError(
                f"unknown {self.what} {', '.join(map(repr, bad))} for {spelling(name)}; choose "
                + ("from" if self.many else "one of")
                + f" {choices}"
            )


@dataclass(frozen=True)
class Text:
    """A text rule: not empty (a path, a split name checked later against the run's data)."""

    what: str

    def check(self, name: str, value: str) -> None:
        """Raise :class:`ContrastkitError` naming the option if ``value`` is empty."""
        if not value.strip():
            raise ContrastkitError(
                f"{spelling(name)} must be a non-empty {self.what}, got {value!r}"
            )


Rule = Bounds | Names | Text


def _f(default: Any, help: str, rule: Rule | None = None) -> Any:
    return field(default=default, metadata={"help": help, "rule": rule})


def _data_sets() -> Sequence[str]:
    from contrastkit.data import DATASETS

    return list(DATASETS)


def _dataset_object(name: str) -> bool:
    """Whether ``name`` is the placeholder a run on a ``Dataset`` object saves as its data."""
    from contrastkit.train.rundir import CUSTOM_DATA

    return name == CUSTOM_DATA


def _other_data(name: str) -> bool:
    """``folder:PATH`` with a path, or the placeholder of a run on a ``Dataset`` object."""
    from contrastkit.data.registry import FOLDER_PREFIX

    return _dataset_object(name) or (name.startswith(FOLDER_PREFIX) and name != FOLDER_PREFIX)


def _models() -> Sequence[str]:
    from contrastkit.models import model_names  # importing the package fills the registry

    return model_names()


def _norms() -> Sequence[str]:
    from contrastkit.models import NORMS

    return NORMS


def _presets() -> Sequence[str]:
    from contrastkit.data import PRESETS

    return list(PRESETS)


def _precisions() -> Sequence[str]:
    from contrastkit.train.device import PRECISIONS

    return PRECISIONS


POSITIVE = Bounds(0, above=True)
NON_NEGATIVE = Bounds(0)
AT_LEAST_ONE = Bounds(1)
DATA = Names("data set", _data_sets, _other_data, "folder:PATH")
METHOD = Names("method", lambda: METHODS)
MODEL = Names("model", _models)
NORM = Names("norm", _norms)
OPTIMIZER = Names("optimizer", lambda: OPTIMIZERS)
AUGMENT = Names("augmentation preset", _presets)
PRECISION = Names("precision", _precisions)
DEVICE = Names(
    "device", lambda: DEVICES, lambda d: re.fullmatch(r"cuda:\d+", d) is not None, "cuda:N"
)
AT_LEAST_TWO = Bounds(2)
MOMENTUM = Bounds(0, high=1)
SEED = Bounds(0, high=2**63)
CONTRASTIVE_BATCH = Bounds(2, why="a contrastive batch needs negatives")
PATH = Text("path")
SPLIT = Text("split name")
METHODS_LIST = Names("method", lambda: METHODS, many=True)


@dataclass
class PretrainConfig:
    """Options of ``contrastkit pretrain`` (None = the recipe's default for the method)."""

    data: str = _f(
        "digits",
        "data set: digits, fashion-mnist, cifar10, cifar100, stl10 or folder:PATH",
        rule=DATA,
    )
    data_root: str | None = _f(None, "directory of the data files (each data set has a default)")
    download: bool = _f(False, "download the data with torchvision first (needs internet)")
    train_split: str | None = _f(
        None, "split to pretrain on (default train; stl10 also unlabeled, train+unlabeled)"
    )
    image_size: int | None = _f(None, "resize folder images to this square size", rule=AT_LEAST_ONE)
    limit: int | None = _f(
        None, "use only this many training images (a seeded random subset)", rule=AT_LEAST_TWO
    )
    augment: str | None = _f(
        None,
        "augmentation preset: digits, fashion-mnist, shift-flip, simclr or none"
        " (default: the data set's)",
        rule=AUGMENT,
    )
    method: str = _f(
        "supcon", "simclr (labels unused), supcon (labels) or ce (cross-entropy)", rule=METHOD
    )
    model: str | None = _f(
        None,
        "encoder: small_cnn, small_cnn_s2, resnet18, resnet34, resnet50 (default by image size)",
        rule=MODEL,
    )
    norm: str = _f("batch", "normalisation layers: batch or group (BN-free)", rule=NORM)
    epochs: int = _f(100, "training epochs", rule=AT_LEAST_ONE)
    batch_size: int = _f(
        256,
        "images per step, all processes together (each gives `views` views)",
        rule=CONTRASTIVE_BATCH,
    )
    views: int = _f(2, "augmented views per image for simclr/supcon (ce uses 1)", rule=AT_LEAST_ONE)
    optimizer: str = _f("sgd", "sgd (momentum), lars or adamw", rule=OPTIMIZER)
    lr: float | None = _f(
        None, "base learning rate for batch 256 (scaled by batch_size/256)", rule=POSITIVE
    )
    momentum: float = _f(0.9, "momentum of sgd and lars", rule=MOMENTUM)
    weight_decay: float | None = _f(
        None, "weight decay (never on biases and norm parameters)", rule=NON_NEGATIVE
    )
    warmup_epochs: float | None = _f(
        None, "linear warm-up epochs before the per-step cosine decay", rule=NON_NEGATIVE
    )
    temperature: float | None = _f(
        None, "loss temperature τ (simclr 0.5, supcon 0.1 by default)", rule=POSITIVE
    )
    proj_dim: int = _f(128, "projection-head output size D", rule=AT_LEAST_ONE)
    knn_k: int | None = _f(
        None, "neighbours of the kNN monitor (200; 20 on digits)", rule=AT_LEAST_ONE
    )
    knn_t: float = _f(0.1, "temperature of the weighted kNN vote", rule=POSITIVE)
    knn_every: int = _f(
        1, "run the kNN monitor every this many epochs (0 = only at the end)", rule=NON_NEGATIVE
    )
    seed: int = _f(0, "random seed (model init, data order, augmentation)", rule=SEED)
    device: str = _f("auto", "auto, cpu or cuda", rule=DEVICE)
    precision: str = _f(
        "auto",
        "autocast: auto (float16 + grad scaling on CUDA, float32 on CPU), fp32, bf16 or fp16 (CUDA)",
        rule=PRECISION,
    )
    sync_bn: bool = _f(
        False, "SyncBatchNorm over all processes under torchrun (CUDA, --norm batch)"
    )
    channels_last: bool = _f(True, "channels-last memory format for convolutions")
    out: str | None = _f(
        None, "run directory (default runs/<data>-<method>-<timestamp>)", rule=PATH
    )
    resume: bool = _f(False, "continue the run in `out` from checkpoints/last.pt")
    quiet: bool = _f(False, "no progress bars")


@dataclass
class ProbeConfig:
    """Options of ``contrastkit linear-probe``: a linear classifier on frozen features."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    epochs: int = _f(100, "probe training epochs", rule=AT_LEAST_ONE)
    batch_size: int = _f(256, "probe batch size", rule=AT_LEAST_ONE)
    lr: float = _f(0.01, "AdamW learning rate of the probe (cosine decay)", rule=POSITIVE)
    weight_decay: float = _f(1e-4, "probe weight decay", rule=NON_NEGATIVE)
    seed: int = _f(0, "random seed of the probe", rule=SEED)
    device: str = _f("auto", "auto, cpu or cuda", rule=DEVICE)
    quiet: bool = _f(False, "no progress bars")


@dataclass
class KnnConfig:
    """Options of ``contrastkit knn``: weighted cosine kNN on frozen features."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    k: int | None = _f(None, "neighbours (default: the run's knn_k)", rule=AT_LEAST_ONE)
    t: float | None = _f(
        None,
        "temperature of the vote weights exp(s/t) (default: the run's knn_t)",
        rule=POSITIVE,
    )
    device: str = _f("auto", "auto, cpu or cuda", rule=DEVICE)


@dataclass
class EmbedConfig:
    """Options of ``contrastkit embed``: backbone features of a split to an ``.npz`` file."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    split: str = _f("test", "split to embed", rule=SPLIT)
    out: str = _f(
        "embeddings.npz",
        "output .npz with features (N, F) float32 and labels (N,) int64",
        rule=PATH,
    )
    device: str = _f("auto", "auto, cpu or cuda", rule=DEVICE)


@dataclass
class RunConfig:
    """Options of ``contrastkit run``: pretrain each method, probe, kNN, table and report."""

    data: str = _f("digits", "data set (see pretrain)", rule=DATA)
    methods: str = _f("simclr,supcon,ce", "comma-separated methods", rule=METHODS_LIST)
    out: str | None = _f(
        None, "directory of the whole run (default runs/<data>-<timestamp>)", rule=PATH
    )
    data_root: str | None = _f(None, "directory of the data files")
    download: bool = _f(False, "download the data with torchvision first")
    image_size: int | None = _f(None, "resize folder images to this square size", rule=AT_LEAST_ONE)
    limit: int | None = _f(None, "use only this many training images", rule=AT_LEAST_TWO)
    model: str | None = _f(None, "encoder (default by image size)", rule=MODEL)
    norm: str = _f("batch", "batch or group", rule=NORM)
    epochs: int | None = _f(
        None, "pretraining epochs (default: the data set's recipe)", rule=AT_LEAST_ONE
    )
    batch_size: int | None = _f(
        None, "pretraining batch size (default: the recipe's)", rule=CONTRASTIVE_BATCH
    )
    optimizer: str = _f("sgd", "sgd, lars or adamw", rule=OPTIMIZER)
    lr: float | None = _f(
        None, "base learning rate for batch 256 (default: each method's recipe)", rule=POSITIVE
    )
    weight_decay: float | None = _f(
        None, "weight decay (default: each method's recipe)", rule=NON_NEGATIVE
    )
    warmup_epochs: float | None = _f(
        None, "warm-up epochs (default: each method's recipe)", rule=NON_NEGATIVE
    )
    temperature: float | None = _f(
        None, "loss temperature τ (default: each method's recipe)", rule=POSITIVE
    )
    augment: str | None = _f(None, "augmentation preset (default: the data set's)", rule=AUGMENT)
    views: int | None = _f(
        None, "augmented views per image for simclr/supcon (default 2)", rule=AT_LEAST_ONE
    )
    proj_dim: int | None = _f(
        None, "projection-head output size D (default 128)", rule=AT_LEAST_ONE
    )
    channels_last: bool = _f(True, "channels-last memory format for convolutions")
    precision: str = _f("auto", "autocast: auto, fp32, bf16 or fp16 (see pretrain)", rule=PRECISION)
    knn_every: int | None = _f(
        None,
        "kNN monitor every this many epochs (default 1); knn.json gives the last epoch's",
        rule=NON_NEGATIVE,
    )
    seed: int = _f(0, "random seed", rule=SEED)
    probe_epochs: int = _f(100, "linear-probe epochs", rule=AT_LEAST_ONE)
    knn_k: int | None = _f(
        None, "neighbours of the kNN evaluation (200; 20 on digits)", rule=AT_LEAST_ONE
    )
    knn_t: float = _f(0.1, "temperature of the kNN vote", rule=POSITIVE)
    device: str = _f("auto", "auto, cpu or cuda", rule=DEVICE)
    resume: bool = _f(False, "continue the run in `out` (--methods may add methods to it)")
    quiet: bool = _f(False, "no progress bars")


C = TypeVar("C")


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """Coerce ints to floats where a float is wanted; reject anything else of the wrong type."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ContrastkitError(f"{spelling(name)} must not be empty")
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
    raise ContrastkitError(f"{spelling(name)} must be {names}, got {value!r}")


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
    """Build config ``cls`` from ``values``; unknown keys, wrong types and values are errors.

    Keys of older versions are upgraded first (:func:`upgrade_legacy`) where ``cls`` has
    their successor, so old ``config.yaml`` files still resume and still work as ``--config``.
    Every value is then checked by :func:`validate`.

    Raises:
        ContrastkitError: naming the unknown key (with the known ones), the mistyped value or
            the value out of range or unknown.
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
    config = cls(**checked)
    validate(config)
    return config


def validate(config: Any) -> None:
    """Check each field of a config against its ``rule``, then the rules across fields.

    Unset (None) fields are skipped: the recipe fills them later with valid values. A
    ``views`` below 2 is refused for SimCLR (its positive pair is two views of one image),
    and a ``train_split`` the data set lacks.

    Raises:
        ContrastkitError: naming the first bad option as users spell it (``--flag (key)``),
            the value it got and what it expects.
    """
    for f in dataclasses.fields(config):
        rule, value = f.metadata.get("rule"), getattr(config, f.name)
        if rule is not None and value is not None:
            rule.check(f.name, value)
    methods = comma_list(getattr(config, "methods", "") or getattr(config, "method", ""))
    views = getattr(config, "views", None)
    if "simclr" in methods and views is not None and views < 2:
        raise ContrastkitError(
            f"{spelling('views')} must be >= 2 for simclr (its positive pair is two views of "
            f"an image), got {views}"
        )
    split, data = getattr(config, "train_split", None), getattr(config, "data", None)
    if split is not None and data is not None and not _dataset_object(data):
        from contrastkit.data import dataset_info

        splits = dataset_info(data).splits
        if split not in splits:
            raise ContrastkitError(
                f"unknown split {split!r} for {spelling('train_split')}; data set {data!r} has "
                + ", ".join(splits)
            )


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
    except UnicodeDecodeError as e:
        raise ContrastkitError(
            f"config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ContrastkitError(f"config file {path} must hold a mapping of options")
    return data
