r"""The one dispatch point of the fast losses: dense or tiled, local or gathered across processes.

Every fast loss reaches the dense or the tiled code here and only here: :func:`resolve_impl`
turns ``impl="auto"`` into ``"dense"`` or ``"tiled"`` by the size of the logit matrix, and
:data:`ROW_IMPLS` holds the functions of each. Two entry points use them:

* :func:`rows_against_all`, r_i of :mod:`contrastkit.losses._rows` (SupCon, and NT-Xent as its
  V = 2 form): any classes, each anchor excluding at most its own column, an optional queue of
  extra contrasts, and the symmetric path when the anchors are the contrasts;
* :func:`positive_rows`, InfoNCE's r_i: one positive key per query, against every positive key
  of the batch or against the positive and shared negatives.

With ``gather=True`` a loss on process r (of W) keeps its own N_r anchors and contrasts them
against the rows of all processes, gathered with :func:`contrastkit.distributed.gather_with_grad`;
the classes are gathered with them and each anchor's own column is offset by the rows of the
processes before r. Process r returns

.. math::
    L_r = W \cdot \frac{\sum_{i \in I^+_r} -r_i}{|I^+|}

where I⁺_r are its anchors with a positive and |I⁺| = Σ_r |I⁺_r| is all-reduced without
gradient. Then (1/W) Σ_r L_r is the loss of one process on the concatenated batch, and because
the gather's backward sums over processes, each process's embeddings receive W times their
full-batch gradient, which DDP's average over W processes turns into exactly the full-batch
gradient of every parameter, a learnable temperature included. A queue is the same on every
process and is not gathered.

Unlaunched (W = 1) the gathers are the identity and the result is the single-process loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from contrastkit import distributed
from contrastkit.losses._rows import row_log_probs, row_log_sum_exp, self_row_log_probs
from contrastkit.losses.tiled import (
    auto_is_tiled,
    positive_log_prob,
    row_log_probs_tiled,
    row_log_sum_exp_tiled,
    self_row_log_probs_tiled,
)

#: ``(anchors, contrasts, anchor_classes, contrast_classes, self_index, temperature, *, tile_size)
#: -> (r, num_positives)``, the contract of :func:`contrastkit.losses._rows.row_log_probs`.
RowFn = Callable[..., tuple[Tensor, Tensor]]


class RowsCore(NamedTuple):
    """The functions of one implementation; each takes ``tile_size=`` (the dense ones ignore it)."""

    #: r_i of anchors (A, D) against contrasts (C, D), each anchor excluding its ``self_index``.
    rows: RowFn
    #: ``(z, classes, temperature, *, tile_size) -> (r, num_positives)``: the anchors are the
    #: contrasts (``self_index = arange``); the tiled one visits half of the tiles.
    self_rows: RowFn
    #: ``(anchors, contrasts, temperature, *, tile_size) -> lse``: log Σ_c e^{a_i·c_c/τ} over every
    #: contrast, (A,).
    log_sum_exp: Callable[..., Tensor]


#: The dispatch table, by resolved ``impl`` name.
ROW_IMPLS: dict[str, RowsCore] = {
    "dense": RowsCore(row_log_probs, self_row_log_probs, row_log_sum_exp),
    "tiled": RowsCore(row_log_probs_tiled, self_row_log_probs_tiled, row_log_sum_exp_tiled),
}


def resolve_impl(
    impl: str,
    anchors: int,
    contrasts: int,
    *,
    gather: bool,
    symmetric: bool = False,
    shared: int = 0,
) -> str:
    """Turn ``impl="auto"`` into ``"dense"`` or ``"tiled"`` by the size of the logit matrix.

    Args:
        impl: ``"auto"``, ``"dense"`` or ``"tiled"``.
        anchors: This process's anchors A.
        contrasts: This process's contrasts C; with ``gather``, W·C approximates the gathered M.
        gather: Whether the contrasts are gathered from every process.
        symmetric: The anchors are the contrasts; the tiled core's symmetric path applies unless
            the contrasts are gathered (a gathered block is rectangular).
        shared: Contrasts that every process holds whole and does not gather (a queue).

    Returns:
        ``"dense"`` or ``"tiled"``.
    """
    if impl != "auto":
        return impl
    world = distributed.world_size() if gather else 1
    rectangular = not symmetric or world > 1
    tiled = auto_is_tiled(anchors, contrasts * world + shared, symmetric=not rectangular)
    return "tiled" if tiled else "dense"


def _gather(contrasts: Tensor, gather: bool) -> tuple[Tensor, list[int] | None, int]:
    """The contrasts of every process (``gather`` and W > 1), their counts and this one's offset.

    Returns:
        ``(contrasts, counts, offset)``: (M, D) with M = Σ_r C_r, the C_r of every process (None
        when nothing is gathered) and the rows of the processes before this one.
    """
    if not (gather and distributed.world_size() > 1):
        return contrasts, None, 0
    counts = distributed.row_counts(contrasts)  # C_r of every process
    offset = sum(counts[: distributed.rank()])
    return distributed.gather_with_grad(contrasts, counts=counts), counts, offset


def rows_against_all(
    anchors: Tensor,
    contrasts: Tensor,
    anchor_classes: Tensor,
    contrast_classes: Tensor,
    self_index: Tensor,
    temperature: Tensor | float,
    *,
    impl: str,
    gather: bool,
    symmetric: bool = False,
    tile_size: int | None = None,
    queue: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """r_i of the local anchors against the local (or, with ``gather``, all processes') contrasts.

    Args:
        anchors: This process's anchors. Shape: (A, D).
        contrasts: This process's contrasts. Shape: (C, D).
        anchor_classes: Class of each anchor, unique across processes where it must be (see
            :func:`global_classes`). Shape: (A,).
        contrast_classes: Class of each contrast. Shape: (C,).
        self_index: Column of each anchor among the local contrasts, −1 if none. Shape: (A,).
        temperature: τ, a float or a 0-dim tensor.
        impl: ``"auto"``, ``"dense"`` or ``"tiled"`` (resolved here by :func:`resolve_impl`).
        gather: Contrast against the gathered contrasts of every process.
        symmetric: The anchors are the contrasts (``self_index = arange``); the tiled core then
            takes its symmetric path when nothing is gathered (W = 1 or ``gather=False``) and
            there is no queue.
        tile_size: Tile edge of the tiled core; None for its default. Unused by ``"dense"``.
        queue: ``(keys, classes)``, (K, D) and (K,): contrasts appended after the (gathered)
            contrasts on every process, never anchors and not gathered. None for none.

    Returns:
        ``(r, num_positives)``, both (A,), as :func:`contrastkit.losses._rows.row_log_probs`.
    """
    shared = 0 if queue is None else queue[0].shape[0]
    symmetric = symmetric and queue is None  # the queue is rectangular: keys are not anchors
    impl = resolve_impl(
        impl,
        anchors.shape[0],
        contrasts.shape[0],
        gather=gather,
        symmetric=symmetric,
        shared=shared,
    )
    core = ROW_IMPLS[impl]
    contrasts, counts, offset = _gather(contrasts, gather)
    if counts is not None:
        contrast_classes = distributed.all_gather(contrast_classes, counts=counts)  # (M,)
        self_index = torch.where(self_index >= 0, self_index + offset, self_index)
    elif symmetric:
        return core.self_rows(contrasts, contrast_classes, temperature, tile_size=tile_size)
    if queue is not None:
        contrasts = torch.cat([contrasts, queue[0]])  # (M + K, D)
        contrast_classes = torch.cat([contrast_classes.long(), queue[1].long()])  # (M + K,)
    return core.rows(
        anchors,
        contrasts,
        anchor_classes,
        contrast_classes,
        self_index,
        temperature,
        tile_size=tile_size,
    )


def positive_rows(
    anchors: Tensor,
    positives: Tensor,
    negatives: Tensor | None,
    temperature: Tensor | float,
    *,
    impl: str,
    gather: bool,
    tile_size: int | None = None,
) -> Tensor:
    r"""r_i = l_i⁺ − log Σ_{c∈K(i)} e^{l_ic} for one positive per anchor, l_i⁺ = a_i·p_i/τ.

    K(i) is every positive of the batch when ``negatives`` is None (the other anchors' positives
    are the negatives; with ``gather``, the positives of every process), else p_i and the shared
    ``negatives``. The log-sum-exp is :attr:`RowsCore.log_sum_exp` of the resolved ``impl``; the
    positive logit is computed apart and a one-term denominator gives exactly 0
    (:func:`contrastkit.losses.tiled.positive_log_prob`).

    Args:
        anchors: This process's anchors (queries). Shape: (N, D).
        positives: Row i is the positive of ``anchors[i]``. Shape: (N, D).
        negatives: None, or negatives shared by every anchor (not gathered). Shape: (M, D).
        temperature: τ, a float or a 0-dim tensor.
        impl: ``"auto"``, ``"dense"`` or ``"tiled"`` (resolved here by :func:`resolve_impl`).
        gather: With ``negatives=None``, contrast against the positives of every process.
        tile_size: Tile edge of the tiled core; None for its default. Unused by ``"dense"``.

    Returns:
        r. Shape: (N,).
    """
    positive_logit = (anchors * positives).sum(1) / temperature  # (N,)
    contrasts = positives if negatives is None else negatives
    impl = resolve_impl(impl, anchors.shape[0], contrasts.shape[0], gather=gather)
    contrasts, _, _ = _gather(contrasts, gather)
    lse = ROW_IMPLS[impl].log_sum_exp(anchors, contrasts, temperature, tile_size=tile_size)
    num_terms = contrasts.shape[0]
    if negatives is not None:  # the positive is not among the contrasts: add its term
        lse = torch.logaddexp(positive_logit, lse)
        num_terms += 1
    return positive_log_prob(positive_logit, lse, num_terms)


def global_classes(local_index: Tensor, gather: bool) -> Tensor:
    """Make per-sample classes (``labels=None``) distinct across processes.

    Sample j of process r gets class j·W + r, so equal local indices on different processes never
    match; with ``gather=False`` or W = 1 the index is returned unchanged.

    Args:
        local_index: Sample index within this process. Shape: (K,).
        gather: Whether the loss gathers across processes.

    Returns:
        Class ids. Shape: (K,).
    """
    if not gather:
        return local_index
    return local_index * distributed.world_size() + distributed.rank()


def negative_mean(r: Tensor, num_positives: Tensor, *, gather: bool) -> Tensor | None:
    """−(mean of r_i over the anchors with a positive), as this process's share when gathering.

    Args:
        r: Row log-probabilities, 0 where an anchor has no positive. Shape: (A,).
        num_positives: Positives of each anchor. Shape: (A,).
        gather: Return W · Σ_{local i ∈ I⁺} −r_i / |I⁺| with |I⁺| counted over every process.

    Returns:
        A 0-dim tensor, or None when no anchor (on any process, with ``gather``) has a positive.
    """
    has_positive = num_positives > 0  # (A,)
    if not gather:
        return -r[has_positive].mean() if bool(has_positive.any()) else None
    count = int(distributed.all_reduce(has_positive.sum()))
    if count == 0:
        return None
    return -(distributed.world_size() / count) * r[has_positive].sum()
