"""What each option accepts: number ranges and lists of names, checked in one place.

A config field names its rule in ``metadata["rule"]`` (:mod:`contrastkit.train.config`); the
rule's ``check`` raises a one-line :class:`~contrastkit.errors.ContrastkitError` that names the
option as users spell it, the value it got and what it expects. Names are read from the
registries when checked, so this module imports no torch (``contrastkit --help`` stays fast).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from contrastkit.errors import ContrastkitError

METHODS = ("simclr", "supcon", "ce", "moco", "mocov3", "supcon-moco")
MOMENTUM_METHODS = ("moco", "mocov3", "supcon-moco")
"""The methods with a momentum (EMA) key network (``--momentum-ema``, ``--ema-schedule``)."""
QUEUE_METHODS = ("moco", "supcon-moco")
"""The methods with a queue of keys (``--queue-size``)."""
EMA_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("sgd", "lars", "adamw")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EXPORT_FORMATS = ("onnx", "torchscript")
CUSTOM_DATA = "<dataset object>"
"""A run's saved ``data`` when it ran on a ``Dataset`` object (which a config cannot hold)."""


def comma_list(*texts: str) -> list[str]:
    """The items of comma-separated lists, stripped, empty ones dropped: ``"a, b,"`` → ``["a", "b"]``."""
    return [item.strip() for text in texts for item in text.split(",") if item.strip()]


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the form ``package.module:attribute`` (a user's encoder factory)."""
    return re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", name) is not None


def flag(name: str) -> str:
    """Option ``name``'s command-line flag: ``queue_size`` → ``--queue-size``."""
    return "--" + name.replace("_", "-")


def spelling(name: str) -> str:
    """How users spell option ``name``: the CLI flag and the keyword / YAML key."""
    return f"{flag(name)} ({name})"


@dataclass(frozen=True)
class Bounds:
    """A number rule: finite, at least ``low`` (above it if ``above``), below ``high`` if given."""

    low: float
    above: bool = False
    high: float | None = None
    why: str = ""
    closed: bool = False

    def expected(self, integer: bool) -> str:
        """The rule in words, e.g. ``a finite number > 0`` or ``an integer >= 1``."""
        kind = "an integer" if integer else "a finite number"
        low = f"{self.low:g}" if not integer else str(int(self.low))
        if self.high is None:
            text = f"{kind} {'>' if self.above else '>='} {low}"
        else:
            high = f"{self.high:g}" if not integer else f"2**{int(self.high).bit_length() - 1}"
            close = "]" if self.closed else ")"
            text = f"{kind} in {'(' if self.above else '['}{low}, {high}{close}"
        return text + (f" ({self.why})" if self.why else "")

    def check(self, name: str, value: float) -> None:
        """Raise :class:`ContrastkitError` naming the option unless ``value`` keeps the rule."""
        finite = isinstance(value, int) or math.isfinite(value)
        ok = finite and (value > self.low if self.above else value >= self.low)
        too_high = self.high is not None and (
            value > self.high if self.closed else value >= self.high
        )
        if not ok or too_high:
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


def _data_sets() -> Sequence[str]:
    from contrastkit.data.registry import DATASETS

    return list(DATASETS)


def _other_data(name: str) -> bool:
    """``folder:PATH`` or ``shards:DIR`` with a path, or the placeholder of a ``Dataset`` object."""
    prefixes = ("folder:", "shards:")
    return name == CUSTOM_DATA or any(name.startswith(p) and name != p for p in prefixes)


def _models() -> Sequence[str]:
    from contrastkit.models import model_names  # importing the package fills the registry

    return model_names()


def _norms() -> Sequence[str]:
    from contrastkit.models.registry import NORMS

    return NORMS


def _presets() -> Sequence[str]:
    from contrastkit.data.augment import PRESETS

    return list(PRESETS)


POSITIVE = Bounds(0, above=True)
NON_NEGATIVE = Bounds(0)
AT_LEAST_ONE = Bounds(1)
DATA = Names("data set", _data_sets, _other_data, "folder:PATH or shards:DIR")
METHOD = Names("method", lambda: METHODS)
MODEL = Names("model", _models, is_import_path, "an import path module:factory")
NORM = Names("norm", _norms)
OPTIMIZER = Names("optimizer", lambda: OPTIMIZERS)
AUGMENT = Names("augmentation preset", _presets)
PRECISION = Names("precision", lambda: PRECISIONS)
DEVICE = Names(
    "device", lambda: DEVICES, lambda d: re.fullmatch(r"cuda:\d+", d) is not None, "cuda:N"
)
AT_LEAST_TWO = Bounds(2)
ENCODING = Names("encoding", lambda: ("raw", "png"))
MOMENTUM = Bounds(0, high=1)
UNIT_INTERVAL = Bounds(0, high=1, closed=True)
EMA_SCHEDULE = Names("EMA schedule", lambda: EMA_SCHEDULES)
SEED = Bounds(0, high=2**63)
CONTRASTIVE_BATCH = Bounds(2, why="a contrastive batch needs negatives")
PATH = Text("path")
SPLIT = Text("split name")
FRACTION = Bounds(0, high=1)
EVAL_SPLITS = ("val", "test")
EVAL_SPLIT = Names("evaluation split", lambda: EVAL_SPLITS)


def check_transfer_split(split: str, data: str | None) -> None:
    """Refuse ``--split val`` beside ``--data``: a transfer is scored on its data set's test split.

    Raises:
        ContrastkitError: if ``data`` names another data set and ``split`` is ``val``.
    """
    if data is not None and split == "val":
        raise ContrastkitError(
            f"--split val is the run's own validation split; another data set "
            f"(--data {data}) is scored on its test split: leave --split out"
        )


METHODS_LIST = Names("method", lambda: METHODS, many=True)
EXPORT_FORMAT = Names("export format", lambda: EXPORT_FORMATS)
OPEN_FRACTION = Bounds(0, above=True, high=1)
OBJECTIVES = ("knn", "probe")
OBJECTIVE = Names("objective", lambda: OBJECTIVES)
URL = Text("storage URL")
NAME = Text("name")
