"""Typed, validated configs: one tree of dataclasses for every command; unknown keys are rejected.

:class:`PretrainConfig` is the recipe and the run of one method. ``contrastkit run`` is a list of
methods plus :class:`ProbeSettings` plus one ``PretrainConfig`` (:class:`RunConfig`); the
evaluation commands have their own small configs. Each field's ``metadata["help"]`` is its
documentation, shown by ``--help``, and its ``metadata["rule"]`` what it accepts
(:mod:`contrastkit.train.rules`). A config validates itself when it is built, so a bad value
fails before anything is created on disk, from Python, YAML or the command line alike.

Flags and YAML keys are flat (:func:`options`): a ``RunConfig``'s ``pretrain`` fields keep their
names (``--epochs``), its ``probe`` fields get a ``probe_`` prefix (``--probe-epochs``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from contrastkit.errors import ContrastkitError
from contrastkit.train.rules import (
    AT_LEAST_ONE,
    AT_LEAST_TWO,
    AUGMENT,
    CONTRASTIVE_BATCH,
    CUSTOM_DATA,
    DATA,
    DEVICE,
    EMA_SCHEDULE,
    ENCODING,
    EVAL_SPLIT,
    EXPORT_FORMAT,
    FRACTION,
    METHOD,
    METHODS_LIST,
    MODEL,
    MOMENTUM,
    MOMENTUM_METHODS,
    NAME,
    NON_NEGATIVE,
    NORM,
    OBJECTIVE,
    OPEN_FRACTION,
    OPTIMIZER,
    PATH,
    POSITIVE,
    PRECISION,
    QUEUE_METHODS,
    SEED,
    SPLIT,
    UNIT_INTERVAL,
    URL,
    Rule,
    comma_list,
    spelling,
)

__all__ = [
    "CUSTOM_DATA",
    "EmbedConfig",
    "ExportConfig",
    "IndexConfig",
    "KnnConfig",
    "Option",
    "PrepareConfig",
    "PretrainConfig",
    "ProbeConfig",
    "ProbeSettings",
    "RetrievalConfig",
    "RunConfig",
    "SearchConfig",
    "SweepConfig",
    "check_method_options",
    "comma_list",
    "from_dict",
    "load_yaml",
    "options",
    "to_dict",
    "validate",
]


def _f(default: Any, help: str, rule: Rule | None = None, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, "rule": rule, **meta})


def _transfer_data() -> Any:
    """The ``data`` option of an evaluation: another data set than the run's (transfer)."""
    return _f(
        None,
        "evaluate on this other data set (transfer: its images adapted to the run's channels "
        "and size; written to NAME-<data>.json)",
        rule=DATA,
    )


class _Validated:
    """A config that checks every field (type and rule) when it is built or replaced."""

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class PretrainConfig(_Validated):
    """Options of ``contrastkit pretrain``: one method's recipe and run.

    None means the recipe's default (:mod:`contrastkit.train.recipes`): per data set for
    ``epochs``, ``batch_size`` and ``knn_k``, per method for ``lr``, ``weight_decay``,
    ``warmup_epochs`` and ``temperature``, by image size for ``model``. The resolved values are
    what a run's ``config.yaml`` records.
    """

    data: str = _f(
        "digits",
        "data set: digits, fashion-mnist, cifar10, cifar100, stl10, folder:PATH or shards:DIR "
        "(a directory written by contrastkit prepare)",
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
    val_fraction: float = _f(
        0.0,
        "share of each class of the training split held out for validation (stratified, "
        "seed 0; 0 = none): the kNN monitor and every choice then use it, never the test split",
        rule=FRACTION,
    )
    augment: str | None = _f(
        None,
        "augmentation preset: digits, fashion-mnist, shift-flip, simclr or none"
        " (default: the data set's)",
        rule=AUGMENT,
    )
    method: str = _f(
        "supcon",
        "simclr (labels unused), supcon (labels), ce (cross-entropy), moco (MoCo v2), mocov3 "
        "or supcon-moco (supcon with a queue of labelled keys)",
        rule=METHOD,
    )
    model: str | None = _f(
        None,
        "encoder: small_cnn, small_cnn_s2, resnet18, resnet34, resnet50 or an import path "
        "module:factory (default: small_cnn for grey images up to 32 px, else resnet18)",
        rule=MODEL,
    )
    norm: str = _f(
        "batch",
        "normalisation layers: batch, group (BN-free) or split (batch norm over --bn-splits "
        "sub-batches; the moco methods shuffle the key batch across them)",
        rule=NORM,
    )
    bn_splits: int | None = _f(None, "sub-batches of --norm split (default 8)", rule=AT_LEAST_ONE)
    epochs: int | None = _f(
        None,
        "training epochs (default: the data set's, 100; 30 on fashion-mnist)",
        rule=AT_LEAST_ONE,
    )
    batch_size: int | None = _f(
        None,
        "images per step, all processes together, each giving `views` views (default 256)",
        rule=CONTRASTIVE_BATCH,
    )
    views: int = _f(
        2,
        "augmented views per image for simclr/supcon (ce uses 1, the moco methods 2)",
        rule=AT_LEAST_ONE,
    )
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
        None,
        "loss temperature τ (simclr 0.5, supcon and supcon-moco 0.1, moco and mocov3 0.2 by "
        "default)",
        rule=POSITIVE,
    )
    queue_size: int | None = _f(
        None,
        "moco, supcon-moco: keys in the FIFO queue of negatives, at least the keys of a step "
        "(default 4096)",
        rule=AT_LEAST_ONE,
    )
    momentum_ema: float | None = _f(
        None,
        "moco methods: momentum m of the key network, key = m·key + (1-m)·query (default 0.99)",
        rule=UNIT_INTERVAL,
    )
    ema_schedule: str | None = _f(
        None,
        "moco methods: constant, or cosine (m rises to 1 over the run, BYOL/MoCo v3)"
        " (default constant)",
        rule=EMA_SCHEDULE,
    )
    symmetric: bool = _f(
        False, "moco: both views as queries (mean of the two losses); mocov3 always is"
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
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)
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
        None,
        "run directory (default runs/<data>-<method>-<timestamp>)",
        rule=PATH,
        run_help="directory of the whole run, one sub-directory per method "
        "(default runs/<data>-<timestamp>)",
    )
    workers: int = _f(
        2,
        "DataLoader processes reading shards:DIR (0 = the training process; in-memory data "
        "sets use none)",
        rule=NON_NEGATIVE,
    )
    max_steps: int | None = _f(
        None,
        "stop after this many optimiser steps in total and finish the run there (the "
        "learning-rate schedule stays that of --epochs)",
        rule=AT_LEAST_ONE,
    )
    save_every: int | None = _f(
        None,
        "also checkpoint every this many steps within an epoch (a killed run resumes from "
        "there; default: at the end of each epoch only)",
        rule=AT_LEAST_ONE,
    )
    quiet: bool = _f(False, "no progress bars (and no epoch lines when stderr is not a terminal)")
    tensorboard: bool = _f(
        False,
        "also log loss, lr, kNN accuracy and images/s to RUN/tensorboard (torch.utils.tensorboard;"
        " metrics.jsonl stays the record)",
    )


@dataclass
class ProbeSettings(_Validated):
    """How the linear probe trains: AdamW with a per-step cosine on frozen features."""

    epochs: int = _f(100, "probe training epochs", rule=AT_LEAST_ONE)
    batch_size: int = _f(256, "probe batch size", rule=AT_LEAST_ONE)
    lr: float = _f(0.01, "AdamW learning rate of the probe (cosine decay)", rule=POSITIVE)
    weight_decay: float = _f(1e-4, "probe weight decay", rule=NON_NEGATIVE)


@dataclass
class ProbeConfig(ProbeSettings):
    """Options of ``contrastkit linear-probe``: a linear classifier on frozen features."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    data: str | None = _transfer_data()
    data_root: str | None = _f(None, "directory of the other data set's files (its default)")
    split: str = _f(
        "test",
        "split to score: val (the run's --val-fraction) or test; writes probe_val.json or "
        "probe.json",
        rule=EVAL_SPLIT,
    )
    seed: int = _f(0, "random seed of the probe", rule=SEED)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)
    quiet: bool = _f(False, "no progress bars")


@dataclass
class KnnConfig(_Validated):
    """Options of ``contrastkit knn``: weighted cosine kNN on frozen features."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    data: str | None = _transfer_data()
    data_root: str | None = _f(None, "directory of the other data set's files (its default)")
    split: str = _f(
        "test",
        "split to score: val (the run's --val-fraction) or test; writes knn_val.json or knn.json",
        rule=EVAL_SPLIT,
    )
    k: int | None = _f(None, "neighbours (default: the run's knn_k)", rule=AT_LEAST_ONE)
    t: float | None = _f(
        None,
        "temperature of the vote weights exp(s/t) (default: the run's knn_t)",
        rule=POSITIVE,
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)


@dataclass
class EmbedConfig(_Validated):
    """Options of ``contrastkit embed``: backbone features of a split to an ``.npz`` file."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    split: str = _f(
        "test",
        "split to embed (train: without the run's validation images, val: those, see "
        "--val-fraction)",
        rule=SPLIT,
    )
    out: str = _f(
        "embeddings.npz",
        "output .npz with features (N, F) float32 and labels (N,) int64",
        rule=PATH,
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)


@dataclass
class RetrievalConfig(_Validated):
    """Options of ``contrastkit retrieval``: a split's images retrieving the training split's."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    split: str = _f(
        "test",
        "split whose images are the queries (val: the run's validation images; train: each "
        "leaves itself out)",
        rule=SPLIT,
    )
    data: str | None = _transfer_data()
    data_root: str | None = _f(None, "directory of the other data set's files (its default)")

    device: str = _f("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)


@dataclass
class ExportConfig(_Validated):
    """Options of ``contrastkit export``: the frozen encoder with its normalisation, for serving."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    format: str = _f("onnx", "onnx or torchscript", rule=EXPORT_FORMAT)
    out: str | None = _f(
        None,
        "file to write (default RUN_DIR/encoder.onnx, or encoder.pt for torchscript)",
        rule=PATH,
    )

    @property
    def path(self) -> str:
        """The file to write: ``out``, or the default for the format in the run directory."""
        if self.out is not None:
            return self.out
        return str(Path(self.run_dir) / ("encoder.onnx" if self.format == "onnx" else "encoder.pt"))


@dataclass
class IndexConfig(_Validated):
    """Options of ``contrastkit index``: a faiss index of the run's training features."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    out: str | None = _f(None, "index directory (default RUN_DIR/index)", rule=PATH)
    approximate: bool = _f(
        False, "approximate HNSW index (faster on large sets) instead of the exact flat one"
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)

    @property
    def directory(self) -> str:
        """The index directory: ``out``, or ``RUN_DIR/index``."""
        return self.out if self.out is not None else str(Path(self.run_dir) / "index")


@dataclass
class SearchConfig(_Validated):
    """Options of ``contrastkit search``: the nearest training images of image files."""

    run_dir: str = _f("", "run directory written by pretrain", rule=PATH)
    k: int = _f(5, "neighbours per image", rule=AT_LEAST_ONE, short="-k")
    index: str | None = _f(None, "index directory (default RUN_DIR/index)", rule=PATH)
    out: str = _f("search.png", "PNG grid of each query and its neighbours", rule=PATH)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", rule=DEVICE)

    @property
    def directory(self) -> str:
        """The index directory: ``index``, or ``RUN_DIR/index``."""
        return self.index if self.index is not None else str(Path(self.run_dir) / "index")


@dataclass
class PrepareConfig(_Validated):
    """Options of ``contrastkit prepare``: a data set written once as tar shards (``shards:DIR``)."""

    source: str = _f(
        "",
        "data set to prepare: digits, fashion-mnist, cifar10, cifar100, stl10 or folder:PATH",
        rule=DATA,
    )
    out: str = _f("", "directory to write (then train with --data shards:OUT)", rule=PATH)
    image_size: int | None = _f(None, "resize folder images to this square size", rule=AT_LEAST_ONE)
    limit: int | None = _f(
        None,
        "keep only this many training images (the seeded subset pretrain --limit takes)",
        rule=AT_LEAST_TWO,
    )
    shard_size: int = _f(5000, "samples per shard", rule=AT_LEAST_ONE)
    encoding: str = _f(
        "raw", "raw (.npy uint8, fastest to read) or png (smaller on disk)", rule=ENCODING
    )
    workers: int = _f(2, "processes writing shards", rule=AT_LEAST_ONE)
    skip_bad: bool = _f(
        False, "skip unreadable images (listed in index.json and on stderr) instead of stopping"
    )
    data_root: str | None = _f(None, "directory of the data files (each data set has a default)")
    download: bool = _f(False, "download the data with torchvision first (needs internet)")
    quiet: bool = _f(False, "no progress bar")


@dataclass
class RunConfig(_Validated):
    """Options of ``contrastkit run``: pretrain each method, probe, kNN, table and report.

    Every method trains with the one ``pretrain`` recipe (its ``method`` field is set per
    method, its ``out`` is the run's directory, each method in ``out/<method>``).
    """

    method: str = _f("simclr,supcon,ce", "comma-separated methods to compare", rule=METHODS_LIST)
    pretrain: PretrainConfig = field(
        default_factory=PretrainConfig, metadata={"flatten": "", "help": ""}
    )
    probe: ProbeSettings = field(
        default_factory=ProbeSettings, metadata={"flatten": "probe_", "help": ""}
    )

    @property
    def methods(self) -> list[str]:
        """The methods, in order, each once."""
        return list(dict.fromkeys(comma_list(self.method)))


@dataclass
class SweepConfig(_Validated):
    """Options of ``contrastkit sweep``: a hyperparameter search on validation accuracy.

    Every pretrain option is fixed for all trials but those ``space`` varies
    (:mod:`contrastkit.train.space`); each trial is a run directory ``out/<study>/trial-NNNN``.
    """

    space: str = _f(
        "",
        "YAML file: option → list of choices (lr: [0.05, 0.1]) or range "
        "(temperature: {low: 0.05, high: 0.5, log: true}; step: for a grid)",
        rule=PATH,
    )
    trials: int = _f(
        10, "the study's total of finished (complete or pruned) trials", rule=AT_LEAST_ONE
    )
    objective: str = _f(
        "knn", "what a trial maximises: knn or probe accuracy on validation", rule=OBJECTIVE
    )
    storage: str | None = _f(
        None,
        "Optuna storage, any SQLAlchemy URL, e.g. postgresql://… (default: sqlite file "
        "sweep.db in --out)",
        rule=URL,
    )
    study: str = _f("sweep", "study name in the storage", rule=NAME)
    heartbeat: int = _f(
        30,
        "seconds between a trial's heartbeats; one silent for twice this long (its process "
        "killed) is failed and redone",
        rule=AT_LEAST_ONE,
    )
    val_fraction: float = _f(
        0.1,
        "share of each class of the training split held out for validation (stratified, "
        "seed 0): every trial is scored on it; the test split is never read",
        rule=OPEN_FRACTION,
    )
    out: str | None = _f(None, "sweep directory (default runs/sweep-<data>-<method>)", rule=PATH)
    pretrain: PretrainConfig = field(
        default_factory=PretrainConfig, metadata={"flatten": "", "help": ""}
    )
    probe: ProbeSettings = field(
        default_factory=ProbeSettings, metadata={"flatten": "probe_", "help": ""}
    )


C = TypeVar("C")


@dataclass(frozen=True)
class Option:
    """One flat option of a config tree: a flag and a YAML key.

    Attributes:
        name: The flat name (``probe_epochs``; the flag is ``--probe-epochs``).
        path: Attribute names from the root config to the field (``("probe", "epochs")``).
        field: The dataclass field.
        hint: Its type.
        help: Its help text in this config (a field may say more in a ``run``).
    """

    name: str
    path: tuple[str, ...]
    field: dataclasses.Field[Any]
    hint: Any
    help: str


def options(cls: type, *, _prefix: str = "", _in_run: bool = False) -> list[Option]:
    """The flat options of config class ``cls``, its own fields first.

    A field whose metadata has ``flatten`` is a sub-config: its options join the list with that
    prefix, except those the outer config's own fields shadow (a ``RunConfig``'s ``method``).
    """
    hints = typing.get_type_hints(cls)
    own: list[Option] = []
    nested: list[Option] = []
    for f in dataclasses.fields(cls):
        prefix = f.metadata.get("flatten")
        if prefix is None:
            text = f.metadata.get("run_help") if _in_run else None
            own.append(
                Option(_prefix + f.name, (f.name,), f, hints[f.name], text or f.metadata["help"])
            )
            continue
        for o in options(hints[f.name], _prefix=prefix, _in_run=True):
            nested.append(dataclasses.replace(o, path=(f.name, *o.path)))
    names = {o.name for o in own}
    return own + [o for o in nested if o.name not in names]


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


def _build(cls: type[C], values: Mapping[str, Any], opts: list[Option], depth: int) -> C:
    """Construct ``cls`` from the checked flat ``values`` of ``opts`` (their paths at ``depth``)."""
    kwargs: dict[str, Any] = {}
    subs: dict[str, list[Option]] = {}
    for o in opts:
        if len(o.path) == depth + 1:
            if o.name in values:
                kwargs[o.path[depth]] = values[o.name]
        else:
            subs.setdefault(o.path[depth], []).append(o)
    hints = typing.get_type_hints(cls)
    for name, sub in subs.items():
        kwargs[name] = _build(hints[name], values, sub, depth + 1)
    return cls(**kwargs)


def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
    """Build config ``cls`` from flat ``values`` (YAML keys or keyword options).

    A list of methods in YAML (``method: [supcon, ce]``) is accepted as their comma list.

    Raises:
        ContrastkitError: naming an unknown key (with the known ones), a mistyped value or a
            value out of range or unknown (:func:`validate`).
    """
    opts = options(cls)
    by_name = {o.name: o for o in opts}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ContrastkitError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
            f"known: {', '.join(sorted(by_name))}"
        )
    values = dict(values)
    if isinstance(values.get("method"), list | tuple):
        values["method"] = ",".join(str(m) for m in values["method"])
    checked = {k: _check_type(k, v, by_name[k].hint) for k, v in values.items()}
    for o in opts:  # by the flat name given: a run's --probe-epochs, not its probe's --epochs
        rule = o.field.metadata.get("rule")
        if rule is not None and checked.get(o.name) is not None:
            rule.check(o.name, checked[o.name])
    return _build(cls, checked, opts, 0)


def to_dict(config: Any) -> dict[str, Any]:
    """The config's flat options and their values (what ``config.yaml`` holds)."""
    out: dict[str, Any] = {}
    for o in options(type(config)):
        value = config
        for attr in o.path:
            value = getattr(value, attr)
        out[o.name] = value
    return out


def validate(config: Any) -> None:
    """Check each field of a config (its type, then its ``rule``), then the rules across fields.

    Unset (None) fields are skipped: the recipe fills them later with valid values. A
    ``views`` below 2 is refused for SimCLR (its positive pair is two views of one image),
    and a ``train_split`` the data set lacks.

    Raises:
        ContrastkitError: naming the first bad option as users spell it (``--flag (key)``),
            the value it got and what it expects.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        if "flatten" in f.metadata:
            continue
        value = _check_type(f.name, getattr(config, f.name), hints[f.name])
        object.__setattr__(config, f.name, value)  # an int given for a float becomes a float
        rule = f.metadata.get("rule")
        if rule is not None and value is not None:
            rule.check(f.name, value)
    if isinstance(config, RunConfig):
        _check_views(config.methods, config.pretrain.views)
        check_method_options(config.methods, config.pretrain)
    if isinstance(config, PretrainConfig):
        _check_views([config.method], config.views)
        _check_split(config)
        _check_tensorboard(config.tensorboard)


def _check_views(methods: list[str], views: int) -> None:
    if "simclr" in methods and views < 2:
        raise ContrastkitError(
            f"{spelling('views')} must be >= 2 for simclr (its positive pair is two views of "
            f"an image), got {views}"
        )


def _check_tensorboard(wanted: bool) -> None:
    import importlib.util

    if wanted and importlib.util.find_spec("tensorboard") is None:
        raise ContrastkitError(
            f"{spelling('tensorboard')} needs the tensorboard package: pip install tensorboard"
        )


METHOD_OPTIONS = {
    "queue_size": QUEUE_METHODS,
    "momentum_ema": MOMENTUM_METHODS,
    "ema_schedule": MOMENTUM_METHODS,
    "symmetric": ("moco", "mocov3"),
}
"""The options only some methods use, and those methods (set for no method: refused)."""


def check_method_options(methods: list[str], config: PretrainConfig) -> None:
    """Refuse an option no method of ``methods`` uses, a too small queue, a stray --bn-splits.

    A ``RunConfig`` checks its pretraining options against its methods when built; a single
    method's config is checked when its recipe is resolved (:func:`recipes.resolve`), since a
    ``RunConfig``'s ``pretrain`` holds no method of its own.

    Raises:
        ContrastkitError: naming the option, its value and what it expects.
    """
    for name, users in METHOD_OPTIONS.items():
        if getattr(config, name) not in (None, False) and not set(methods) & set(users):
            raise ContrastkitError(
                f"{spelling(name)} is an option of {' and '.join(users)}, not of "
                f"{', '.join(methods)}; leave it out or choose --method {users[0]}"
            )
    if config.sync_bn and config.norm == "split":
        raise ContrastkitError(
            f"{spelling('sync_bn')} and --norm split exclude each other: SyncBatchNorm takes "
            "the statistics over all processes, split batch norm over sub-batches; choose one"
        )
    if config.bn_splits is not None and config.norm != "split":
        raise ContrastkitError(
            f"{spelling('bn_splits')} is for --norm split, got --norm {config.norm}"
        )
    batch, queue = config.batch_size, config.queue_size
    if batch is not None and queue is not None:
        keys = batch * (2 if config.symmetric else 1)
        if queue < keys:
            raise ContrastkitError(
                f"{spelling('queue_size')} must be at least the {keys} keys a step enqueues "
                f"(--batch-size {batch}{', both views' if config.symmetric else ''}), got {queue}"
            )


def _check_split(config: PretrainConfig) -> None:
    split, data = config.train_split, config.data
    if split is None or data == CUSTOM_DATA:
        return
    from contrastkit.data import dataset_info

    splits = dataset_info(data).splits
    if split not in splits:
        raise ContrastkitError(
            f"unknown split {split!r} for {spelling('train_split')}; data set {data!r} has "
            + ", ".join(splits)
        )


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping of options.

    Raises:
        ContrastkitError: if the file is missing, not UTF-8 YAML or not a mapping.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
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
