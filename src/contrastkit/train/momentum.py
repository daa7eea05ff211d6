"""MoCo's training state: a momentum (EMA) key network and a FIFO queue of keys.

:class:`KeyQueue` is the queue of He et al. (2020): the K most recent L2-normalised keys (and
their labels, for the supervised queue), written at a pointer that wraps around, so any K ≥ the
keys of a step works, a multiple of them or not. :class:`MomentumKeys` holds the key network
(an EMA copy of the query encoder and head, never trained by gradient) and the queue; it is an
``nn.Module`` whose state dict (weights, queue, labels, pointer: tensors only) goes into the
checkpoint. :func:`ema_momentum` is the momentum of a step, constant or on BYOL's cosine schedule
towards 1; :func:`ema_update` is the update itself.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit import distributed

SCHEDULES = ("constant", "cosine")


class KeyQueue(nn.Module):
    """A FIFO queue of ``size`` keys of dimension ``dim`` with their labels (−1: none).

    It starts with random unit keys (as MoCo's code does) drawn from ``generator``, labelled −1,
    and the pointer at 0. :meth:`enqueue` writes a step's keys at the pointer, wrapping around.

    Args:
        size: K ≥ 1.
        dim: D ≥ 1.
        generator: Draws the initial keys (CPU).

    Raises:
        ValueError: if ``size`` or ``dim`` is not an integer ≥ 1.
    """

    keys: Tensor
    labels: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"queue {name} must be an integer >= 1, got {value!r}")
        keys = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        self.register_buffer("keys", keys)  # (K, D)
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))  # (K,)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Write ``keys`` (N, D) (and their ``labels`` (N,)) at the pointer, oldest first out.

        Row i goes to slot (ptr + i) mod K; the pointer moves on by N. The keys are stored
        L2-normalised and detached.

        Raises:
            ValueError: if ``keys`` is not (N, D) with the queue's D and 1 ≤ N ≤ K, or
                ``labels`` is not (N,).
        """
        size, dim = self.keys.shape
        if keys.dim() != 2 or keys.shape[1] != dim or not 1 <= keys.shape[0] <= size:
            raise ValueError(
                f"enqueue: keys must have shape (N, {dim}) with 1 <= N <= {size} (the queue's "
                f"size), got {tuple(keys.shape)}"
            )
        n = keys.shape[0]
        if labels is not None and labels.shape != (n,):
            raise ValueError(f"enqueue: labels must have shape ({n},), got {tuple(labels.shape)}")
        slots = (self.ptr + torch.arange(n, device=self.keys.device)) % size  # (N,)
        self.keys.index_copy_(0, slots, F.normalize(keys.detach().to(self.keys), dim=1))
        new_labels = labels if labels is not None else torch.full((n,), -1)
        self.labels.index_copy_(0, slots, new_labels.to(self.labels))
        self.ptr.copy_((self.ptr + n) % size)


def ema_momentum(base: float, step: int, total_steps: int, schedule: str) -> float:
    """The EMA momentum of step ``step`` (0-based) of ``total_steps``.

    ``"constant"``: ``base``. ``"cosine"``: 1 − (1 − base)·(cos(π·step/total) + 1)/2, from
    ``base`` at step 0 towards 1 at the end (BYOL, Grill et al. 2020, §3.2; MoCo v3).

    Raises:
        ValueError: on ``base`` outside [0, 1], a negative step, ``total_steps`` < 1 or an
            unknown ``schedule``.
    """
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {base!r}")
    if step < 0 or total_steps < 1:
        raise ValueError(f"need step >= 0 and total_steps >= 1, got {step}, {total_steps}")
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0
    raise ValueError(f"unknown EMA schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``target ← m·target + (1 − m)·source`` for every parameter (buffers are left alone).

    As MoCo's code and lightly's ``update_momentum``: the key network's batch-norm statistics
    are its own, from its forward passes.

    Raises:
        ValueError: if ``momentum`` is outside [0, 1] or the two modules' parameters differ in
            number or shape.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    t, s = list(target.parameters()), list(source.parameters())
    if len(t) != len(s) or any(a.shape != b.shape for a, b in zip(t, s, strict=True)):
        raise ValueError("ema_update: target and source must have the same parameters")
    for a, b in zip(t, s, strict=True):
        a.mul_(momentum).add_(b.detach(), alpha=1.0 - momentum)


class MomentumKeys(nn.Module):
    """The key network (EMA copies of an encoder and a head) and, optionally, a key queue.

    Args:
        encoder: The query encoder, copied.
        head: The query head the keys use (MoCo v3: its projector, not its predictor), copied.
        queue: The queue, or None (MoCo v3).
        total_steps: Steps of the run (the cosine schedule's length).
    """

    def __init__(
        self, encoder: nn.Module, head: nn.Module, queue: KeyQueue | None, total_steps: int
    ) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.head = copy.deepcopy(head).requires_grad_(False)
        self.queue = queue
        self.total_steps = total_steps
        self.pending: list[tuple[Tensor, Tensor]] = []  # a step's keys, enqueued after it

    @torch.no_grad()
    def keys(self, x: Tensor, shuffle: torch.Generator | None = None) -> Tensor:
        """The keys of images ``x`` (N, C, H, W), float32, no gradient. Shape: (N, D).

        With ``shuffle``, the batch goes through the key network in a random order drawn from
        it and the keys come back in the original order (MoCo's shuffling BN).
        """
        if shuffle is None:
            return self.head(self.encoder(x)).float()
        perm = torch.randperm(x.shape[0], generator=shuffle).to(x.device)
        out = self.head(self.encoder(x[perm])).float()
        return out[torch.argsort(perm)]

    def hold(self, keys: Tensor, labels: Tensor) -> None:
        """Keep a step's keys (N, D) and labels (N,) to enqueue after the optimiser step."""
        if self.queue is not None:
            self.pending.append((keys.detach(), labels))

    @torch.no_grad()
    def after_step(self, encoder: nn.Module, head: nn.Module, momentum: float) -> None:
        """EMA-update the key network from the query's, then enqueue the held keys of every process.

        The keys are all-gathered in the global batch's order (:func:`global_order`), so every
        process holds the same queue, the one a single process would.
        """
        ema_update(self.encoder, encoder, momentum)
        ema_update(self.head, head, momentum)
        if self.queue is None:
            return
        for keys, labels in self.pending:
            self.queue.enqueue(global_order(keys), global_order(labels))
        self.pending.clear()


def global_order(x: Tensor) -> Tensor:
    """All-gather a step's rows (no gradient) in the order of the global batch.

    :func:`~contrastkit.train.rundata.epoch_batches` gives process r of W the positions
    r, r + W, r + 2W… of the global batch; row j of process r is position j·W + r. The
    processes' rows are therefore interleaved, not concatenated: the result is the global batch
    in the order one process sees it. Unlaunched it is ``x`` detached.

    Args:
        x: This process's rows; every process has the same count. Shape: (n, ...).

    Returns:
        Shape: (W·n, ...).
    """
    world = distributed.world_size()
    gathered = distributed.all_gather(x)  # rank-major: (W·n, ...)
    if world == 1:
        return gathered
    n = x.shape[0]
    return gathered.view(world, n, *x.shape[1:]).transpose(0, 1).reshape(world * n, *x.shape[1:])


def shuffle_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of one step's key shuffle (CPU).

    A function of (seed, step, rank): a resumed run draws the same permutations without a
    saved state.
    """
    state = int(np.random.SeedSequence([seed, step, rank, 23]).generate_state(1)[0])
    return torch.Generator().manual_seed(state)
