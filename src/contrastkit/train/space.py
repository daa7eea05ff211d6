"""A sweep's search space: SPACE.yaml maps pretrain options to choices or ranges, checked first.

``lr: [0.05, 0.1]`` is a list of choices; ``temperature: {low: 0.05, high: 0.5, log: true}`` a
range of floats (``step:`` for a grid, on integers too). Every key must be a ``pretrain`` option
a trial may vary, and every value valid under that option's rule
(:mod:`contrastkit.train.rules`) together with the sweep's other options: :func:`parse_space`
checks them all before anything is created, each error one line naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from contrastkit.errors import ContrastkitError
from contrastkit.train.config import PretrainConfig, load_yaml, options

if TYPE_CHECKING:
    import optuna

FIXED = {
    "out": "each trial's run directory is set by the sweep",
    "val_fraction": "every trial must be scored on the same validation images",
    "data": "a sweep tunes one data set",
    "data_root": "a sweep tunes one data set",
    "download": "it changes no result",
    "device": "it changes no result",
    "quiet": "it changes no result",
}
"""Pretrain options a space may not vary, and why."""

RANGE_KEYS = frozenset({"low", "high", "log", "step"})


@dataclass(frozen=True)
class Param:
    """One searched option: a list of ``choices``, or a range ``[low, high]``.

    Attributes:
        name: The pretrain option (``lr``).
        choices: The values to choose from (None for a range).
        low: Lowest value of a range.
        high: Highest value of a range (included).
        log: Sample the range on a log scale.
        step: Grid step of the range (None: continuous floats, or integers step 1).
        integer: The option takes integers.
    """

    name: str
    choices: tuple[Any, ...] | None = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value of this option, from Optuna's sampler."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> Any:
        """The parameter as SPACE.yaml writes it (what a study records of its space)."""
        if self.choices is not None:
            return list(self.choices)
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


def _kinds(hint: Any) -> tuple[type, ...]:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)


def _try(where: str, base: PretrainConfig, name: str, value: Any) -> None:
    """Check that option ``name`` may take ``value`` in ``base`` (type, rule, cross-rules)."""
    try:
        replace(base, **{name: value})
    except ContrastkitError as e:
        raise ContrastkitError(f"{where}: {e}") from None


def _range(
    where: str, base: PretrainConfig, name: str, spec: Mapping[str, Any], hint: Any
) -> Param:
    """A range parameter from ``{low, high, log, step}``, checked."""
    extra = sorted(set(spec) - RANGE_KEYS)
    if extra or "low" not in spec or "high" not in spec:
        raise ContrastkitError(
            f"{where}: a range needs low and high (and may have log, step), got keys "
            f"{', '.join(map(str, spec)) or 'none'}"
        )
    kinds = _kinds(hint)
    integer = int in kinds
    if not integer and float not in kinds:
        raise ContrastkitError(f"{where}: a range needs a numeric option; give a list of choices")
    number = int if integer else (int, float)
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for what, v in (("low", low), ("high", high), ("step", step)):
        bad = isinstance(v, bool) or not isinstance(v, number) or not math.isfinite(v)
        if (v is not None or what != "step") and bad:
            kind = "an integer" if integer else "a finite number"
            raise ContrastkitError(f"{where}: {what} must be {kind}, got {v!r}")
    if not isinstance(log, bool):
        raise ContrastkitError(f"{where}: log must be true or false, got {log!r}")
    if not low < high:
        raise ContrastkitError(f"{where}: low must be below high, got low {low!r}, high {high!r}")
    if step is not None and (step <= 0 or log):
        why = "a log range has no step" if log else f"step must be > 0, got {step!r}"
        raise ContrastkitError(f"{where}: {why}")
    if log and low <= 0:
        raise ContrastkitError(f"{where}: a log range needs low > 0, got {low!r}")
    for v in (low, high):
        _try(where, base, name, v)
    return Param(name, None, low, high, log, step, integer)


def _choices(where: str, base: PretrainConfig, name: str, values: list[Any]) -> Param:
    """A list-of-choices parameter, each choice checked."""
    if not values:
        raise ContrastkitError(f"{where}: the list of choices is empty")
    for v in values:
        if isinstance(v, list | dict):
            raise ContrastkitError(f"{where}: a choice must be one value, got {v!r}")
        _try(where, base, name, v)
    return Param(name, tuple(values))


def parse_space(
    space: Mapping[str, Any], base: PretrainConfig, source: str = "space"
) -> list[Param]:
    """The parameters of a search space, every key and value checked against ``base``.

    Args:
        space: Option name → list of choices, or ``{low, high, log?, step?}``.
        base: The sweep's pretrain options: each value must be valid in it.
        source: What to call the space in messages (its file).

    Returns:
        One :class:`Param` per key, in the space's order.

    Raises:
        ContrastkitError: one line naming the key: an unknown or fixed option, an empty list,
            a malformed range, a value the option's rule refuses.
    """
    if not isinstance(space, Mapping) or not space:
        raise ContrastkitError(f"{source} must map at least one pretrain option to its values")
    hints = {o.name: o.hint for o in options(PretrainConfig)}
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    params = []
    for name, spec in space.items():
        where = f"{source}, key {name!r}"
        if name not in fields:
            raise ContrastkitError(
                f"{where}: not a pretrain option; choose from {', '.join(sorted(fields - set(FIXED)))}"
            )
        if name in FIXED:
            raise ContrastkitError(f"{where}: a sweep cannot vary it ({FIXED[name]})")
        if isinstance(spec, list):
            params.append(_choices(where, base, name, spec))
        elif isinstance(spec, Mapping):
            params.append(_range(where, base, name, spec, hints[name]))
        else:
            raise ContrastkitError(
                f"{where}: give a list of choices ([0.05, 0.1]) or a range "
                f"({{low: 0.05, high: 0.5}}), got {spec!r}"
            )
    return params


def load_space(path: str, base: PretrainConfig) -> list[Param]:
    """:func:`parse_space` of the YAML file ``path``.

    Raises:
        ContrastkitError: if the file is missing or not a YAML mapping, or as
            :func:`parse_space`.
    """
    return parse_space(load_yaml(path), base, source=f"space file {path}")
