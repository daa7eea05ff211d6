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
pytorch-metric-learning's ``AccuracyCalculator`` does. The similarity is computed for a chunk
of queries at a time: memory O(chunk · M), never N × M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

RECALL_KS = (1, 5, 10)
"""The k of ``recall_at_k`` that ``contrastkit retrieval`` reports."""

_CHUNK_ELEMENTS = 2**24
"""Similarities held at once (64 MB of float32): the query chunk is this over M."""


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
        ValueError: on tensors of the wrong shape, ``ks`` below 1, or ``exclude_self`` with
            different query and reference sets.
    """
    _check(query, query_labels, reference, reference_labels, ks, exclude_self)
    ref = F.normalize(reference.float(), dim=1)  # (M, F)
    queries = F.normalize(query.float().to(ref.device), dim=1)  # (N, F)
    ref_labels = reference_labels.to(ref.device).long()
    q_labels = query_labels.to(ref.device).long()
    m = ref.shape[0]
    # R per query: references of its label (minus itself when leaving one out)
    classes, counts = torch.unique(ref_labels, return_counts=True)
    pos = torch.searchsorted(classes, q_labels).clamp(max=len(classes) - 1)
    r_all = torch.where(classes[pos] == q_labels, counts[pos], 0) - int(exclude_self)  # (N,)
    step = chunk or max(1, _CHUNK_ELEMENTS // m)
    hits_at_1, found, ap_sum = 0, dict.fromkeys(ks, 0), 0.0
    for start in range(0, queries.shape[0], step):
        q, r = queries[start : start + step], r_all[start : start + step]  # (n, F), (n,)
        keep = r > 0
        if not keep.any():
            continue
        q, r, labels = q[keep], r[keep], q_labels[start : start + step][keep]
        sim = q @ ref.T  # (n, M)
        if exclude_self:
            rows = torch.arange(start, start + keep.shape[0], device=ref.device)[keep]
            sim[torch.arange(len(rows)), rows] = -torch.inf
        depth = min(m, max(int(r.max()), max(ks)))
        top = sim.topk(depth, dim=1).indices  # (n, depth), most similar first
        rel = ref_labels[top] == labels[:, None]  # (n, depth)
        hits_at_1 += int(rel[:, 0].sum())
        for k in ks:
            found[k] += int(rel[:, :k].any(dim=1).sum())
        rank = torch.arange(1, depth + 1, device=ref.device)  # (depth,)
        within_r = rank[None, :] <= r[:, None]  # (n, depth)
        rel_r = rel & within_r
        precision = rel_r.cumsum(dim=1).double() / rank  # P(i) over the first R
        ap_sum += float(((precision * rel_r).sum(dim=1) / r).sum())
    n = int((r_all > 0).sum())
    denom = n if n else float("nan")  # no query with a relevant reference: NaN, not 0
    return RetrievalMetrics(
        precision_at_1=hits_at_1 / denom,
        recall_at_k={k: found[k] / denom for k in ks},
        map_at_r=ap_sum / denom,
        n_queries=n,
        lone_queries=int((r_all <= 0).sum()),
    )
