"""Raw-pixel baselines on the same split: scikit-learn logistic regression and kNN, retrieval."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastkit.data.registry import Split
from contrastkit.data.shards import take
from contrastkit.data.splits import carve_val
from contrastkit.train.retrieval import retrieval_metrics

MAX_TRAIN = 20_000
"""Larger training sets are subsampled (seed 0) to keep the classifiers to about a minute."""

RETRIEVAL_BYTES = 2**32
"""The pixel retrieval holds the reference's and the queries' float32 pixel vectors twice at
its peak; a split over this budget (4 GiB) skips it, with the reason in ``baselines.json``."""


def raw_pixel_baselines(
    train: Split, test: Split, *, k: int = 5, val_fraction: float = 0.0
) -> dict[str, Any]:
    """Test accuracy of logistic regression and k-NN (k = 5, Euclidean), and retrieval, on pixels.

    Every baseline trains on (or ranks against) the training split without its validation
    images (``val_fraction``, carved as pretraining carves it: the images every method's
    kNN, probe and ``retrieval.json`` use). The classifiers on pixels scaled to 0–1 of at
    most :data:`MAX_TRAIN` of them: ``LogisticRegression(max_iter=1000)`` (L2, C = 1, lbfgs)
    and ``KNeighborsClassifier(k)``. The retrieval ranks the test images' pixel vectors against
    all of them by cosine similarity (:func:`~contrastkit.train.retrieval.retrieval_metrics`),
    in memory: (M + N) × pixels float32, twice at the peak; over :data:`RETRIEVAL_BYTES` it is
    skipped and ``"retrieval_skipped"`` says why.

    Returns:
        ``{"logreg": acc, "knn": acc, "n_train": M, "n_test": N, "knn_k": k, "retrieval":
        {"precision_at_1", "map_at_r", "n_queries", "lone_queries", "n_reference"}}``
        (``"retrieval_skipped": reason`` in place of ``"retrieval"`` over the budget).

    Raises:
        ValueError: if ``val_fraction`` is not in [0, 1).
    """
    if isinstance(val_fraction, bool) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    train, _ = carve_val(train, val_fraction)
    keep = np.arange(len(train))
    if len(train) > MAX_TRAIN:
        keep = np.random.default_rng(0).permutation(len(train))[:MAX_TRAIN]
    xtr = take(train, keep.tolist()).reshape(len(keep), -1).numpy().astype(np.float64) / 255.0
    ytr = train.labels.numpy()[keep]
    test_pixels = take(test, range(len(test))).reshape(len(test), -1)  # (N, C·H·W) uint8
    xte = test_pixels.numpy().astype(np.float64) / 255.0
    yte = test.labels.numpy()
    logreg = LogisticRegression(max_iter=1000).fit(xtr, ytr)
    knn = KNeighborsClassifier(n_neighbors=k).fit(xtr, ytr)
    out: dict[str, Any] = {
        "logreg": float((logreg.predict(xte) == yte).mean()),
        "knn": float((knn.predict(xte) == yte).mean()),
        "n_train": len(xtr),
        "n_test": len(xte),
        "knn_k": k,
    }
    need = 2 * (len(train) + len(test)) * xte.shape[1] * 4
    if need > RETRIEVAL_BYTES:
        out["retrieval_skipped"] = (
            f"{len(train)} + {len(test)} pixel vectors of {xte.shape[1]} values need "
            f"{need / 2**30:.1f} GiB, over the {RETRIEVAL_BYTES / 2**30:.0f} GiB budget"
        )
        return out
    found = retrieval_metrics(test_pixels.float(), test.labels, _pixels(train), train.labels)
    out["retrieval"] = {
        "precision_at_1": found.precision_at_1,
        "map_at_r": found.map_at_r,
        "n_queries": found.n_queries,
        "lone_queries": found.lone_queries,
        "n_reference": len(train),
    }
    return out


def _pixels(split: Split, chunk: int = 4096) -> Tensor:
    """Every image of ``split`` as a float32 row of its pixels, read a chunk at a time.

    Shape: (N, C·H·W).
    """
    rows = torch.empty(len(split), int(np.prod(split.image_shape)))
    for start in range(0, len(split), chunk):
        stop = min(start + chunk, len(split))
        rows[start:stop] = take(split, range(start, stop)).reshape(stop - start, -1)
    return rows
