r"""Process-group helpers that work unlaunched, and the gather whose gradient is exact.

Every function here works in three situations with the same code: a plain ``python`` process
(no process group: rank 0 of 1, gathers are the identity), and a process started by ``torchrun``
on one or several machines (gloo on CPU, nccl on CUDA).

Where gradients flow. :func:`gather_with_grad` concatenates the rows of every process in rank
order. Its backward takes the gradient of the whole gathered tensor on each process, sums it over
the processes (an all-reduce), and returns this process's slice. With a loss L_r on process r,
process r's rows x_r therefore receive Σ_s ∂L_s/∂x_r: the contributions of every process, not
only its own. A plain ``torch.distributed.all_gather`` has no gradient at all, and a gather whose
backward only slices (without the sum) drops the other processes' terms: the contrast-side
gradient comes out about W times too small (lightly #1528). :func:`all_gather` is the gather
without gradient, for labels and counts.

Uneven local sizes are handled: the row counts are exchanged first and the rows padded to the
largest, so process r may hold a different number of rows from process s. The trailing
dimensions and the dtype must agree; otherwise a ``ValueError`` names every process's shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "LAUNCH_VARIABLES",
    "all_gather",
    "all_reduce",
    "barrier",
    "gather_with_grad",
    "init_from_env",
    "is_distributed",
    "is_main",
    "launched",
    "local_batch_size",
    "main_first",
    "rank",
    "row_counts",
    "shutdown",
    "world_size",
    "wrap_model",
]

T = TypeVar("T")

#: The environment ``torchrun`` gives every process; all or none must be set.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

_LAUNCH_HINT = (
    "start several processes with torchrun, e.g. "
    "`torchrun --nproc-per-node=2 -m contrastkit pretrain ...`, or run plain `contrastkit ...` "
    "for one process"
)


def is_distributed() -> bool:
    """Return True when a default process group is initialised (e.g. under ``torchrun``).

    Returns:
        ``torch.distributed.is_available() and torch.distributed.is_initialized()``.
    """
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Return this process's global rank, 0 when unlaunched.

    Returns:
        The rank in the default process group, or 0 without one.
    """
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Return the number of processes W, 1 when unlaunched.

    Returns:
        The size of the default process group, or 1 without one.
    """
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Return True on the process that writes files and logs (global rank 0).

    Returns:
        ``rank() == 0``; always True when unlaunched.
    """
    return rank() == 0


_DTYPE_CODES = {
    dt: i
    for i, dt in enumerate(
        (
            torch.float32,
            torch.float64,
            torch.float16,
            torch.bfloat16,
            torch.int64,
            torch.int32,
            torch.int16,
            torch.int8,
            torch.uint8,
            torch.bool,
        )
    )
}


def row_counts(x: Tensor) -> list[int]:
    """Exchange ``x.shape`` with every process; return each one's row count, in rank order.

    One small collective. Pass the result as ``counts=`` to :func:`gather_with_grad` and
    :func:`all_gather` to gather several tensors with the same rows without exchanging again.

    Args:
        x: This process's rows. Shape: (N_r, ...).

    Returns:
        ``[N_0, ..., N_{W-1}]``; ``[N_0]`` when unlaunched.

    Raises:
        ValueError: if the processes disagree on the number of dimensions, the trailing
            dimensions or the dtype (the same error is raised on every process).
    """
    if world_size() == 1:
        return [x.shape[0]]
    # one small collective: (ndim, dtype code, shape padded to 8 dims); -1 pads
    code = _DTYPE_CODES.get(x.dtype, -2)
    header = [x.ndim, code, *x.shape] + [-1] * (8 - x.ndim)
    if x.ndim > 8:
        raise ValueError(f"gather supports at most 8 dimensions, got shape {tuple(x.shape)}")
    local = torch.tensor(header, dtype=torch.long, device=x.device)  # (10,)
    headers = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(headers, local)
    rows = [h.tolist() for h in headers]
    if any(h[:2] != rows[0][:2] or h[3:] != rows[0][3:] for h in rows):
        shapes = ", ".join(
            f"rank {r}: {_dtype_name(h[1])} {tuple(h[2 : 2 + h[0]])}" for r, h in enumerate(rows)
        )
        raise ValueError(
            "every process must gather tensors with the same dtype and trailing dimensions "
            f"(only dimension 0 may differ); got {shapes}"
        )
    return [h[2] for h in rows]


def _dtype_name(code: int) -> str:
    names = {i: str(dt) for dt, i in _DTYPE_CODES.items()}
    return names.get(code, "other dtype")


def _gather_rows(x: Tensor, counts: list[int]) -> Tensor:
    """All-gather the rows of ``x`` (no autograd), padding to the largest count if uneven."""
    most = max(counts)
    x = x.contiguous()
    if x.shape[0] < most:
        pad = x.new_zeros((most - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad])  # (max count, ...)
    parts = [torch.empty_like(x) for _ in counts]
    dist.all_gather(parts, x)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])  # (Σ counts, ...)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather forward; all-reduce (sum) then slice backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, counts: list[int]) -> Tensor:
        r = rank()
        ctx.start = sum(counts[:r])
        ctx.stop = ctx.start + counts[r]
        return _gather_rows(x.detach(), counts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()  # all_reduce works in place; keep autograd's buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # Σ_s ∂L_s/∂(gathered rows)
        return grad[ctx.start : ctx.stop], None


def gather_with_grad(x: Tensor, *, counts: list[int] | None = None) -> Tensor:
    r"""Concatenate the rows of every process, with a gradient that sums over the processes.

    Forward: ``cat([x_0, x_1, ..., x_{W-1}])``, rows in rank order (process r's rows start at
    row Σ_{s<r} N_s). Backward: the incoming gradient of the whole result is all-reduced (summed)
    over the processes and this process's slice returned, so x_r gets Σ_s ∂L_s/∂x_r. Unlaunched
    (W = 1) it returns ``x`` itself.

    Args:
        x: This process's rows. Shape: (N_r, ...); N_r may differ between processes, the other
            dimensions and the dtype must not.
        counts: Every process's N_r from :func:`row_counts`; exchanged here when None.

    Returns:
        The gathered rows. Shape: (Σ_r N_r, ...).

    Raises:
        ValueError: if the processes' trailing dimensions or dtypes differ (on every process).
    """
    if world_size() == 1:
        return x
    out: Tensor = _GatherWithGrad.apply(x, row_counts(x) if counts is None else counts)
    return out


def all_gather(x: Tensor, *, counts: list[int] | None = None) -> Tensor:
    """Concatenate the rows of every process without gradient (labels, counts, metrics).

    Args:
        x: This process's rows. Shape: (N_r, ...); N_r may differ between processes.
        counts: Every process's N_r from :func:`row_counts`; exchanged here when None.

    Returns:
        The gathered rows in rank order, detached. Shape: (Σ_r N_r, ...).

    Raises:
        ValueError: if the processes' trailing dimensions or dtypes differ (on every process).
    """
    if world_size() == 1:
        return x.detach()
    return _gather_rows(x.detach(), row_counts(x) if counts is None else counts)


def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """Sum or average a tensor over the processes, without gradient; returns a new tensor.

    Args:
        x: The same shape on every process.
        op: ``"sum"`` or ``"mean"``. Default ``"sum"``.

    Returns:
        The reduced tensor (a detached copy; ``x`` is left unchanged).

    Raises:
        ValueError: on an unknown ``op``.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
    out = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        if op == "mean":
            out = out / world_size()
    return out


# --- launching: one call at the start of a command, one at the end ---------------------------


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
    """Leave the process group if this process joined one (no-op otherwise)."""
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


def barrier() -> None:
    """Wait for every process (no-op unlaunched)."""
    if world_size() > 1:
        dist.barrier()


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
        ValueError: ``sync_bn`` on a device other than CUDA.
    """
    if sync_bn and device.type != "cuda":
        raise ValueError(
            "--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); on the CPU use "
            "--norm group for batch-independent normalisation"
        )
    if world_size() == 1:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
