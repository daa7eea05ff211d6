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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastkit import distributed
from contrastkit.data import MultiViewAugment
from contrastkit.errors import ContrastkitError
from contrastkit.models.registry import recorded_name
from contrastkit.train import checkpoint as ckpt_io
from contrastkit.train import files, launch, metrics, provenance, recipes, rundir
from contrastkit.train.config import CUSTOM_DATA, PretrainConfig, to_dict
from contrastkit.train.device import autocast_dtype, resolve_device
from contrastkit.train.evaluate import neighbours
from contrastkit.train.loop import capped, position_in_epoch, train_epoch
from contrastkit.train.monitor import knn_monitor, similarity_snapshot
from contrastkit.train.networks import default_model
from contrastkit.train.progress import TENSORBOARD_DIR, Progress
from contrastkit.train.rundata import (
    RunData,
    TrainBatches,
    augmentation,
    load_run_data,
    steps_per_epoch,
)
from contrastkit.train.state import TrainingState, build_training_state, load_state, state_dict

is_main = distributed.is_main  # the process that writes files (rank 0; always True unlaunched)


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns.

    Attributes:
        run_dir: The run directory.
        epochs: Epochs trained in total.
        seconds: Training wall time (summed over resumed parts; kNN monitor included).
        knn_acc: kNN-monitor accuracy after the last epoch, on the validation split if the
            run has one, else on the test split (None without labelled data, or when
            ``pretrain`` was called with ``final_knn=False``).
        loss: Mean loss of the last epoch.
        already_finished: The run was finished before this call (a resume that trained
            nothing); the figures are those its last epoch recorded.
        knn_split: The split ``knn_acc`` scored: ``val`` or ``test``.
    """

    run_dir: Path
    epochs: int
    seconds: float
    knn_acc: float | None
    loss: float
    already_finished: bool = False
    knn_split: str = "test"


# --- the loop -----------------------------------------------------------------------------------


DataArg = Dataset[tuple[Tensor, int]]
"""A ``Dataset`` of ``(image tensor (C, H, W), label)``, the Python alternative to a data set name."""

EpochCallback = Callable[[int, "float | None"], None]
"""Called after each epoch's checkpoint with (epoch, kNN-monitor accuracy or None); it may
raise to stop the run there (a sweep's pruner does)."""


def pretrain(
    config: PretrainConfig | None = None,
    *,
    data: DataArg | None = None,
    test_data: DataArg | None = None,
    final_knn: bool = True,
    on_epoch: EpochCallback | None = None,
) -> PretrainResult:
    """Pretrain an encoder and write a run directory (``contrastkit pretrain``).

    The recipe's unset options are filled first (:func:`~contrastkit.train.recipes.resolve`).
    A directory that a start left before its first checkpoint (killed, out of disk, or failed)
    is started over; the directory is locked while the run trains
    (:class:`~contrastkit.train.lock.RunLock`). :func:`contrastkit.resume` continues a run.

    Args:
        config: The run's options (default: ``PretrainConfig()``, SupCon on the digits).
        data: A ``Dataset`` of ``(image tensor (C, H, W), label)`` to train on instead of the
            data set ``config.data`` names (then recorded as ``<dataset object>``).
        test_data: With ``data``: the labelled test ``Dataset`` of the kNN monitor.
        final_knn: Run the kNN monitor after the last epoch (whatever ``knn_every`` says).
            ``contrastkit run`` passes False: it computes ``knn.json`` from the same final
            weights right after, which the reports then show as the curve's last point.
        on_epoch: Called on the main process after each epoch's checkpoint with the epoch
            and its kNN-monitor accuracy (None when not monitored); an exception it raises
            ends the run there, the directory resumable.

    Returns:
        The run directory, epochs, seconds, the kNN accuracy after the last epoch (None with
        ``final_knn=False``) and the last epoch's loss.

    Raises:
        ContrastkitError: on bad options or data, a run directory holding other work, or a run
            directory another process is using (naming it).
        OSError: on a file-system error, saying what failed on which path.
    """
    cfg = config if config is not None else PretrainConfig()
    cfg = recipes.resolve(with_data_object(cfg, data, test_data))
    autocast_dtype(cfg.precision, resolve_device(cfg.device))  # a precision the device can do
    source = data if data is not None else cfg.data
    return train(cfg, source, test_data, final_knn, resume=False, on_epoch=on_epoch)


def check_data_objects(data: object, test_data: object) -> None:
    """Refuse a data set's name (or a path) in ``data=`` or ``test_data=``: they take objects.

    Raises:
        ContrastkitError: naming the argument and the value given.
    """
    for arg, given in (("data", data), ("test_data", test_data)):
        if isinstance(given, str | PathLike):
            raise ContrastkitError(
                f"{arg}= is for a Dataset object, got {str(given)!r}; a data set is named by "
                f"the config's data, e.g. PretrainConfig(data={str(given)!r})"
            )


def with_data_object(
    cfg: PretrainConfig, data: DataArg | None, test_data: DataArg | None
) -> PretrainConfig:
    """``cfg`` naming a ``Dataset`` object as its data (:data:`CUSTOM_DATA`) when one is given.

    Raises:
        ContrastkitError: ``test_data`` without ``data`` (a registry data set brings its own
            test split), the placeholder as ``config.data`` without an object, or a name in
            ``data`` or ``test_data`` (:func:`check_data_objects`).
    """
    check_data_objects(data, test_data)
    if data is None:
        if test_data is not None:
            raise ContrastkitError(
                f"test_data= is for a Dataset object in data=; the data set {cfg.data!r} "
                "brings its own test split (pass both as Dataset objects to use another)"
            )
        if cfg.data == CUSTOM_DATA:
            raise ContrastkitError(
                f"data {CUSTOM_DATA!r} stands for a Dataset object: pass it as data="
            )
        return cfg
    return replace(cfg, data=CUSTOM_DATA)


def train(
    cfg: PretrainConfig,
    source: str | DataArg,
    test_data: DataArg | None,
    final_knn: bool,
    *,
    resume: bool,
    on_epoch: EpochCallback | None = None,
) -> PretrainResult:
    """Train the resolved ``cfg`` in its run directory, joining ``torchrun``'s processes if launched.

    ``resume`` continues the run in ``cfg.out`` (whose saved options ``cfg`` are,
    :mod:`contrastkit.train.resume`); otherwise the directory must be free. ``on_epoch``: see
    :func:`pretrain`.
    """
    device = resolve_device(cfg.device)
    joined = launch.launched() and not distributed.is_distributed()
    if launch.launched():  # torchrun: cuda:LOCAL_RANK + nccl, or the CPU + gloo
        device = _launch_errors(lambda: launch.init_from_env(device.type))
    try:
        return _pretrain(cfg, source, test_data, device, final_knn, resume, on_epoch)
    finally:
        if joined:
            launch.shutdown()


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
    test_data: DataArg | None,
    device: torch.device,
    final_knn: bool,
    resume: bool,
    on_epoch: EpochCallback | None,
) -> PretrainResult:
    assert cfg.batch_size is not None and cfg.epochs is not None  # resolved (recipes.resolve)
    batch_size, epochs = cfg.batch_size, cfg.epochs
    local = _launch_errors(lambda: launch.local_batch_size(batch_size))
    launch.check_sync_bn(cfg.sync_bn, device)
    run_data = load_run_data(cfg, source, test_data)
    _check_bn_splits(cfg, min(local, len(run_data.train) // distributed.world_size()))
    # the model as later commands rebuild it: a user's registered factory by its import path
    cfg = replace(cfg, model=recorded_name(cfg.model or default_model(run_data.shape)))
    augment = augmentation(cfg, source, run_data.shape)
    if run_data.bank is not None and run_data.monitored[0] is not None and is_main():
        neighbours(cfg.knn_k or 200, len(run_data.bank), "the kNN monitor")  # warns if clamped
    assert cfg.out is not None
    run_dir = cfg.out
    # only rank 0 creates, checks and locks the directory; every process waits for it
    lock = launch.main_first(lambda: rundir.open_run_dir(run_dir, resume=resume))
    try:
        state, resumed = _start(cfg, run_data, device)
        if resumed and (state.epoch >= epochs or capped(cfg, state)):
            return _finished(cfg, state, run_data, augment, device, final_knn)
        return _train(cfg, state, run_data, augment, device, final_knn, resumed, on_epoch)
    finally:
        if lock is not None:
            lock.release()


def _check_bn_splits(cfg: PretrainConfig, local: int) -> None:
    """Refuse ``--bn-splits`` that does not divide the images of each process's step.

    Raises:
        ContrastkitError: naming the split count and the batch.
    """
    if cfg.norm != "split":
        return
    assert cfg.bn_splits is not None  # resolved (recipes.resolve)
    if local % cfg.bn_splits:
        raise ContrastkitError(
            f"--bn-splits (bn_splits) must divide the {local} images each process's step holds "
            f"(--batch-size {cfg.batch_size} over {distributed.world_size()} process(es)), got "
            f"{cfg.bn_splits}"
        )


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
        prov = {**provenance.provenance(str(device)), "world_size": distributed.world_size()}
        rundir.write_config(out, to_dict(cfg), prov, command="pretrain")
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
    split = run_data.monitored[1]
    return PretrainResult(out, state.epoch, state.elapsed, final, loss, True, split)


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
    on_epoch: EpochCallback | None = None,
) -> PretrainResult:
    """Train from ``state`` to the last epoch or ``max_steps``, checkpointing as it goes.

    Metrics and a checkpoint after every epoch, every ``save_every`` steps, and at
    ``max_steps`` (the run is finished there).
    """
    assert cfg.batch_size is not None and cfg.epochs is not None  # resolved (recipes.resolve)
    out = Path(str(cfg.out))
    data = TrainBatches(run_data.train, device, cfg.workers)
    per_epoch = steps_per_epoch(len(data), cfg.batch_size)
    knn_acc: float | None = None
    loss_mean = float("nan")
    total = (
        cfg.epochs * per_epoch
        if cfg.max_steps is None
        else min(cfg.max_steps, cfg.epochs * per_epoch)
    )

    def save(finished: bool) -> None:
        ckpt_io.save_atomic(
            state_dict(state, cfg, run_data.shape, finished), out / rundir.CHECKPOINT
        )

    def after_step(records: list[dict[str, Any]]) -> None:
        """A mid-epoch checkpoint every ``save_every`` steps (the epoch's end saves anyway)."""
        every = cfg.save_every
        if (
            every is None
            or state.step % every
            or position_in_epoch(cfg, state, len(data)) == per_epoch
            or capped(cfg, state)
        ):
            return
        if is_main():
            for r in records:
                metrics.append_metrics(out, r)
            save(finished=False)
        records.clear()

    progress = Progress(
        cfg.method,
        cfg.epochs,
        total,
        state.step,
        quiet=cfg.quiet,
        main=is_main(),
        tensorboard=out / TENSORBOARD_DIR if cfg.tensorboard else None,
    )
    while state.epoch < cfg.epochs and not capped(cfg, state):
        t0, c0 = time.perf_counter(), time.process_time()
        earlier = _epoch_losses(out, state) if position_in_epoch(cfg, state, len(data)) else []
        records, losses, seen = train_epoch(cfg, state, augment, data, progress.bar, after_step)
        losses = earlier + losses
        train_seconds = time.perf_counter() - t0
        if position_in_epoch(cfg, state, len(data)) < per_epoch:  # stopped at max_steps
            state.elapsed += train_seconds
            state.cpu_elapsed += time.process_time() - c0
            loss_mean = float(np.mean(losses))
            if is_main():
                for r in records:
                    metrics.append_metrics(out, r)
                save(finished=True)
            break
        state.epoch += 1
        loss_mean = float(np.mean(losses))
        last = state.epoch == cfg.epochs or capped(cfg, state)
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
                "lr": records[-1]["lr"] if records else state.optimizer.param_groups[0]["lr"],
                "knn_acc": knn_acc if monitor else None,
                "knn_split": run_data.monitored[1],
                "images_per_s": seen / train_seconds,
                "elapsed": state.elapsed,
                "cpu_elapsed": state.cpu_elapsed,
            }
        )
        if is_main():
            for r in records:
                metrics.append_metrics(out, r)
            save(finished=last)
            if on_epoch is not None:
                on_epoch(state.epoch, knn_acc if monitor else None)
        progress.epoch(records)
    progress.close()
    if capped(cfg, state) and final_knn and knn_acc is None and is_main():
        knn_acc = knn_monitor(cfg, state, run_data, device)  # a run stopped mid-epoch
    if is_main():  # the weights changed since a resumed run's snapshot: draw it again
        _write_snapshot(cfg, state, run_data, augment, device, again=resumed)
    distributed.barrier()  # every process ends with the files of rank 0 written
    final = knn_acc if final_knn else None
    split = run_data.monitored[1]
    return PretrainResult(out, state.epoch, state.elapsed, final, loss_mean, False, split)


def _epoch_losses(out: Path, state: TrainingState) -> list[float]:
    """The step losses of the current epoch that a mid-epoch checkpoint saved (for its mean)."""
    return [
        float(r["loss"])
        for r in metrics.read_metrics(out)
        if r["kind"] == "step" and r["epoch"] == state.epoch + 1 and r["step"] <= state.step
    ]
