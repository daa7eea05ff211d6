"""STL-10 from its binary files (``stl10_binary/``): train, test and the 100,000 unlabelled images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from contrastkit.data.tensor_dataset import UNLABELLED, ImageTensorDataset
from contrastkit.errors import ContrastkitError

FOLDER = "stl10_binary"
SIZE = 96


def _read_images(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ContrastkitError(f"missing STL-10 file {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    per_image = 3 * SIZE * SIZE
    if raw.size % per_image:
        raise ContrastkitError(f"{path}: corrupt STL-10 file ({raw.size} bytes)")
    # stored column-major per channel: (N, 3, W, H) → (N, 3, H, W)
    return raw.reshape(-1, 3, SIZE, SIZE).transpose(0, 1, 3, 2)


def _read_labels(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ContrastkitError(f"missing STL-10 file {path}")
    return np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1


def load_stl10(split: str, root: Path | None, download: bool) -> ImageTensorDataset:
    """Return STL-10 ``"train"``, ``"test"``, ``"unlabeled"`` or ``"train+unlabeled"`` (N, 3, 96, 96)."""
    root = root or Path("data")
    if download:
        from torchvision.datasets import STL10

        STL10(str(root), split="train", download=True)
    d = root / FOLDER
    if not d.is_dir():
        raise ContrastkitError(
            f"stl10: directory {d} not found; pass --data-root DIR containing {FOLDER}/ "
            "or add --download (needs internet, 2.6 GB)"
        )
    parts = split.split("+")
    xs, ys = [], []
    for part in parts:
        x = _read_images(d / f"{part}_X.bin")
        if part == "unlabeled":
            y = np.full(len(x), UNLABELLED, dtype=np.int64)
        else:
            y = _read_labels(d / f"{part}_y.bin")
        if len(y) != len(x):
            raise ContrastkitError(f"{d}: {part} has {len(x)} images but {len(y)} labels")
        xs.append(x)
        ys.append(y)
    names_file = d / "class_names.txt"
    classes = names_file.read_text().split() if names_file.is_file() else None
    return ImageTensorDataset(
        torch.from_numpy(np.ascontiguousarray(np.concatenate(xs))),
        torch.from_numpy(np.concatenate(ys)),
        classes,
        f"stl10/{split}",
    )
