"""Weighted k-nearest-neighbour classification on cosine similarity (Wu et al., 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    *,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    r"""Predict each query's class by a vote of its k most cosine-similar training samples.

    Neighbour j of query i votes for its class with weight :math:`e^{s_{ij}/t}`, s the cosine
    similarity; the class with the largest total wins (ties: the lowest index).

    Args:
        train_features: Shape: (M, F).
        train_labels: Integer classes. Shape: (M,).
        query_features: Shape: (N, F).
        num_classes: Number of classes.
        k: Neighbours (capped at M).
        t: Temperature of the vote weights.
        chunk: Queries per similarity block (memory O(chunk · M)).

    Returns:
        Predicted classes. Shape: (N,), int64.
    """
    bank = F.normalize(train_features.float(), dim=1)  # (M, F)
    q_all = F.normalize(query_features.float(), dim=1)  # (N, F)
    k = min(k, bank.shape[0])
    labels = train_labels.to(bank.device)
    preds = []
    for start in range(0, q_all.shape[0], chunk):
        q = q_all[start : start + chunk]
        sim = q @ bank.T  # (n, M)
        top_sim, top_idx = sim.topk(k, dim=1)  # (n, k)
        weights = (top_sim / t).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, labels[top_idx], weights)  # (n, num_classes)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
) -> float:
    """Fraction of test samples whose :func:`knn_predict` class is right."""
    pred = knn_predict(
        train_features, train_labels, test_features, num_classes=num_classes, k=k, t=t
    )
    return float((pred.cpu() == test_labels.cpu()).float().mean())
