r"""The collectives of the losses: rank and world size, and the gather whose gradient is exact.

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

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

if dist.is_available():
    # Imported before any process group exists, for one side effect: the collectives of
    # torch.distributed.nn.functional take ``group=group.WORLD`` as a default argument, evaluated
    # at import. DistributedDataParallel's constructor imports the module (via torch._dynamo); the
    # defaults would then hold the live group, and destroy_process_group() could not free it. Its
    # gloo worker threads would run on into interpreter shutdown, where one that releases its last
    # collective (a tensor whose Python object needs the GIL) is ended by CPython inside a noexcept
    # destructor: std::terminate, SIGABRT, "terminate called without an active exception".
    import torch.distributed.nn.functional

__all__ = [
    "all_gather",
    "all_reduce",
    "barrier",
    "gather_with_grad",
    "is_distributed",
    "is_main",
    "rank",
    "row_counts",
    "world_size",
]


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


def barrier() -> None:
    """Wait for every process (no-op unlaunched)."""
    if world_size() > 1:
        dist.barrier()
