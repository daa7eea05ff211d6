"""Raw-pixel baselines on the same split: scikit-learn logistic regression and kNN."""

from __future__ import annotations

from typing import Any

import numpy as np

from contrastkit.data.registry import Split
from contrastkit.data.shards import take

MAX_TRAIN = 20_000
"""Larger training sets are subsampled (seed 0) to keep the baselines to about a minute."""


def raw_pixel_baselines(train: Split, test: Split, *, k: int = 5) -> dict[str, Any]:
    """Test accuracy of logistic regression and k-NN (k = 5, Euclidean) on standardised pixels.

    Both on pixels scaled to 0–1: ``LogisticRegression(max_iter=1000)`` (L2, C = 1, lbfgs) and
    ``KNeighborsClassifier(k)``.

    Returns:
        ``{"logreg": acc, "knn": acc, "n_train": M, "n_test": N, "knn_k": k}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    keep = np.arange(len(train))
    if len(train) > MAX_TRAIN:
        keep = np.random.default_rng(0).permutation(len(train))[:MAX_TRAIN]
    xtr = take(train, keep.tolist()).reshape(len(keep), -1).numpy().astype(np.float64) / 255.0
    ytr = train.labels.numpy()[keep]
    xte = take(test, range(len(test))).reshape(len(test), -1).numpy().astype(np.float64) / 255.0
    yte = test.labels.numpy()
    logreg = LogisticRegression(max_iter=1000).fit(xtr, ytr)
    knn = KNeighborsClassifier(n_neighbors=k).fit(xtr, ytr)
    return {
        "logreg": float((logreg.predict(xte) == yte).mean()),
        "knn": float((knn.predict(xte) == yte).mean()),
        "n_train": len(xtr),
        "n_test": len(xte),
        "knn_k": k,
    }
