"""Launching a run on several processes (``torchrun``): process group, device, DDP, rank 0 first.

Every function works unlaunched too (one process, rank 0 of 1). The collectives the losses use
live in :mod:`contrastkit.distributed`; this module is the training side: joining and leaving
the process group that ``torchrun`` describes, splitting the global batch, wrapping the network
in ``DistributedDataParallel``, and letting rank 0 do the work only it may do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from contrastkit.distributed import is_distributed, is_main, world_size
from contrastkit.errors import ContrastkitError

T = TypeVar("T")

#: The environment ``torchrun`` gives every process; all or none must be set.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

_LAUNCH_HINT = (
    "start several processes with torchrun, e.g. "
    "`torchrun --nproc-per-node=2 -m contrastkit pretrain ...`, or run plain `contrastkit ...` "
    "for one process"
)


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """Return True when any of :data:`LAUNCH_VARIABLES` is set (a launcher such as torchrun).

    Args:
        environ: The environment to read; ``os.environ`` when None.

    Returns:
        Whether :func:`init_from_env` would try to join a process group (or reject a partial
        launch).
    """
    env = os.environ if environ is None else environ
    return any(v in env for v in LAUNCH_VARIABLES)


def init_from_env(
    device: str = "auto",
    *,
    environ: Mapping[str, str] | None = None,
    timeout: timedelta = timedelta(minutes=30),
) -> torch.device:
    """Join the process group ``torchrun`` describes, or stay a single process; pick the device.

    Without any of :data:`LAUNCH_VARIABLES` in the environment this is a single process and only
    the device is resolved. Under ``torchrun`` (all of them set) each process takes
    ``cuda:LOCAL_RANK`` and the nccl backend when it uses CUDA, else the CPU and gloo, and joins
    the default process group (rendezvous through ``MASTER_ADDR:MASTER_PORT``). Calling it again
    in a process that already joined only resolves the device.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        environ: The environment to read; ``os.environ`` when None.
        timeout: How long collectives (and the rendezvous) wait for the other processes.

    Returns:
        This process's device.

    Raises:
        ValueError: some but not all launch variables are set, they are not integers, the rank
            is out of range, ``device`` is unknown, or CUDA is asked for but this process has no
            GPU (``LOCAL_RANK`` ≥ the number of visible GPUs).
    """
    env = os.environ if environ is None else environ
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    present = [v for v in LAUNCH_VARIABLES if v in env]
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if not present:
        return torch.device("cuda" if use_cuda else "cpu")
    missing = [v for v in LAUNCH_VARIABLES if v not in env]
    if missing:
        raise ValueError(
            f"incomplete distributed launch: {', '.join(present)} set but {', '.join(missing)} "
            f"missing; {_LAUNCH_HINT}"
        )
    try:
        global_rank, local_rank, world = (int(env[v]) for v in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
        int(env["MASTER_PORT"])
    except ValueError:
        values = ", ".join(f"{v}={env[v]!r}" for v in LAUNCH_VARIABLES)
        raise ValueError(f"launch variables must be integers where numeric: {values}") from None
    if not (world >= 1 and 0 <= global_rank < world and local_rank >= 0):
        raise ValueError(
            f"inconsistent launch: RANK={global_rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world}"
        )
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: "
                "use --nproc-per-node at most the number of GPUs per machine"
            )
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            init_method="env://",
            rank=global_rank,
            world_size=world,
            timeout=timeout,
        )
    return chosen


def shutdown() -> None:
    """Leave the process group if this process joined one (no-op otherwise).

    The group is freed here, and its backend's threads end, unless something still holds it (a
    DistributedDataParallel model: drop it first); a group that outlives this call keeps threads
    running into interpreter shutdown, which gloo can turn into an abort.
    """
    if is_distributed():
        dist.destroy_process_group()


def local_batch_size(global_batch: int) -> int:
    """Split a global batch evenly over the processes.

    ``--batch-size`` is the batch the loss sees, the same whether one process or W run it; each
    process loads ``global_batch / W`` samples per step.

    Args:
        global_batch: Samples per optimisation step over all processes.

    Returns:
        ``global_batch // world_size()``.

    Raises:
        ValueError: if W does not divide ``global_batch``.
    """
    world = world_size()
    if global_batch % world:
        lower, upper = global_batch // world * world, -(-global_batch // world) * world
        raise ValueError(
            f"batch size {global_batch} is not divisible by the {world} processes (WORLD_SIZE); "
            f"use a multiple of {world} such as {lower or upper} or {upper}, or another "
            "--nproc-per-node"
        )
    return global_batch // world


def main_first(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on the main process only; if it raises, raise the same error on every process.

    For work only rank 0 may do (creating the run directory) whose failure must stop every
    process at once instead of leaving the others waiting in the next collective.

    Args:
        fn: The work, without arguments.

    Returns:
        ``fn()`` on the main process, None on the others.

    Raises:
        Exception: whatever ``fn`` raised on the main process (re-raised everywhere).
    """
    result: T | None = None
    error: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except Exception as e:  # re-raised below, on every process
            error = e
    if world_size() > 1:
        box: list[BaseException | None] = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise error
    return result


def wrap_model(model: nn.Module, device: torch.device, *, sync_bn: bool = False) -> nn.Module:
    """Wrap a model for data-parallel training over the processes (identity unlaunched).

    Under W > 1 the model is wrapped in ``DistributedDataParallel``, which broadcasts rank 0's
    parameters and averages gradients over the processes; ``sync_bn`` first turns every
    BatchNorm into a ``SyncBatchNorm`` (statistics over the global batch; CUDA only). Build the
    optimiser from the parameters of ``model`` after this call when ``sync_bn`` is set (the
    conversion creates new modules); keep using ``model`` itself, unwrapped, for evaluation and
    checkpoints on a single process.

    Args:
        model: The network, already on ``device``.
        device: This process's device (``cuda:LOCAL_RANK`` or the CPU).
        sync_bn: Convert BatchNorm layers to SyncBatchNorm.

    Returns:
        The DDP-wrapped model, or ``model`` when W = 1.

    Raises:
        ContrastkitError: ``sync_bn`` on a device other than CUDA.
    """
    check_sync_bn(sync_bn, device)
    if world_size() == 1:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    """Refuse ``--sync-bn`` on a device without SyncBatchNorm (everything but CUDA).

    Raises:
        ContrastkitError: saying what to use on the CPU instead.
    """
    if sync_bn and device.type != "cuda":
        raise ContrastkitError(
            "--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); on the CPU use "
            "--norm group for batch-independent normalisation"
        )
