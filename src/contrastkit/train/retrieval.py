r"""Retrieval metrics of embeddings: precision@1, recall@k and MAP@R on cosine similarity.

Queries (N, F) are ranked against a labelled reference set (M, F) by cosine similarity of the
L2-normalised features; a reference is *relevant* to a query when it has the query's label.
R(q) is the number of references relevant to query q.

- ``precision_at_1``: the fraction of queries whose nearest reference is relevant.
- ``recall_at_k``: the fraction of queries with at least one relevant reference among their k
  nearest — Recall@K as the deep-metric-learning literature reports it (Song et al. 2016,
  "Deep Metric Learning via Lifted Structured Feature Embedding"; Musgrave et al. 2020 note
  that pytorch-metric-learning's ``precision_at_1`` is this Recall@1). It is not the
  information-retrieval recall (relevant found / R), which is tiny for classes of thousands.
- ``map_at_r``: mean over queries of :math:`\frac{1}{R}\sum_{i=1}^{R} P(i)\,\mathrm{rel}(i)`,
  P(i) the precision of the first i neighbours and rel(i) whether the i-th is relevant
  (Musgrave et al. 2020, "A Metric Learning Reality Check"; pytorch-metric-learning's
  ``mean_average_precision_at_r``).

Queries whose label no reference has (R = 0) are left out of every mean and counted, as
pytorch-metric-learning's ``AccuracyCalculator`` does. References are ranked by decreasing
float32 cosine similarity, equal similarities in the order of the reference set. The
similarity is computed for a chunk of queries at a time: memory O(chunk · M), never N × M;
only the top max(R, k) of each row are ranked (a selection, then a sort: :func:`_ranked`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

RECALL_KS = (1, 5, 10)
"""The k of ``recall_at_k`` that ``contrastkit retrieval`` reports."""

_CHUNK_ELEMENTS = 2**24
"""Similarities held at once (64 MB of float32): the query chunk is this over M."""

_BELOW_COSINE = -3.0
"""A similarity below every cosine (float32 rounding keeps those within [-1.01, 1.01])."""

_INDEX_BITS = 29
"""float64 has 29 mantissa bits more than float32: room for a reference index (M ≤ 2**29)."""

_INDEX_MASK = (1 << _INDEX_BITS) - 1


@dataclass
class RetrievalMetrics:
    """Retrieval figures of a query set against a reference set (see the module docstring).

    Attributes:
        precision_at_1: Fraction of queries whose nearest reference is relevant.
        recall_at_k: Per k, fraction of queries with a relevant reference in their k nearest.
        map_at_r: Mean average precision at R.
        n_queries: Queries counted (those with R ≥ 1).
        lone_queries: Queries left out because no reference has their label.
    """

    precision_at_1: float
    recall_at_k: dict[int, float]
    map_at_r: float
    n_queries: int
    lone_queries: int


def _check(
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor,
    reference_labels: Tensor,
    ks: tuple[int, ...],
    exclude_self: bool,
) -> None:
    """Raise ``ValueError`` naming the first argument of the wrong shape or value."""
    for name, x in (("query", query), ("reference", reference)):
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(
                f"{name} must be a non-empty (N, F) tensor, got shape {tuple(x.shape)}"
            )
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"query and reference must have the same feature size, got {query.shape[1]} "
            f"and {reference.shape[1]}"
        )
    for name, labels, x in (
        ("query", query_labels, query),
        ("reference", reference_labels, reference),
    ):
        if labels.shape != (x.shape[0],):
            raise ValueError(
                f"{name}_labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}"
            )
    for name, x in (("query", query), ("reference", reference)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite, got a NaN or infinite value")
    if reference.shape[0] > 1 << _INDEX_BITS:
        raise ValueError(
            f"reference must have at most 2**{_INDEX_BITS} rows, got {reference.shape[0]}"
        )
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be integers >= 1, got {ks}")
    if exclude_self and query.shape[0] != reference.shape[0]:
        raise ValueError(
            f"exclude_self needs the queries to be the reference, got {query.shape[0]} "
            f"queries and {reference.shape[0]} references"
        )


@torch.no_grad()
def retrieval_metrics(
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor,
    reference_labels: Tensor,
    *,
    ks: tuple[int, ...] = RECALL_KS,
    exclude_self: bool = False,
    chunk: int | None = None,
) -> RetrievalMetrics:
    """Precision@1, Recall@k and MAP@R of queries against a reference set, by cosine similarity.

    References are ranked by decreasing similarity; equal similarities rank in the order of
    ``reference`` (the first listed first).

    Args:
        query: Query features (normalised here). Shape: (N, F).
        query_labels: Integer labels. Shape: (N,).
        reference: Reference features (normalised here). Shape: (M, F).
        reference_labels: Integer labels. Shape: (M,).
        ks: The k of Recall@k (each at most M; a larger k counts all M).
        exclude_self: The queries are the reference (leave-one-out): query i never retrieves
            reference i, and R counts the others of its label.
        chunk: Queries per similarity block (default: as many as keep a block at 2**24
            similarities).

    Returns:
        The metrics, each a mean over the queries with at least one relevant reference
        (NaN when no query has one).

    Raises:
        ValueError: on tensors of the wrong shape or with a non-finite value, more than
            2**29 references, ``ks`` below 1, or ``exclude_self`` with different query and
            reference sets.
    """
    _check(query, query_labels, reference, reference_labels, ks, exclude_self)
    ref = F.normalize(reference.float(), dim=1)  # (M, F)
    queries = F.normalize(query.float().to(ref.device), dim=1)  # (N, F)
    ref_labels = reference_labels.cpu().long().numpy()  # (M,)
    q_labels = query_labels.cpu().long().numpy()  # (N,)
    m = ref.shape[0]
    # R per query: references of its label (minus itself when leaving one out)
    classes, counts = np.unique(ref_labels, return_counts=True)
    pos = np.searchsorted(classes, q_labels).clip(max=len(classes) - 1)
    r_all = np.where(classes[pos] == q_labels, counts[pos], 0) - int(exclude_self)  # (N,)
    step = chunk or max(1, _CHUNK_ELEMENTS // m)
    sums = np.zeros(2 + len(ks))  # hits@1, found@k per k, Σ AP@R
    for start in range(0, queries.shape[0], step):
        rows = start + np.flatnonzero(r_all[start : start + step] > 0)  # with a relevant one
        if len(rows) == 0:
            continue
        index = torch.from_numpy(rows).to(ref.device)
        sim = queries[index] @ ref.T  # (n, M)
        if exclude_self:  # below every cosine: ranked last
            sim[torch.arange(len(rows)), index] = _BELOW_COSINE
        sums += _block_sums(sim.cpu().numpy(), q_labels[rows], r_all[rows], ref_labels, ks)
    hits_at_1, ap_sum = float(sums[0]), float(sums[-1])
    found = dict(zip(ks, sums[1:-1].tolist(), strict=True))
    n = int((r_all > 0).sum())
    denom = n if n else float("nan")  # no query with a relevant reference: NaN, not 0
    return RetrievalMetrics(
        precision_at_1=hits_at_1 / denom,
        recall_at_k={k: found[k] / denom for k in ks},
        map_at_r=ap_sum / denom,
        n_queries=n,
        lone_queries=int((r_all <= 0).sum()),
    )


def _ranked(sim: np.ndarray, depth: int) -> np.ndarray:
    """Indices of the ``depth`` most similar references per row, by similarity then index.

    A selection (``np.partition``) finds each row's depth-th largest similarity; the
    references at or above it (depth of them, more on a tie at the threshold) are the only
    ones ranked. Each of their float32 similarities is widened to float64 exactly and the
    reference index written into the 29 low mantissa bits float32 leaves at zero (for a
    negative similarity the index itself, for a positive one its complement, so that on
    equal similarities the lower index is the larger float64): distinct similarities keep
    their order, equal ones become distinct, and a sort of these values alone gives the
    ranking, the indices read back from the low bits. Vectorised, and much faster than a
    ``topk`` of depth R over M carrying its indices.

    Args:
        sim: Finite float32 similarities. Shape: (n, M).
        depth: How many to rank, 1 ≤ depth ≤ M.

    Returns:
        Shape: (n, depth), int64.
    """
    n, m = sim.shape
    threshold = np.partition(sim, m - depth, axis=1)[:, m - depth]  # (n,) depth-th largest
    above = sim >= threshold[:, None]  # (n, M)
    count = above.sum(axis=1)  # (n,) candidates per row, >= depth (more on a tie)
    flat = np.flatnonzero(above)  # (c,) row-major positions
    rows = np.repeat(np.arange(n), count)  # (c,)
    cols = flat - rows * m  # (c,)
    keys = (sim.ravel()[flat] + np.float32(0.0)).astype(np.float64)  # (c,); -0.0 made +0.0
    bits = keys.view(np.int64)
    bits |= _INDEX_MASK - cols
    np.bitwise_xor(bits, _INDEX_MASK, out=bits, where=keys < 0)  # negative: the index
    if int(count.max()) == depth:  # no tie at any threshold: depth per row
        padded = keys.reshape(n, depth)
    else:
        start = np.cumsum(count) - count
        padded = np.full((n, int(count.max())), -np.inf)  # (n, max count)
        padded[rows, np.arange(len(rows)) - start[rows]] = keys
    top = np.sort(padded, axis=1)[:, : -depth - 1 : -1]  # (n, depth), largest first
    code = top.view(np.int64)
    return (code & _INDEX_MASK) ^ (~(code >> 63) & _INDEX_MASK)  # (n, depth)


def _block_sums(
    sim: np.ndarray, labels: np.ndarray, r: np.ndarray, ref_labels: np.ndarray, ks: tuple[int, ...]
) -> np.ndarray:
    """Hits@1, queries with a relevant reference within k per k, and Σ AP@R of a block.

    Args:
        sim: Similarities of the block's queries. Shape: (n, M).
        labels: Their labels. Shape: (n,).
        r: Their R, each ≥ 1. Shape: (n,).
        ref_labels: The references' labels. Shape: (M,).
        ks: The k of Recall@k.

    Returns:
        Shape: (2 + len(ks),), float64.
    """
    depth = min(sim.shape[1], max(int(r.max()), max(ks)))
    order = _ranked(sim, depth)  # (n, depth) reference indices, most similar first
    rel = ref_labels[order] == labels[:, None]  # (n, depth)
    first = np.where(rel.any(axis=1), rel.argmax(axis=1), depth)  # (n,) first relevant
    found = [int((first < k).sum()) for k in ks]
    return np.array([int(rel[:, 0].sum()), *found, float((_precision_sums(rel, r) / r).sum())])


def _precision_sums(rel: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per row, Σ_{i ≤ R} P(i)·rel(i) over the ranked relevance (n, depth), R per row (n,)."""
    rank = np.arange(1, rel.shape[1] + 1)  # (depth,)
    rel_r = rel & (rank[None, :] <= r[:, None])  # (n, depth): relevant within the first R
    hits = np.cumsum(rel_r, axis=1, dtype=np.int64)  # (n, depth): relevant among the first i
    return np.where(rel_r, hits / rank, 0.0).sum(axis=1)  # (n,)
