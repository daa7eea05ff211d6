"""The training state: networks, optimiser, schedule, grad scaler and generators, and its checkpoint.

:func:`build_training_state` is the one place that builds (and DDP-wraps) the networks;
:func:`state_dict` and :func:`load_state` are the checkpoint's schema on the training side
(:mod:`contrastkit.train.checkpoint` writes and reads the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.train import checkpoint as ckpt_io
from contrastkit.train import launch
from contrastkit.train.config import PretrainConfig, to_dict
from contrastkit.train.device import autocast_dtype
from contrastkit.train.methods import get_method
from contrastkit.train.momentum import MomentumKeys
from contrastkit.train.networks import DataShape, build_networks
from contrastkit.train.optim import build_optimizer
from contrastkit.train.rundata import steps_per_epoch
from contrastkit.train.schedules import warmup_cosine


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
    and checkpoints use ``encoder`` and ``head`` themselves. ``momentum`` is a momentum
    method's key network and queue (None for the others).
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
    momentum: MomentumKeys | None = None


def build_training_state(
    cfg: PretrainConfig, shape: DataShape, n_train: int, device: torch.device
) -> TrainingState:
    """Seed, then build encoder, head, optimiser, schedule, grad scaler and generators."""
    ckpt_io.seed_everything(cfg.seed)
    assert cfg.model is not None and cfg.lr is not None and cfg.warmup_epochs is not None
    assert cfg.epochs is not None and cfg.batch_size is not None  # resolved (recipes.resolve)
    encoder, head = build_networks(
        model=cfg.model,
        norm=cfg.norm,
        method=cfg.method,
        shape=shape,
        proj_dim=cfg.proj_dim,
        bn_splits=cfg.bn_splits,
    )
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    encoder = encoder.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    head = head.to(device)
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    total = cfg.epochs * per_epoch
    # a momentum method's key network starts as a copy of the (unwrapped) query networks
    momentum = get_method(cfg.method).momentum_state(cfg, encoder, head, total)
    if momentum is not None:
        momentum = momentum.to(device)
    # under torchrun: DDP (and SyncBatchNorm with sync_bn); unlaunched: the module itself
    network = launch.wrap_model(EncoderWithHead(encoder, head), device, sync_bn=cfg.sync_bn)
    peak_lr = cfg.lr * cfg.batch_size / 256
    optimizer = build_optimizer(
        cfg.optimizer,
        [encoder, head],
        lr=peak_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay or 0.0,
    )
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
        encoder,
        head,
        network,
        optimizer,
        scheduler,
        scaler,
        generators,
        amp_dtype,
        momentum=momentum,
    )


def state_dict(
    state: TrainingState, cfg: PretrainConfig, shape: DataShape, finished: bool
) -> dict[str, Any]:
    """The checkpoint of ``state`` (schema in :mod:`contrastkit.train.checkpoint`)."""
    ckpt = {
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
    if state.momentum is not None:  # key network, queue, its labels and pointer: tensors
        ckpt["momentum"] = state.momentum.state_dict()
    return ckpt


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
    if state.momentum is not None:
        state.momentum.load_state_dict(ckpt["momentum"])
