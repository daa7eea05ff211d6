"""``folder:PATH``: an ImageFolder tree, with ``train/`` and ``test/`` or split by a fraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from contrastkit.data.tensor_dataset import ImageTensorDataset
from contrastkit.errors import ContrastkitError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _read_tree(
    path: Path, size: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    try:
        tree = ImageFolder(str(path), loader=str)
    except (FileNotFoundError, RuntimeError) as e:
        raise ContrastkitError(f"folder {path}: {e}") from None
    images: list[np.ndarray] = []
    grey = True
    loaded: list[Image.Image] = []
    for file, _ in tree.samples:
        try:
            with Image.open(file) as handle:
                handle.load()
                loaded.append(handle.copy())
        except (UnidentifiedImageError, OSError) as e:
            raise ContrastkitError(f"{file}: not a readable image ({e})") from None
        grey &= loaded[-1].mode in ("L", "1", "I;16")
    target = size or loaded[0].size[::-1]  # (H, W)
    for original in loaded:
        im = original.convert("L" if grey else "RGB")
        if im.size != (target[1], target[0]):
            im = im.resize((target[1], target[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(images))
    y = torch.tensor([t for _, t in tree.samples], dtype=torch.int64)
    return x, y, list(tree.classes)


def load_folder(
    path: Path, split: str, image_size: int | None = None, test_fraction: float = TEST_FRACTION
) -> ImageTensorDataset:
    """Return the ``"train"`` or ``"test"`` part of an image folder, uint8 (N, C, H, W).

    ``PATH/train`` and ``PATH/test`` are used when both exist; otherwise ``PATH/<class>/*`` is
    split stratified with ``test_fraction`` and seed 0. Images are resized to ``image_size``
    (square) or to the first image's size; grey when every file is grey, else RGB.
    """
    if not path.is_dir():
        raise ContrastkitError(f"folder {path} does not exist or is not a directory")
    size = (image_size, image_size) if image_size else None
    if (path / "train").is_dir() and (path / "test").is_dir():
        x, y, classes = _read_tree(path / split, size)
        return ImageTensorDataset(x, y, classes, f"folder:{path}/{split}")
    x, y, classes = _read_tree(path, size)
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y.numpy())
    stratify = y.numpy() if counts.min() >= 2 else None
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=stratify, random_state=SPLIT_SEED
    )
    idx = torch.from_numpy(idx_train if split == "train" else idx_test)
    return ImageTensorDataset(x[idx], y[idx], classes, f"folder:{path}/{split}")
