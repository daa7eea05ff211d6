"""The training loop's inner parts: the loss of a batch, one optimisation step, one epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch import Tensor

from contrastkit import distributed
from contrastkit.data import MultiViewAugment
from contrastkit.train.config import PretrainConfig
from contrastkit.train.methods import get_method
from contrastkit.train.rundata import TrainBatches, augment_seed, epoch_batches, steps_per_epoch
from contrastkit.train.state import TrainingState


def compute_loss(
    cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor
) -> Tensor:
    """The method's loss on a batch of augmented views (:meth:`Method.batch_loss`).

    The network runs under autocast; its output is cast to float32 for the loss (similarities,
    log-sum-exp). Under ``torchrun`` the contrastive losses gather the views of every process.

    Args:
        cfg: The run's config (method, temperature, memory format).
        state: Holds the network (and a momentum method's key network and queue).
        views: Shape: (B, V, C, H, W).
        labels: Shape: (B,).

    Returns:
        A 0-dim loss.
    """
    return get_method(cfg.method).batch_loss(cfg, state, views, labels)


def train_step(cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor) -> float:
    """One optimisation step (loss, backward, optimiser, schedule, the method's own update).

    A momentum method then updates its key network and enqueues the step's keys
    (:meth:`Method.after_step`). Returns the loss value; under ``torchrun`` the mean over
    processes: the loss of the global batch.
    """
    loss = compute_loss(cfg, state, views, labels)  # autocast inside, around the network only
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    get_method(cfg.method).after_step(cfg, state)
    return float(distributed.all_reduce(loss.detach(), "mean"))


def position_in_epoch(cfg: PretrainConfig, state: TrainingState, n: int) -> int:
    """Steps of the current epoch already taken (0 at an epoch's start; > 0 after a mid-epoch resume)."""
    assert cfg.batch_size is not None  # resolved (recipes.resolve)
    return state.step - state.epoch * steps_per_epoch(n, cfg.batch_size)


def capped(cfg: PretrainConfig, state: TrainingState) -> bool:
    """Whether the run has taken its ``max_steps``."""
    return cfg.max_steps is not None and state.step >= cfg.max_steps


def train_epoch(
    cfg: PretrainConfig,
    state: TrainingState,
    augment: MultiViewAugment,
    data: TrainBatches,
    bar: Any,
    after_step: Callable[[list[dict[str, Any]]], None] | None = None,
) -> tuple[list[dict[str, Any]], list[float], int]:
    """One pass over the data in shuffled full batches; returns step records, losses, images seen.

    Under DDP each process takes its share of every batch (see :func:`epoch_batches`) and
    ``seen`` counts the images of all processes. After a mid-epoch checkpoint the epoch goes on
    from the step it holds, with the augmentation generator it saved; it stops early at
    ``max_steps``.

    Args:
        cfg: The run's config.
        state: Networks, optimiser and generators (updated in place, ``state.step`` included).
        augment: Draws the views of each batch.
        data: The training images and labels, batch by batch on the device.
        bar: A tqdm progress bar (or anything with ``update`` and ``set_postfix``).
        after_step: Called with the records not yet saved after each step (it may save and
            clear them: a mid-epoch checkpoint).
    """
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    losses: list[float] = []
    seen = 0
    world = distributed.world_size()
    state.encoder.train()
    state.head.train()
    if state.momentum is not None:  # the key network normalises with its batches' statistics
        state.momentum.train()
    done = position_in_epoch(cfg, state, len(data))
    if done == 0:  # different augmentations on every process, reproducible per (seed, epoch, rank)
        seed = augment_seed(cfg.seed, state.epoch, distributed.rank())
        state.generators["augment"].manual_seed(seed)
    assert cfg.batch_size is not None  # resolved (recipes.resolve)
    batches = epoch_batches(len(data), cfg.batch_size, seed=cfg.seed, epoch=state.epoch)[done:]
    if cfg.max_steps is not None:
        batches = batches[: max(cfg.max_steps - state.step, 0)]
    for images, labels in data(batches):
        lr = state.optimizer.param_groups[0]["lr"]
        x = augment(images, state.generators["augment"])  # (B / W, V, C, H, W)
        loss = train_step(cfg, state, x, labels)
        state.step += 1
        seen += len(labels) * world
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
        if after_step is not None:
            after_step(records)
    return records, losses, seen
