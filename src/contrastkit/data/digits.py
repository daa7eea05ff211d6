"""scikit-learn's 8×8 digits: 1,797 images, a fixed stratified 80/20 split (seed 0)."""

from __future__ import annotations

import torch

from contrastkit.data.tensor_dataset import ImageTensorDataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits_split(split: str) -> ImageTensorDataset:
    """Return the ``"train"`` (1,437 images) or ``"test"`` (360 images) part of digits.

    Pixel values 0–16 are scaled to 0–255 (uint8, shape (N, 1, 8, 8)). The split is
    ``train_test_split(test_size=0.2, stratify=y, random_state=0)``, the same on every machine.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(bunch.target).to(torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(),
        test_size=TEST_FRACTION,
        stratify=y.numpy(),
        random_state=SPLIT_SEED,
    )
    idx = torch.from_numpy(idx_train if split == "train" else idx_test)
    return ImageTensorDataset(x[idx], y[idx], [str(d) for d in range(10)], f"digits/{split}")
