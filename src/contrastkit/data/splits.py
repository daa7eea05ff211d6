"""The validation split: a stratified, seeded carve-out of a training split, as index arrays.

:func:`stratified_split` is a pure function of (labels, fraction, seed): it returns positions,
never images, so it serves in-memory tensors (``ImageTensorDataset.subset``) and any loader
that reads by index alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import ContrastkitError

if TYPE_CHECKING:
    from contrastkit.data.registry import Split

VAL_SEED = 0
"""The seed of every run's validation split: one held-out set for all seeds and methods, so
their validation figures compare the same images (the training seed varies the model only)."""


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split positions 0..N−1 into (train, val), each class giving ``fraction`` of its images.

    Class c with n_c images gives round(fraction · n_c) of them to validation (at least 1 when
    that rounds to 0 and the class has 2 or more; never all: one stays in training), chosen by
    a permutation of the class's positions seeded with ``(seed, c)``. The result depends only
    on the arguments: not on the order in which classes appear, nor on global RNG state.

    Args:
        labels: Class of each image, integers >= 0. Shape: (N,).
        fraction: Share of each class held out, 0 <= fraction < 1 (0: no validation).
        seed: Seed of the choice, >= 0.

    Returns:
        ``(train, val)`` positions, each sorted ascending, int64; together a partition of
        0..N−1. Shapes: (N − V,), (V,).

    Raises:
        ContrastkitError: naming the argument, on labels not 1-D integers >= 0, a fraction
            outside [0, 1) or a negative seed.
    """
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point():
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ContrastkitError(f"labels must be a 1-D integer tensor (N,), got {got}")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ContrastkitError(f"fraction must be a number in [0, 1), got {fraction!r}")
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise ContrastkitError(f"fraction must be a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ContrastkitError(f"seed must be an integer >= 0, got {seed!r}")
    y = labels.cpu().numpy()
    if y.size and int(y.min()) < 0:
        raise ContrastkitError(
            f"labels must be classes >= 0 (a validation split needs labelled images), "
            f"got {int(y.min())}"
        )
    val: list[np.ndarray] = []
    if fraction > 0:
        for c in np.unique(y):
            where = np.flatnonzero(y == c)  # (n_c,) ascending
            take = min(len(where) - 1, max(1, round(fraction * len(where))))
            rng = np.random.default_rng([seed, int(c)])
            val.append(where[rng.permutation(len(where))[:take]])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(y), dtype=bool)
    keep[val_idx] = False
    return torch.from_numpy(np.flatnonzero(keep)).long(), torch.from_numpy(val_idx).long()


def carve_positions(train: Split, fraction: float) -> tuple[Tensor, Tensor]:
    """Positions in ``train`` of the images left for training and of the validation images.

    :func:`stratified_split` of ``train``'s labels with seed :data:`VAL_SEED`; with
    ``fraction`` 0 every position is left for training and none held out.

    Returns:
        ``(keep, val)``, each sorted ascending, int64. Shapes: (N − V,), (V,).

    Raises:
        ContrastkitError: if ``fraction`` > 0 and ``train`` has unlabelled images, or on a
            ``fraction`` outside [0, 1).
    """
    if fraction == 0:
        return torch.arange(len(train)), torch.zeros(0, dtype=torch.long)
    if not train.has_labels:
        raise ContrastkitError(
            f"--val-fraction (val_fraction) {fraction:g} needs a labelled training split, "
            f"but {train.name} has unlabelled images; use --val-fraction 0"
        )
    return stratified_split(train.labels, fraction, VAL_SEED)


def carve_val(train: Split, fraction: float) -> tuple[Split, Split | None]:
    """``train`` without its validation images, and those (:func:`carve_positions`).

    With ``fraction`` 0, ``train`` itself is returned, untouched, and no validation set.

    Raises:
        ContrastkitError: if ``fraction`` > 0 and ``train`` has unlabelled images.
    """
    if fraction == 0:
        return train, None
    keep, val = carve_positions(train, fraction)
    return train.subset(keep), train.subset(val)
