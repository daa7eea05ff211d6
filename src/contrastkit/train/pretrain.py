"""Stage 1: pretrain an encoder with SimCLR, SupCon or cross-entropy, resumable bit-exactly.

One process or several under ``torchrun`` (``docs/distributed.md``). This module runs the
epochs and writes the run directory; the parts live beside it: the data and its order
(:mod:`~contrastkit.train.rundata`), the networks and their checkpoint
(:mod:`~contrastkit.train.state`), the method's loss and the step (:mod:`~contrastkit.train.methods`,
:mod:`~contrastkit.train.loop`), the kNN monitor (:mod:`~contrastkit.train.monitor`). Every write
goes through ``is_main()``.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastkit import distributed
from contrastkit.data import MultiViewAugment
from contrastkit.errors import ContrastkitError, ContrastkitWarning
from contrastkit.train import checkpoint as ckpt_io
from contrastkit.train import files, metrics, provenance, resume, rundir
from contrastkit.train.config import PretrainConfig, from_dict, to_dict
from contrastkit.train.device import autocast_dtype, resolve_device
from contrastkit.train.evaluate import neighbours
from contrastkit.train.loop import train_epoch
from contrastkit.train.monitor import knn_monitor, similarity_snapshot
from contrastkit.train.networks import default_model
from contrastkit.train.recipes import data_defaults, method_defaults
from contrastkit.train.rundata import RunData, augmentation, load_run_data, steps_per_epoch
from contrastkit.train.state import TrainingState, build_training_state, load_state, state_dict

is_main = distributed.is_main  # the process that writes files (rank 0; always True unlaunched)


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns.

    Attributes:
        run_dir: The run directory.
        epochs: Epochs trained in total.
        seconds: Training wall time (summed over resumed parts; kNN monitor included).
        knn_acc: kNN-monitor test accuracy after the last epoch (None without labelled test
            data, or when ``pretrain`` was called with ``final_knn=False``).
        loss: Mean loss of the last epoch.
        already_finished: The run was finished before this call (a resume that trained
            nothing); the figures are those its last epoch recorded.
    """

    run_dir: Path
    epochs: int
    seconds: float
    knn_acc: float | None
    loss: float
    already_finished: bool = False


# --- configuration ------------------------------------------------------------------------------


def resolve_config(options: dict[str, Any], data_is_object: bool) -> PretrainConfig:
    """Turn keyword options into a complete, validated config (recipe defaults filled in).

    With ``resume=True`` the run's saved ``config.yaml`` is the base and the options given must
    agree with it (except ``device`` and ``quiet``). Every option is checked by
    :func:`~contrastkit.train.config.validate` (through ``from_dict``), the device's support
    of the precision here: all before anything is created on disk. A warm-up not shorter
    than the run is shortened (:func:`fit_warmup`).

    Raises:
        ContrastkitError: on unknown keys, wrong types, invalid values or a resume mismatch.
    """
    cfg = from_dict(PretrainConfig, options)
    if cfg.resume:
        resumed = resume.resumed_options(options, "pretrain", data_object=data_is_object)
        return from_dict(PretrainConfig, resumed)
    autocast_dtype(cfg.precision, resolve_device(cfg.device))  # a precision the device can do
    defaults = method_defaults(cfg.method, cfg.optimizer)
    defaults["knn_k"] = data_defaults(rundir.CUSTOM_DATA if data_is_object else cfg.data)["knn_k"]
    filled = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    cfg = fit_warmup(replace(cfg, **filled))
    if data_is_object:
        cfg = replace(cfg, data=rundir.CUSTOM_DATA)
    if cfg.out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = cfg.data.replace(":", "-").replace("/", "-").strip("<>").replace(" ", "-")
        cfg = replace(cfg, out=f"runs/{name}-{cfg.method}-{stamp}")
    return cfg


WARMUP_SHARE = 0.1
"""The warm-up used, as a share of the run, when the one given is not shorter than the run:
the share of the 10 warm-up epochs in the 100-epoch SimCLR and SupCon recipes."""


def fit_warmup(cfg: PretrainConfig) -> PretrainConfig:
    """Shorten a warm-up that is not shorter than the run, with a warning.

    Such a warm-up ends the run at the peak learning rate, without any decay (``--epochs 1``
    with the 10-epoch default is all warm-up); it becomes :data:`WARMUP_SHARE` of the run,
    the value ``config.yaml`` then records.
    """
    assert cfg.warmup_epochs is not None
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


# --- the loop -----------------------------------------------------------------------------------


def _progress(total: int, initial: int, quiet: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=quiet or not sys.stderr.isatty(),
        unit="step",
        dynamic_ncols=True,
    )


def pretrain(
    *,
    data: str | Dataset[tuple[Tensor, int]] | None = None,
    test_data: str | Dataset[tuple[Tensor, int]] | None = None,
    final_knn: bool = True,
    **options: Any,
) -> PretrainResult:
    """Pretrain an encoder and write a run directory (``contrastkit pretrain``).

    A directory that a start left before its first checkpoint (killed, out of disk, or failed)
    is started over, by a new call or by ``resume=True`` (then with its saved options); the
    directory is locked while the run trains (:class:`~contrastkit.train.lock.RunLock`).

    Args:
        data: A registry name (``digits``, the default; ``cifar10``, ``folder:PATH``…) or any
            ``Dataset`` of ``(image tensor (C, H, W), label)``.
        test_data: For a ``Dataset`` in ``data``: the labelled test set of the kNN monitor.
        final_knn: Run the kNN monitor after the last epoch (whatever ``knn_every`` says).
            ``contrastkit run`` passes False: it computes ``knn.json`` from the same final
            weights right after, which the reports then show as the curve's last point.
        **options: Fields of :class:`~contrastkit.train.config.PretrainConfig` (``method``,
            ``model``, ``epochs``, ``batch_size``, ``out``, ``seed``, ``resume``…); unknown
            names are an error.

    Returns:
        The run directory, epochs, seconds, the kNN accuracy after the last epoch (None with
        ``final_knn=False``) and the last epoch's loss.

    Raises:
        ContrastkitError: on bad options or data, a run directory holding other work without
            resume, or a run directory another process is using (naming it).
        OSError: on a file-system error, saying what failed on which path.
    """
    if isinstance(data, str):
        options = {"data": data, **options}
    is_object = data is not None and not isinstance(data, str)
    cfg = resolve_config(options, data_is_object=is_object)
    source: str | Dataset[tuple[Tensor, int]] = data if data is not None and is_object else cfg.data
    device = resolve_device(cfg.device)
    joined = distributed.launched() and not distributed.is_distributed()
    if distributed.launched():  # torchrun: cuda:LOCAL_RANK + nccl, or the CPU + gloo
        device = _launch_errors(lambda: distributed.init_from_env(device.type))
    try:
        return _pretrain(cfg, source, test_data, device, final_knn)
    finally:
        if joined:
            distributed.shutdown()


def _launch_errors(fn: Any) -> Any:
    """Call ``fn``, turning the ``ValueError`` of a bad launch into a ``ContrastkitError``."""
    try:
        return fn()
    except ContrastkitError:
        raise
    except ValueError as e:
        raise ContrastkitError(str(e)) from None


def _pretrain(
    cfg: PretrainConfig,
    source: str | Dataset[tuple[Tensor, int]],
    test_data: str | Dataset[tuple[Tensor, int]] | None,
    device: torch.device,
    final_knn: bool,
) -> PretrainResult:
    _launch_errors(lambda: distributed.local_batch_size(cfg.batch_size))
    if cfg.sync_bn and device.type != "cuda":
        raise ContrastkitError(
            "--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); on the CPU use "
            "--norm group for batch-independent normalisation"
        )
    run_data = load_run_data(cfg, source, test_data)
    if cfg.model is None:
        cfg = replace(cfg, model=default_model(run_data.shape))
    augment = augmentation(cfg, source, run_data.shape)
    if run_data.bank is not None and run_data.test is not None and is_main():
        neighbours(cfg.knn_k or 200, len(run_data.bank), "the kNN monitor")  # warns if clamped
    assert cfg.out is not None
    run_dir = cfg.out
    # only rank 0 creates, checks and locks the directory; every process waits for it
    lock = distributed.main_first(lambda: rundir.open_run_dir(run_dir, resume=cfg.resume))
    try:
        state, resumed = _start(cfg, run_data, device)
        if resumed and state.epoch >= cfg.epochs:
            return _finished(cfg, state, run_data, augment, device, final_knn)
        return _train(cfg, state, run_data, augment, device, final_knn, resumed)
    finally:
        if lock is not None:
            lock.release()


def _start(
    cfg: PretrainConfig, run_data: RunData, device: torch.device
) -> tuple[TrainingState, bool]:
    """Build the training state, restored from the run's checkpoint if it has one.

    Without a checkpoint the run starts at step 0: a new run, a directory reused from a start
    that never reached its first checkpoint, or a ``--resume`` of such a directory (with its
    saved options). Rank 0 then deletes what that start left (its metrics, temporaries) and
    writes ``config.yaml``.

    Returns:
        The state and whether it came from a checkpoint.
    """
    out = Path(str(cfg.out))
    state = build_training_state(cfg, run_data.shape, len(run_data.train), device)
    ckpt_path = out / rundir.CHECKPOINT
    if ckpt_path.is_file():  # every process sees the directory as rank 0 prepared it
        load_state(state, ckpt_io.load_checkpoint(ckpt_path, map_location=device))
        if is_main():
            metrics.truncate_metrics(out, state.step)
        return state, True
    if is_main():
        rundir.discard_unstarted(out, keep=(rundir.CONFIG, rundir.LOCK))
        saved = {**to_dict(cfg), "resume": False}
        prov = {**provenance.provenance(str(device)), "world_size": distributed.world_size()}
        rundir.write_config(out, saved, prov)
    return state, False


def _finished(
    cfg: PretrainConfig,
    state: TrainingState,
    run_data: RunData,
    augment: MultiViewAugment,
    device: torch.device,
    final_knn: bool,
) -> PretrainResult:
    """The result of resuming a finished run: its last epoch's figures; nothing is trained.

    The loss and kNN accuracy are those ``metrics.jsonl`` recorded for the last epoch; the kNN
    monitor runs only when that epoch was not monitored (and ``final_knn`` asks for it).
    """
    out = Path(str(cfg.out))
    epochs = [r for r in metrics.read_metrics(out) if r["kind"] == "epoch"]
    last = epochs[-1] if epochs else {}
    knn_acc = last.get("knn_acc")
    if is_main():
        if knn_acc is None and final_knn:
            knn_acc = knn_monitor(cfg, state, run_data, device)
        _write_snapshot(cfg, state, run_data, augment, device, again=False)
    distributed.barrier()
    loss = float(last.get("loss", math.nan))
    final = knn_acc if final_knn else None
    return PretrainResult(out, state.epoch, state.elapsed, final, loss, already_finished=True)


def _write_snapshot(
    cfg: PretrainConfig,
    state: TrainingState,
    run_data: RunData,
    augment: MultiViewAugment,
    device: torch.device,
    again: bool,
) -> None:
    """Write ``similarity.npz`` (:func:`similarity_snapshot`) if absent, or ``again``."""
    out = Path(str(cfg.out))
    if again or not (out / "similarity.npz").exists():
        snap: dict[str, Any] = similarity_snapshot(cfg, state, run_data, augment, device)
        with files.os_errors("write", out / "similarity.npz"):
            np.savez(out / "similarity.npz", **snap)


def _train(
    cfg: PretrainConfig,
    state: TrainingState,
    run_data: RunData,
    augment: MultiViewAugment,
    device: torch.device,
    final_knn: bool,
    resumed: bool,
) -> PretrainResult:
    """Train from ``state`` to the last epoch: metrics and a checkpoint after every epoch."""
    out = Path(str(cfg.out))
    images = run_data.train.images.to(device)
    labels = run_data.train.labels.to(device)
    per_epoch = steps_per_epoch(len(images), cfg.batch_size)
    knn_acc: float | None = None
    loss_mean = float("nan")

    bar = _progress(cfg.epochs * per_epoch, state.step, cfg.quiet or not is_main())
    while state.epoch < cfg.epochs:
        t0, c0 = time.perf_counter(), time.process_time()
        records, losses, seen = train_epoch(cfg, state, augment, images, labels, bar)
        train_seconds = time.perf_counter() - t0
        state.epoch += 1
        loss_mean = float(np.mean(losses))
        last = state.epoch == cfg.epochs
        every = cfg.knn_every > 0 and state.epoch % cfg.knn_every == 0
        monitor = (every and not last) or (last and final_knn)
        if monitor and is_main():
            knn_acc = knn_monitor(cfg, state, run_data, device)
        state.elapsed += time.perf_counter() - t0
        state.cpu_elapsed += time.process_time() - c0
        records.append(
            {
                "kind": "epoch",
                "epoch": state.epoch,
                "step": state.step,
                "loss": loss_mean,
                "lr": records[-1]["lr"],
                "knn_acc": knn_acc if monitor else None,
                "images_per_s": seen / train_seconds,
                "elapsed": state.elapsed,
                "cpu_elapsed": state.cpu_elapsed,
            }
        )
        if is_main():
            for r in records:
                metrics.append_metrics(out, r)
            finished = state.epoch == cfg.epochs
            ckpt_path = out / rundir.CHECKPOINT
            ckpt_io.save_atomic(state_dict(state, cfg, run_data.shape, finished), ckpt_path)
    bar.close()
    if is_main():  # the weights changed since a resumed run's snapshot: draw it again
        _write_snapshot(cfg, state, run_data, augment, device, again=resumed)
    distributed.barrier()  # every process ends with the files of rank 0 written
    final = knn_acc if final_knn else None
    return PretrainResult(out, state.epoch, state.elapsed, final, loss_mean)
