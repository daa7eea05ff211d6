"""Stage 2 on a run directory: linear probe, kNN and feature export from the frozen encoder."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from contrastkit.data import ImageTensorDataset, dataset_info, resolve_dataset
from contrastkit.data.adapt import AdaptedShardSplit, adapt_images
from contrastkit.data.registry import Split
from contrastkit.data.shards import ShardSplit, iter_images
from contrastkit.data.splits import carve_val
from contrastkit.errors import ContrastkitError, ContrastkitWarning
from contrastkit.train import checkpoint as ckpt_io
from contrastkit.train import files, rundir
from contrastkit.train.config import (
    CUSTOM_DATA,
    EmbedConfig,
    KnnConfig,
    ProbeConfig,
    RetrievalConfig,
)
from contrastkit.train.device import autocast_dtype, resolve_device
from contrastkit.train.features import extract_features
from contrastkit.train.knn import knn_accuracy
from contrastkit.train.networks import DataShape, build_networks
from contrastkit.train.probe import LinearProbe, fit_linear_probe, score_probe
from contrastkit.train.retrieval import retrieval_metrics
from contrastkit.train.rules import check_transfer_split
from contrastkit.train.rundir import result_name

DataArg = str | Dataset[tuple[Tensor, int]] | None
"""Data to evaluate on instead of the run's: a registry name or a ``Dataset`` object."""

Config = TypeVar("Config", ProbeConfig, KnnConfig, EmbedConfig, RetrievalConfig)


def _as_config(cls: type[Config], config: Config | str | Path) -> Config:
    """``config`` itself, or the default config of ``cls`` for the run directory ``config``."""
    return cls(run_dir=str(config)) if isinstance(config, str | Path) else config


@dataclass
class LoadedRun:
    """A pretrained encoder (eval mode, on its device) and what the run recorded."""

    encoder: nn.Module
    config: dict[str, Any]
    shape: DataShape
    device: torch.device
    epoch: int = 0
    finished: bool = True

    @property
    def checkpoint_state(self) -> dict[str, Any]:
        """What the evaluation files record of the weights: the epoch and whether it was the last."""
        return {"checkpoint_epoch": self.epoch, "checkpoint_finished": self.finished}

    @property
    def feature_options(self) -> dict[str, Any]:
        """How the run computed features: its autocast dtype and memory format.

        The run's precision on the evaluation device; float32 where that device cannot do it
        (an fp16 CUDA run evaluated on the CPU).
        """
        precision = str(self.config.get("precision", "auto"))
        try:
            dtype = autocast_dtype(precision, self.device)
        except ContrastkitError:
            dtype = None
        return {"amp_dtype": dtype, "channels_last": bool(self.config.get("channels_last", False))}


def load_encoder(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild the run's encoder from ``checkpoints/last.pt`` (weights only, eval mode).

    Its weights are in the run's memory format (channels-last with ``channels_last``), as
    training held them, so its features are those of the kNN monitor to the last bit.

    Warns when the run is unfinished (its checkpoint is of an epoch before the last).

    Raises:
        ContrastkitError: if the directory holds no run or the checkpoint is unreadable.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ContrastkitError(f"run directory {path} does not exist")
    dev = resolve_device(device)
    ckpt = ckpt_io.load_checkpoint(path / rundir.CHECKPOINT, map_location=dev)
    cfg = ckpt["config"]
    shape = DataShape(**ckpt["data"])
    encoder, _ = build_networks(
        model=cfg["model"],
        norm=cfg["norm"],
        method=cfg["method"],
        shape=shape,
        proj_dim=cfg["proj_dim"],
        bn_splits=cfg.get("bn_splits"),
    )
    encoder.load_state_dict(ckpt["encoder"])
    finished = bool(ckpt.get("finished", True))
    if not finished:
        warnings.warn(
            f"{path} is unfinished: its checkpoint holds epoch {ckpt.get('epoch')} of "
            f"{cfg.get('epochs')}; evaluating those weights (resume it to finish: "
            f"contrastkit pretrain --out {path} --resume)",
            ContrastkitWarning,
            stacklevel=3,
        )
    epoch = int(ckpt.get("epoch", 0))
    # the weights in the memory format training kept them in: a channels-last convolution
    # rounds differently (~1e-6), enough to flip a borderline kNN vote against the monitor's
    fmt = torch.channels_last if cfg.get("channels_last", False) else torch.contiguous_format
    encoder = encoder.to(dev, memory_format=fmt)  # type: ignore[call-overload]
    return LoadedRun(encoder.eval(), cfg, shape, dev, epoch, finished)


def neighbours(k: int, bank_size: int, what: str) -> int:
    """The k a kNN vote uses: ``k``, or the bank's size when it is smaller (with a warning).

    Args:
        k: The neighbours asked for.
        bank_size: Labelled images in the bank.
        what: Who votes, for the warning (``the kNN monitor``, ``kNN``).
    """
    if k <= bank_size:
        return k
    warnings.warn(
        f"{what}: k={k} is more than the {bank_size} training images of its bank; "
        f"using k={bank_size}",
        ContrastkitWarning,
        stacklevel=3,
    )
    return bank_size


def _split(run: LoadedRun, data: DataArg, split: str) -> Split:
    """Load ``split`` of the run's data set, or materialise the ``Dataset`` given instead."""
    if data is not None and not isinstance(data, str):
        return resolve_dataset(data, split)
    name = data or run.config["data"]
    if not isinstance(name, str) or name == CUSTOM_DATA:
        raise ContrastkitError(
            "this run was pretrained on a Dataset object: pass train_data= and test_data="
        )
    info = dataset_info(name)
    if split not in info.splits:
        raise ContrastkitError(
            f"data set {name!r} has no split {split!r}; choose one of {', '.join(info.splits)}"
        )
    return resolve_dataset(
        name,
        split,
        root=run.config.get("data_root"),
        download=False,
        image_size=run.config.get("image_size"),
    )


def _features(run: LoadedRun, ds: Split) -> Tensor:
    workers = int(run.config.get("workers", 2))
    return extract_features(
        run.encoder,
        iter_images(ds, 512, workers=workers, pin_memory=run.device.type == "cuda"),
        mean=run.shape.mean,
        std=run.shape.std,
        device=run.device,
        **run.feature_options,
    )


def _labelled(ds: Split, what: str) -> Split:
    if not ds.has_labels:
        raise ContrastkitError(f"{what} ({ds.name}) has unlabelled images: cannot evaluate on it")
    return ds


@dataclass
class Transfer:
    """Another data set than the run's, its images adapted to the run's encoder input.

    Attributes:
        data: Its name.
        adaptation: What was changed to fit the encoder (channels, size); empty if nothing.
    """

    data: str
    adaptation: list[str]

    @property
    def record(self) -> dict[str, Any]:
        """What the evaluation's JSON records of it."""
        return {"transfer": {"data": self.data, "adaptation": self.adaptation}}

    def file(self, name: str) -> str:
        """The JSON of this transfer: ``probe.json`` → ``probe-fashion-mnist.json``."""
        return rundir.transfer_name(name, self.data)


def _other_split(run: LoadedRun, name: str, root: str | None, split: str) -> tuple[Split, Transfer]:
    """Split ``split`` of data set ``name``, adapted to the run's channels and image size.

    In memory for a registry data set or a folder; a ``shards:DIR`` split stays streamed,
    each batch adapted as it is read (:class:`~contrastkit.data.adapt.AdaptedShardSplit`).
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ContrastkitError(
            f"data set {name!r} has no split {split!r}; choose one of {', '.join(info.splits)}"
        )
    ds = resolve_dataset(name, split, root=root, download=False)
    if isinstance(ds, ShardSplit):
        streamed, notes = AdaptedShardSplit.of(ds, run.shape.channels, run.shape.size)
        return streamed, Transfer(name, notes)
    images, notes = adapt_images(ds.images, run.shape.channels, run.shape.size)
    adapted = ImageTensorDataset(images, ds.labels, ds.classes, f"{ds.name} (adapted)")
    return adapted, Transfer(name, notes)


def _eval_splits(
    run: LoadedRun,
    cfg: ProbeConfig | KnnConfig,
    train_data: DataArg,
    test_data: DataArg,
    what: str,
) -> tuple[Split, Split, Transfer | None]:
    """The labelled train and test splits an evaluation uses: the run's, given, or ``cfg.data``'s."""
    if cfg.data is None:
        return (*eval_splits(run, cfg.split, train_data, test_data), None)
    check_transfer_split(cfg.split, cfg.data)
    if train_data is not None or test_data is not None:
        raise ContrastkitError(
            f"give the other data set either as data={cfg.data!r} or as train_data=/test_data=, "
            "not both"
        )
    train, transfer = _other_split(run, cfg.data, cfg.data_root, "train")
    test, _ = _other_split(run, cfg.data, cfg.data_root, "test")
    return _labelled(train, what), _labelled(test, what), transfer


def _val_split(run: LoadedRun, train: Split) -> Split:
    """The run's validation images out of its ``train`` split (:func:`carve_val`).

    Raises:
        ContrastkitError: if the run has none (pretrained with ``val_fraction`` 0).
    """
    _, val = carve_val(train, float(run.config.get("val_fraction") or 0.0))
    if val is None:
        raise ContrastkitError(
            "this run has no validation split (pretrained with --val-fraction 0): evaluate "
            "--split test, or pretrain with --val-fraction F"
        )
    return val


def eval_splits(
    run: LoadedRun, split: str, train_data: DataArg, test_data: DataArg
) -> tuple[Split, Split]:
    """The labelled images an evaluation trains on or votes with, and those it scores.

    The first are the run's training split without its validation images (all of it when
    the run has none); the second are the validation images (``split="val"``) or the test
    split (``split="test"``, ``test_data`` if given).

    Raises:
        ContrastkitError: on unlabelled data, or ``split="val"`` for a run without one.
    """
    full = _split(run, train_data, "train")
    train, _ = carve_val(_labelled(full, "the evaluation's training data"), _val_fraction(run))
    if split == "val":
        return train, _val_split(run, full)
    test = _split(run, test_data or train_data, "test")
    return train, _labelled(test, "the evaluation's test data")


def _val_fraction(run: LoadedRun) -> float:
    return float(run.config.get("val_fraction") or 0.0)


def linear_probe(
    config: ProbeConfig | str | Path,
    *,
    train_data: DataArg = None,
    test_data: DataArg = None,
) -> dict[str, Any]:
    """Train a linear classifier on the frozen encoder and write ``probe.json`` (``contrastkit linear-probe``).

    The probe trains on the run's training split without its validation images and is
    scored on ``config.split``: ``test`` writes ``probe.json``, ``val`` ``probe_val.json``
    (:func:`eval_splits`). Its settings are fixed (no choice is made on the scored split).
    Also writes ``embeddings_<split>.npz`` (the scored features and labels, for the t-SNE
    plot).

    Args:
        config: The probe's options (:class:`~contrastkit.train.config.ProbeConfig`), or just
            the run directory (default options).
        train_data: Override of the training data: a registry name or a ``Dataset``.
        test_data: Override of the test data.

    With ``config.data`` (another data set: transfer) its train and test splits are adapted
    to the run's channels and size (:func:`~contrastkit.data.adapt.adapt_images`), the
    result goes to ``probe-<data>.json`` with a ``transfer`` entry (the data set and the
    adaptation made), and the run's own ``probe.json`` and embeddings stay as they are.

    Returns:
        The content of ``probe.json``: train and ``<split>_acc`` accuracy, ``split``,
        confusion matrix (on the scored split), settings,
        ``checkpoint_epoch`` and ``checkpoint_finished`` (the weights' epoch and whether it was
        the run's last: an unfinished run also warns) and ``seconds``, the wall time of
        loading, feature extraction and training.
    """
    t0 = time.perf_counter()
    cfg = _as_config(ProbeConfig, config)
    run = load_encoder(cfg.run_dir, cfg.device)
    train, test, transfer = _eval_splits(run, cfg, train_data, test_data, "the probe")
    ftr, fte = _features(run, train), _features(run, test)
    return _write_probe(Path(cfg.run_dir), run, cfg, train, test, ftr, fte, t0, transfer=transfer)


def _write_probe(
    path: Path,
    run: LoadedRun,
    cfg: ProbeConfig,
    train: Split,
    test: Split,
    ftr: Tensor,
    fte: Tensor,
    t0: float,
    extra: dict[str, Any] | None = None,
    transfer: Transfer | None = None,
    trained: dict[int, tuple[LinearProbe, str]] | None = None,
) -> dict[str, Any]:
    """Train the probe on features (M, F), score (N, F); write its JSON and the embeddings.

    ``test`` is the scored split, ``cfg.split`` its name. A transfer writes
    ``probe-<data>.json`` and no embeddings, and has no CE-head accuracy. ``trained`` holds
    the probes trained on these training features with ``cfg``'s settings by output size
    (with the file each was written to): one of the size needed is scored, not trained again
    (the JSON then names that file as ``probe_trained_for``), and a new one is added.
    """
    split = cfg.split
    own = max(run.shape.num_classes, int(train.labels.max()) + 1) if transfer is None else 0
    num_classes = max(own, int(train.labels.max()) + 1, int(test.labels.max()) + 1)
    name = result_name("probe", split)
    probe, trained_for = (trained or {}).get(num_classes, (None, None))
    if probe is None:
        probe = fit_linear_probe(
            ftr,
            train.labels,
            num_classes=num_classes,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed,
        )
        if trained is not None:
            trained[num_classes] = (probe, name)
    result = score_probe(probe, fte, test.labels)
    k = (
        num_classes
        if transfer is not None
        else max(run.shape.num_classes, int(test.labels.max()) + 1)
    )
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (test.labels.numpy(), result.test_pred.numpy()), 1)
    out = {
        "train_acc": result.train_acc,
        f"{split}_acc": result.test_acc,
        "split": split,
        "n_train": len(train),
        f"n_{split}": len(test),
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size,
        "classes": run.shape.classes if transfer is None else test.classes,
        "confusion": confusion.tolist(),
    }
    if run.config["method"] == "ce" and transfer is None:
        out[f"head_{split}_acc"] = ce_head_accuracy(path, fte, test.labels, run.device)
    out.update(extra or {})
    if trained_for is not None:
        out["probe_trained_for"] = trained_for
    out.update(transfer.record if transfer else {})
    out.update(run.checkpoint_state)
    out["seconds"] = time.perf_counter() - t0
    files.write_json(path / (transfer.file(name) if transfer else name), out)
    if transfer is None:
        _write_npz(path / f"embeddings_{split}.npz", fte, test.labels)
    return out


def _write_npz(path: Path, features: Tensor, labels: Tensor, **extra: Any) -> None:
    """Features (N, F) as float32 and labels (N,) as int64 (and ``extra`` arrays) to ``path``."""
    with files.os_errors("write", path):
        np.savez(
            path,
            features=features.cpu().numpy().astype(np.float32),
            labels=labels.numpy().astype(np.int64),
            **extra,
        )


@torch.no_grad()
def ce_head_accuracy(
    run_dir: str | Path, features: Tensor, labels: Tensor, device: torch.device
) -> float:
    """Test accuracy of a CE run's own trained linear classifier on frozen features (N, F)."""
    ckpt = ckpt_io.load_checkpoint(Path(run_dir) / rundir.CHECKPOINT, map_location=device)
    weight, bias = ckpt["head"]["weight"], ckpt["head"]["bias"]  # (K, F), (K,)
    logits = features.to(device=device, dtype=weight.dtype) @ weight.T + bias  # (N, K)
    return float((logits.argmax(1).cpu() == labels).float().mean())


def knn(
    config: KnnConfig | str | Path, *, train_data: DataArg = None, test_data: DataArg = None
) -> dict[str, Any]:
    """Weighted cosine kNN accuracy of the frozen features; writes ``knn.json`` (``contrastkit knn``).

    ``config`` is a :class:`~contrastkit.train.config.KnnConfig` or just the run directory
    (the run's own k and t); ``train_data`` and ``test_data`` override the bank and the queries
    (a registry name or a ``Dataset``). The bank is the training split without the run's
    validation images; ``config.split`` names the queries: ``test`` writes ``knn.json``,
    ``val`` ``knn_val.json`` (:func:`eval_splits`). ``config.data`` evaluates on another data
    set as :func:`linear_probe` does, into ``knn-<data>.json``.

    ``knn.json`` holds ``<split>_acc``, ``split``, the k used (at most the bank's size: a larger one warns),
    t, the split sizes, ``checkpoint_epoch``, ``checkpoint_finished`` (see
    :func:`linear_probe`) and ``seconds`` (wall time).
    """
    t0 = time.perf_counter()
    cfg = _as_config(KnnConfig, config)
    run = load_encoder(cfg.run_dir, cfg.device)
    train, test, transfer = _eval_splits(run, cfg, train_data, test_data, "the kNN")
    ftr, fte = _features(run, train), _features(run, test)
    return _write_knn(Path(cfg.run_dir), run, cfg, train, test, ftr, fte, t0, transfer)


def _knn_settings(run: LoadedRun, cfg: KnnConfig) -> tuple[int, float]:
    """The k and t given (checked by ``KnnConfig``'s rules), else the run's."""
    k = cfg.k if cfg.k is not None else int(run.config.get("knn_k") or 200)
    t = cfg.t if cfg.t is not None else float(run.config.get("knn_t") or 0.1)
    return k, t


def _write_knn(
    path: Path,
    run: LoadedRun,
    cfg: KnnConfig,
    train: Split,
    test: Split,
    ftr: Tensor,
    fte: Tensor,
    t0: float,
    transfer: Transfer | None = None,
) -> dict[str, Any]:
    """Weighted kNN accuracy of features (N, F) of ``cfg.split`` against the bank (M, F); write its JSON.

    ``knn.json`` records the k used: at most the bank's size (:func:`neighbours`); a transfer
    writes ``knn-<data>.json``.
    """
    k, t = _knn_settings(run, cfg)
    k = neighbours(k, len(train), "kNN")
    acc = knn_accuracy(
        ftr,
        train.labels,
        fte,
        test.labels,
        num_classes=max(run.shape.num_classes, int(train.labels.max()) + 1),
        k=k,
        t=t,
    )
    split = cfg.split
    out = {f"{split}_acc": acc, "split": split, "k": k, "t": t, "n_train": len(train)}
    out[f"n_{split}"] = len(test)
    out.update(transfer.record if transfer else {})
    out.update(run.checkpoint_state)
    out["seconds"] = time.perf_counter() - t0
    name = result_name("knn", split)
    files.write_json(path / (transfer.file(name) if transfer else name), out)
    return out


def knn_and_probe(
    run_dir: str | Path,
    *,
    probe: ProbeConfig,
    knn: KnnConfig | None = None,
    train_data: DataArg = None,
    test_data: DataArg = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The final kNN, linear probe and retrieval of a run from one feature extraction (``run``).

    Writes the same ``knn.json``, ``probe.json`` and ``retrieval.json`` (``knn_val.json`` and
    ``probe_val.json`` with ``probe.split`` val) as :func:`knn`, :func:`linear_probe` and
    :func:`retrieval` called one after the other, with the train and scored features computed
    once instead of three times. ``knn.json``'s ``seconds`` then covers loading the encoder and
    data, the feature extraction and the kNN; ``probe.json``'s and ``retrieval.json``'s cover
    the probe and the retrieval alone (they record
    ``"features_from": "knn"``), so their sum is the evaluation's wall time.

    Args:
        run_dir: A run directory written by :func:`~contrastkit.train.pretrain.pretrain`.
        probe: The probe's options (its ``device`` and ``split`` are the evaluation's).
        knn: The kNN's k and t (default: the run's); its ``split`` must be the probe's.
        train_data: Override of the training data (kNN bank and probe training set).
        test_data: Override of the test data.

    Returns:
        The contents of ``knn.json`` and ``probe.json``.

    Raises:
        ContrastkitError: if ``knn`` and ``probe`` name different splits.
    """
    done = evaluate_splits(
        run_dir,
        [probe.split],
        probe=probe,
        knn=knn,
        train_data=train_data,
        test_data=test_data,
    )
    return done[probe.split]


def evaluate_splits(
    run_dir: str | Path,
    splits: Sequence[str],
    *,
    probe: ProbeConfig,
    knn: KnnConfig | None = None,
    train_data: DataArg = None,
    test_data: DataArg = None,
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """:func:`knn_and_probe` on each of ``splits`` in turn, with one encoder and one probe.

    The training features are extracted once and the linear probe is trained once (it
    depends on them and on its settings only), then each split is extracted and scored: the
    files written, and every figure in them, are those of :func:`knn_and_probe` called once per
    split (``seconds`` aside). A later split's ``knn.json`` ``seconds`` covers its own
    extraction and kNN, and its probe file's the scoring alone; the probe file names the file
    whose probe it scored (``"probe_trained_for": "probe_val.json"``). ``contrastkit run
    --val-fraction`` scores ``["val", "test"]`` so.

    Args:
        run_dir: A run directory written by :func:`~contrastkit.train.pretrain.pretrain`.
        splits: The splits to score, each ``val`` or ``test``, at least one, each once.
        probe: The probe's options (its ``device`` is the evaluation's; its ``split`` is
            replaced by each of ``splits``).
        knn: The kNN's k and t (default: the run's); its ``split`` must be the probe's.
        train_data: Override of the training data (kNN bank and probe training set).
        test_data: Override of the test data.

    Returns:
        Per split, the contents of its kNN and probe files.

    Raises:
        ContrastkitError: on ``splits`` empty, repeated or naming another split, or ``knn``
            and ``probe`` naming different splits.
    """
    if isinstance(splits, str) or not splits or len(set(splits)) != len(splits):
        raise ContrastkitError(
            f"splits must be a list of distinct splits (val, test), got {splits!r}"
        )
    t0 = time.perf_counter()
    kcfg = knn or KnnConfig(run_dir=str(run_dir), device=probe.device, split=probe.split)
    if kcfg.split != probe.split:
        raise ContrastkitError(
            f"knn and probe must score one split, got knn split {kcfg.split!r} and probe "
            f"split {probe.split!r}"
        )
    # each split's options, checked (an unknown split fails here) before any work
    options = {s: (replace(probe, split=s), replace(kcfg, split=s)) for s in splits}
    run = load_encoder(run_dir, probe.device)
    path = Path(run_dir)
    ftr: Tensor | None = None
    trained: dict[int, tuple[LinearProbe, str]] = {}
    done = {}
    for split, (pcfg, split_knn) in options.items():
        train, test = eval_splits(run, split, train_data, test_data)
        if ftr is None:  # the same training images for every split
            ftr = _features(run, train)
        fte = _features(run, test)
        knn_out = _write_knn(path, run, split_knn, train, test, ftr, fte, t0)
        t1 = time.perf_counter()
        shared = {"features_from": "knn"}
        probe_out = _write_probe(
            path, run, pcfg, train, test, ftr, fte, t1, shared, trained=trained
        )
        _write_retrieval(
            path,
            run,
            split,
            (ftr, train.labels),
            (fte, test.labels),
            time.perf_counter(),
            shared,
            name=result_name("retrieval", split),
        )
        done[split] = (knn_out, probe_out)
        t0 = time.perf_counter()
    return done


def retrieval(config: RetrievalConfig | str | Path, *, data: DataArg = None) -> dict[str, Any]:
    """Retrieval metrics of a split against the training split; writes ``retrieval.json``.

    The queries are the backbone features of ``config.split`` (default test), the reference
    those of the training images the encoder trained on (the training split without the
    run's validation images, as for :func:`knn`), ranked by cosine similarity of the
    L2-normalised features (:func:`~contrastkit.train.retrieval.retrieval_metrics`:
    precision@1, Recall@k as the metric-learning literature defines it — a relevant
    reference among the k nearest — for k in 1, 5, 10, and MAP@R). ``split="val"`` queries
    with the run's validation images (refused for a run without them); ``split="train"``
    queries with the reference itself, each query leaving itself out.

    Args:
        config: A :class:`~contrastkit.train.config.RetrievalConfig`, or just the run
            directory (the test split).
        data: Override of the run's data set (a registry name or a ``Dataset``).
            ``config.data`` instead evaluates on another data set as :func:`linear_probe`
            does, into ``retrieval-<data>.json`` (``retrieval_train-<data>.json`` with
            ``split="train"``; its own train and test splits: no ``val``).

    Returns:
        The content of the file written, ``retrieval.json`` for the test split and
        ``retrieval_<split>.json`` for another (``retrieval_val.json``): the metrics,
        ``split``, ``n_queries`` (those with a relevant reference), ``lone_queries`` (left
        out: no reference has their label), ``n_reference``, ``checkpoint_epoch``,
        ``checkpoint_finished`` and ``seconds``.

    Raises:
        ContrastkitError: on ``split="val"`` for a run without a validation split or with
            another data set, unlabelled images, or both ``config.data`` and ``data``.
    """
    t0 = time.perf_counter()
    cfg = _as_config(RetrievalConfig, config)
    run = load_encoder(cfg.run_dir, cfg.device)
    transfer = None
    queried: Split | None = None  # None: the reference itself (split train)
    if cfg.data is not None:
        if data is not None:
            raise ContrastkitError(
                f"give the other data set either as data={cfg.data!r} in the config or as "
                "data=, not both"
            )
        check_transfer_split(cfg.split, cfg.data)
        reference, transfer = _other_split(run, cfg.data, cfg.data_root, "train")
        if cfg.split != "train":
            queried = _other_split(run, cfg.data, cfg.data_root, cfg.split)[0]
    else:
        full = _labelled(_split(run, data, "train"), "the retrieval's reference")
        reference, _ = carve_val(full, _val_fraction(run))
        if cfg.split == "val":
            queried = _val_split(run, full)
        elif cfg.split != "train":
            queried = _split(run, data, cfg.split)
    reference = _labelled(reference, "the retrieval's reference")
    if queried is not None:
        queried = _labelled(queried, "the retrieval's queries")
    ref = (_features(run, reference), reference.labels)
    queries = ref if queried is None else (_features(run, queried), queried.labels)
    extra = transfer.record if transfer else None
    name = result_name("retrieval", cfg.split)
    name = transfer.file(name) if transfer else name
    return _write_retrieval(Path(cfg.run_dir), run, cfg.split, ref, queries, t0, extra, name)


def _write_retrieval(
    path: Path,
    run: LoadedRun,
    split: str,
    reference: tuple[Tensor, Tensor],
    queries: tuple[Tensor, Tensor],
    t0: float,
    extra: dict[str, Any] | None = None,
    name: str = result_name("retrieval", "test"),
) -> dict[str, Any]:
    """Retrieval metrics of queries (N, F) against the reference (M, F); write ``name``."""
    m = retrieval_metrics(
        queries[0], queries[1], reference[0], reference[1], exclude_self=split == "train"
    )
    out: dict[str, Any] = {
        "precision_at_1": m.precision_at_1,
        "recall_at_k": {str(k): v for k, v in m.recall_at_k.items()},
        "map_at_r": m.map_at_r,
        "split": split,
        "n_queries": m.n_queries,
        "lone_queries": m.lone_queries,
        "n_reference": len(reference[1]),
        "similarity": "cosine of L2-normalised backbone features",
    }
    out.update(extra or {})
    out.update(run.checkpoint_state)
    out["seconds"] = time.perf_counter() - t0
    files.write_json(path / name, out)
    return out


def embed(config: EmbedConfig | str | Path, *, data: DataArg = None) -> Path:
    """Write the backbone features of a split to ``.npz`` (``contrastkit embed``).

    ``config`` is an :class:`~contrastkit.train.config.EmbedConfig` or just the run directory
    (the test split to ``embeddings.npz``); ``data`` overrides the run's data set. Split
    ``train`` is the training split without the run's validation images (``--val-fraction``):
    the images the encoder was trained on (with ``--limit``, it trained on a seeded subset of
    them), which are the kNN bank and the probe's training set. Split ``val`` is the
    validation images, carved from the training split as pretraining did (a run without them
    is refused); ``train`` and ``val`` together are the whole training split, in its order.
    Any other split is embedded whole.

    The file holds ``features`` (N, F) float32 (the encoder output, before any head),
    ``labels`` (N,) int64 (-1 where unlabelled), and ``checkpoint_epoch`` and
    ``checkpoint_finished`` (0-d): the epoch of the weights and whether it was the run's last
    (an unfinished run also warns).

    Returns:
        The path written.
    """
    cfg = _as_config(EmbedConfig, config)
    run = load_encoder(cfg.run_dir, cfg.device)
    if cfg.split == "val":
        ds = _val_split(run, _split(run, data, "train"))
    elif cfg.split == "train":
        ds, _ = carve_val(_split(run, data, "train"), _val_fraction(run))
    else:
        ds = _split(run, data, cfg.split)
    feats = _features(run, ds)
    out = Path(cfg.out)
    if out.suffix != ".npz":
        out = out.with_suffix(out.suffix + ".npz") if out.suffix else out.with_suffix(".npz")
    with files.os_errors("create directory", out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: np.array(v) for k, v in run.checkpoint_state.items()}
    _write_npz(out, feats, ds.labels, **state)
    return out
