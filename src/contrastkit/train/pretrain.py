"""Stage 1: pretrain an encoder with SimCLR, SupCon or cross-entropy, resumable bit-exactly.

One process or several under ``torchrun`` (``docs/distributed.md``): :func:`build_training_state`
is the one place that builds (and DDP-wraps) the model, :func:`epoch_batches` the one place that
orders the data (a ``DistributedSampler`` gives each process its share of every global batch),
the losses gather their contrasts across processes, and every write goes through ``is_main()``.
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
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

from contrastkit import distributed
from contrastkit.data import (
    ImageTensorDataset,
    MultiViewAugment,
    channel_stats,
    dataset_info,
    resolve_dataset,
)
from contrastkit.errors import ContrastkitError, ContrastkitWarning
from contrastkit.losses import nt_xent, supcon
from contrastkit.train import checkpoint as ckpt_io
from contrastkit.train import rundir
from contrastkit.train.config import PretrainConfig, from_dict, to_dict
from contrastkit.train.device import autocast, autocast_dtype, resolve_device
from contrastkit.train.evaluate import neighbours
from contrastkit.train.features import extract_features
from contrastkit.train.knn import knn_accuracy
from contrastkit.train.networks import DataShape, build_networks, default_model
from contrastkit.train.optim import build_optimizer
from contrastkit.train.recipes import data_defaults, method_defaults
from contrastkit.train.schedules import warmup_cosine

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
        resumed = rundir.resumed_options(options, "pretrain", data_object=data_is_object)
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


# --- data ---------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The in-memory splits a run uses."""

    train: ImageTensorDataset
    bank: ImageTensorDataset | None
    test: ImageTensorDataset | None
    shape: DataShape


def _check_labels(cfg: PretrainConfig, train: ImageTensorDataset) -> None:
    if cfg.method in ("supcon", "ce") and not train.has_labels:
        raise ContrastkitError(
            f"method {cfg.method} needs labels, but {train.name} has unlabelled images; "
            "use --method simclr or a labelled split"
        )


def load_run_data(
    cfg: PretrainConfig,
    data: str | Dataset[tuple[Tensor, int]],
    test_data: str | Dataset[tuple[Tensor, int]] | None,
) -> RunData:
    """Load the pretraining split, the kNN bank (labelled train images) and the test split."""
    kw = {"root": cfg.data_root, "download": cfg.download, "image_size": cfg.image_size}
    bank: ImageTensorDataset | None
    test: ImageTensorDataset | None
    if isinstance(data, str):
        info = dataset_info(data)
        split = cfg.train_split or info.pretrain_split
        train = resolve_dataset(data, split, **kw)  # type: ignore[arg-type]
        _check_labels(cfg, train)
        bank = train if train.has_labels else None
        if bank is None and "train" in info.splits and split != "train":
            bank = resolve_dataset(data, "train", **kw)  # type: ignore[arg-type]
        test = resolve_dataset(test_data or data, "test", **kw)  # type: ignore[arg-type]
    else:
        train = resolve_dataset(data, "train")
        bank = train if train.has_labels else None
        test = resolve_dataset(test_data, "test") if test_data is not None else None
    if cfg.limit is not None and cfg.limit < len(train):
        g = torch.Generator().manual_seed(0)
        train = train.subset(torch.randperm(len(train), generator=g)[: cfg.limit])
        bank = train if train.has_labels else bank
    if len(train) < 2:
        raise ContrastkitError(f"the training data has {len(train)} image(s); need at least 2")
    _check_labels(cfg, train)
    if test is not None and not test.has_labels:
        test = None
    mean, std = channel_stats(train.images)
    c, h, w = train.image_shape
    classes = (bank or train).classes
    shape = DataShape(c, max(h, w), len(classes), mean, std, classes)
    return RunData(train, bank, test, shape)


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[Tensor]:
    """This process's batches of one epoch: shuffled indices cut into full batches.

    A ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` with ``set_epoch(epoch)``
    gives process r the positions r, r + W, r + 2W… of one permutation of 0..n−1; cut into
    batches of ``batch_size / W``, step k of all processes together covers positions
    [k·B, (k+1)·B) of that permutation: exactly the global batch one process would draw (W = 1
    runs the same code), so a run on W processes sees the same batches as one process. The last
    partial batch is dropped; when n ≤ batch_size the whole shuffled set is one batch. The order
    depends only on (seed, epoch), so a resumed run continues it exactly.

    Raises:
        ValueError: if the number of processes does not divide ``batch_size``.
    """
    sampler: DistributedSampler[int] = DistributedSampler(
        range(n),  # type: ignore[arg-type]  # any sized sequence works
        num_replicas=distributed.world_size(),
        rank=distributed.rank(),
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    local = torch.tensor(list(sampler), dtype=torch.long)  # (n // W,)
    if n <= batch_size:
        return [local]
    per_process = distributed.local_batch_size(batch_size)
    return list(local[: len(local) - len(local) % per_process].split(per_process))


def augment_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the augmentation generator for one epoch on one process (distinct per rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of batches :func:`epoch_batches` yields."""
    return 1 if n <= batch_size else n // batch_size


# --- model, optimiser, schedule -----------------------------------------------------------------


class EncoderWithHead(nn.Module):
    """``head(encoder(x))``: the one module the training step calls (and DDP wraps)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        """Project a batch. Shape: (B, C, H, W) → (B, D)."""
        out: Tensor = self.head(self.encoder(x))
        return out


@dataclass
class TrainingState:
    """Everything a checkpoint restores, and the network the step calls.

    ``network`` is ``EncoderWithHead(encoder, head)``, DDP-wrapped under ``torchrun``; evaluation
    and checkpoints use ``encoder`` and ``head`` themselves.
    """

    encoder: nn.Module
    head: nn.Module
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generators: dict[str, torch.Generator]
    amp_dtype: torch.dtype | None = None
    epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    cpu_elapsed: float = 0.0


def build_training_state(
    cfg: PretrainConfig, shape: DataShape, n_train: int, device: torch.device
) -> TrainingState:
    """Seed, then build encoder, head, optimiser, schedule, grad scaler and generators."""
    ckpt_io.seed_everything(cfg.seed)
    assert cfg.model is not None and cfg.lr is not None and cfg.warmup_epochs is not None
    encoder, head = build_networks(
        model=cfg.model, norm=cfg.norm, method=cfg.method, shape=shape, proj_dim=cfg.proj_dim
    )
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    encoder = encoder.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    head = head.to(device)
    # under torchrun: DDP (and SyncBatchNorm with sync_bn); unlaunched: the module itself
    network = distributed.wrap_model(EncoderWithHead(encoder, head), device, sync_bn=cfg.sync_bn)
    peak_lr = cfg.lr * cfg.batch_size / 256
    optimizer = build_optimizer(
        cfg.optimizer,
        [encoder, head],
        lr=peak_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay or 0.0,
    )
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    total = cfg.epochs * per_epoch
    warmup = min(total, round(cfg.warmup_epochs * per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps=total, warmup_steps=warmup)
    )
    amp_dtype = autocast_dtype(cfg.precision, device)
    # grad scaling guards float16's narrow range; bfloat16 has float32's range and needs none
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    # the data order needs no generator (DistributedSampler: seed + epoch); the augmentation
    # generator is reseeded per (seed, epoch, rank) at the start of every epoch
    generators = {"augment": torch.Generator(device=device).manual_seed(cfg.seed + 1)}
    return TrainingState(
        encoder, head, network, optimizer, scheduler, scaler, generators, amp_dtype
    )


def state_dict(
    state: TrainingState, cfg: PretrainConfig, shape: DataShape, finished: bool
) -> dict[str, Any]:
    """The checkpoint of ``state`` (schema in :mod:`contrastkit.train.checkpoint`)."""
    return {
        "format": ckpt_io.FORMAT,
        "encoder": state.encoder.state_dict(),
        "head": state.head.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "rng": ckpt_io.rng_state(state.generators),
        "epoch": state.epoch,
        "step": state.step,
        "elapsed": state.elapsed,
        "cpu_elapsed": state.cpu_elapsed,
        "finished": finished,
        "config": to_dict(cfg),
        "data": shape.__dict__,
    }


def load_state(state: TrainingState, ckpt: dict[str, Any]) -> None:
    """Restore ``state`` in place from a checkpoint."""
    state.encoder.load_state_dict(ckpt["encoder"])
    state.head.load_state_dict(ckpt["head"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    ckpt_io.restore_rng_state(ckpt["rng"], state.generators)
    state.epoch, state.step, state.elapsed = ckpt["epoch"], ckpt["step"], ckpt["elapsed"]
    state.cpu_elapsed = ckpt["cpu_elapsed"]


# --- the step -----------------------------------------------------------------------------------


def compute_loss(
    cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor
) -> Tensor:
    """The method's loss on a batch of augmented views.

    Args:
        cfg: The run's config (method, temperature).
        state: Holds encoder and head.
        views: Shape: (B, V, C, H, W).
        labels: Shape: (B,).

    Returns:
        A 0-dim loss.
    """
    b, v = views.shape[:2]
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    assert cfg.temperature is not None
    # CE sees one view (B, C, H, W), the contrastive methods all views (B·V, C, H, W)
    x = views[:, 0] if cfg.method == "ce" else views.flatten(0, 1)
    # the network runs under autocast; the loss (similarities, log-sum-exp) in float32
    with autocast(views.device.type, state.amp_dtype):
        out = state.network(x.contiguous(memory_format=fmt)).float()
    if cfg.method == "ce":
        return F.cross_entropy(out, labels)  # logits (B, K); DDP's average is the global mean
    z = out.view(b, v, -1)  # (B, V, D)
    gather = distributed.is_distributed()  # contrast against the views of every process
    if cfg.method == "simclr":
        if v == 2:
            return nt_xent(z[:, 0], z[:, 1], cfg.temperature, gather=gather)
        return supcon(z, None, cfg.temperature, gather=gather)
    return supcon(z, labels, cfg.temperature, gather=gather)


def train_step(cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor) -> float:
    """One optimisation step (loss, backward, optimiser, schedule); returns the loss value.

    Under ``torchrun`` the value is the mean over processes: the loss of the global batch.
    """
    loss = compute_loss(cfg, state, views, labels)  # autocast inside, around the network only
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return float(distributed.all_reduce(loss.detach(), "mean"))


def train_epoch(
    cfg: PretrainConfig,
    state: TrainingState,
    augment: MultiViewAugment,
    images: Tensor,
    labels: Tensor,
    bar: Any,
) -> tuple[list[dict[str, Any]], list[float], int]:
    """One pass over the data in shuffled full batches; returns step records, losses, images seen.

    Under DDP each process takes its share of every batch (see :func:`epoch_batches`) and
    ``seen`` counts the images of all processes.

    Args:
        cfg: The run's config.
        state: Networks, optimiser and generators (updated in place, ``state.step`` included).
        augment: Draws the views of each batch.
        images: All training images on the device, uint8. Shape: (N, C, H, W).
        labels: Their labels. Shape: (N,).
        bar: A tqdm progress bar (or anything with ``update`` and ``set_postfix``).
    """
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    losses: list[float] = []
    seen = 0
    world = distributed.world_size()
    state.encoder.train()
    state.head.train()
    # different augmentations on every process, reproducible per (seed, epoch, rank)
    seed = augment_seed(cfg.seed, state.epoch, distributed.rank())
    state.generators["augment"].manual_seed(seed)
    for idx in epoch_batches(len(images), cfg.batch_size, seed=cfg.seed, epoch=state.epoch):
        idx = idx.to(images.device)
        lr = state.optimizer.param_groups[0]["lr"]
        x = augment(images[idx], state.generators["augment"])  # (B / W, V, C, H, W)
        loss = train_step(cfg, state, x, labels[idx])
        state.step += 1
        seen += len(idx) * world
        losses.append(loss)
        records.append(
            {"kind": "step", "epoch": state.epoch + 1, "step": state.step, "loss": loss, "lr": lr}
        )
        bar.update(1)
        bar.set_postfix(
            epoch=state.epoch + 1,
            loss=f"{loss:.4f}",
            lr=f"{lr:.3g}",
            img_s=f"{seen / (time.perf_counter() - t0):.0f}",
        )
    return records, losses, seen


# --- monitor ------------------------------------------------------------------------------------


def knn_monitor(
    cfg: PretrainConfig, state: TrainingState, data: RunData, device: torch.device
) -> float | None:
    """Weighted kNN test accuracy of the current encoder's features (None without labels)."""
    if data.bank is None or data.test is None:
        return None
    kw = {
        "mean": data.shape.mean,
        "std": data.shape.std,
        "device": device,
        "amp_dtype": state.amp_dtype,
        "channels_last": cfg.channels_last,
    }
    bank = extract_features(state.encoder, data.bank.images, **kw)  # type: ignore[arg-type]
    test = extract_features(state.encoder, data.test.images, **kw)  # type: ignore[arg-type]
    return knn_accuracy(
        bank,
        data.bank.labels,
        test,
        data.test.labels,
        num_classes=data.shape.num_classes,
        k=cfg.knn_k or 200,
        t=cfg.knn_t,
    )


@torch.no_grad()
def similarity_snapshot(
    cfg: PretrainConfig,
    state: TrainingState,
    data: RunData,
    augment: MultiViewAugment,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """A batch's cosine similarities (2 views of ≤ 32 images, sorted by label) and positive mask."""
    n = min(32, len(data.train))
    g = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    two = MultiViewAugment(augment.preset, 2, augment.mean, augment.std)
    order = torch.sort(data.train.labels[:n], stable=True).indices  # classes as blocks
    views = two(data.train.images[:n][order].to(device), g)  # (n, 2, C, H, W)
    labels = data.train.labels[:n][order]
    state.encoder.eval()
    state.head.eval()
    h = state.encoder(views.flatten(0, 1))  # (2n, F)
    z = h if cfg.method == "ce" else state.head(h)
    state.encoder.train()
    state.head.train()
    z = F.normalize(z.float(), dim=1).cpu()
    sim = z @ z.T  # (2n, 2n), rows ordered sample-major: (x0 v0, x0 v1, x1 v0, ...)
    sample = torch.arange(n).repeat_interleave(2)
    key = sample if cfg.method == "simclr" else labels.repeat_interleave(2)
    pos = (key[:, None] == key[None, :]) & ~torch.eye(2 * n, dtype=torch.bool)
    return {
        "similarity": sim.numpy(),
        "positives": pos.numpy(),
        "labels": labels.repeat_interleave(2).numpy(),
    }


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
    directory is locked while the run trains (:class:`~contrastkit.train.rundir.RunLock`).

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
    augment = _augmentation(cfg, source, run_data)
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


def _augmentation(
    cfg: PretrainConfig, source: str | Dataset[tuple[Tensor, int]], run_data: RunData
) -> MultiViewAugment:
    """The run's augmentation: ``--augment``, else the data set's preset."""
    preset = cfg.augment or (
        dataset_info(source).preset
        if isinstance(source, str)
        else ("simclr" if run_data.shape.channels == 3 else "fashion-mnist")
    )
    views = 1 if cfg.method == "ce" else cfg.views
    return MultiViewAugment(preset, views, run_data.shape.mean, run_data.shape.std)


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
            rundir.truncate_metrics(out, state.step)
        return state, True
    if is_main():
        rundir.discard_unstarted(out, keep=(rundir.CONFIG, rundir.LOCK))
        saved = {**to_dict(cfg), "resume": False}
        prov = {**rundir.provenance(str(device)), "world_size": distributed.world_size()}
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
    epochs = [r for r in rundir.read_metrics(out) if r["kind"] == "epoch"]
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
        with rundir.os_errors("write", out / "similarity.npz"):
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
                rundir.append_metrics(out, r)
            finished = state.epoch == cfg.epochs
            ckpt_path = out / rundir.CHECKPOINT
            ckpt_io.save_atomic(state_dict(state, cfg, run_data.shape, finished), ckpt_path)
    bar.close()
    if is_main():  # the weights changed since a resumed run's snapshot: draw it again
        _write_snapshot(cfg, state, run_data, augment, device, again=resumed)
    distributed.barrier()  # every process ends with the files of rank 0 written
    final = knn_acc if final_knn else None
    return PretrainResult(out, state.epoch, state.elapsed, final, loss_mean)
