"""CIFAR-10/100 from the pickled batches of torchvision's layout (``cifar-10-batches-py/``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from contrastkit.data.tensor_dataset import ImageTensorDataset
from contrastkit.errors import ContrastkitError

LAYOUT = {
    # name: (directory, train files, test files, meta file, label key, class-name key)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}


def _unpickle(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise ContrastkitError(f"missing CIFAR file {path}")
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # a truncated or foreign file raises many types
        raise ContrastkitError(f"{path}: corrupt CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ContrastkitError(f"{path}: corrupt CIFAR batch (not a dict)")
    return obj


def load_cifar(name: str, split: str, root: Path | None, download: bool) -> ImageTensorDataset:
    """Return CIFAR-10 or CIFAR-100 ``"train"``/``"test"`` images, uint8 (N, 3, 32, 32).

    Reads the batches itself (torchvision's class would reject files whose MD5 differs);
    ``download`` fetches them with torchvision first.
    """
    root = root or Path("data")
    folder, train_files, test_files, meta_file, label_key, names_key = LAYOUT[name]
    d = root / folder
    if download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        cls(str(root), train=split == "train", download=True)
    if not d.is_dir():
        raise ContrastkitError(
            f"{name}: directory {d} not found; pass --data-root DIR containing {folder}/ "
            "or add --download (needs internet)"
        )
    xs, ys = [], []
    for fname in train_files if split == "train" else test_files:
        batch = _unpickle(d / fname)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[label_key], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise ContrastkitError(f"{d / fname}: corrupt CIFAR batch ({e})") from None
        if len(labels) != len(data):
            raise ContrastkitError(f"{d / fname}: {len(data)} images but {len(labels)} labels")
        xs.append(data)
        ys.append(labels)
    meta_path = d / meta_file
    classes = None
    if meta_path.is_file():
        names = _unpickle(meta_path).get(names_key)
        classes = [str(c) for c in names] if isinstance(names, list) else None
    return ImageTensorDataset(
        torch.from_numpy(np.concatenate(xs)),
        torch.from_numpy(np.concatenate(ys)),
        classes,
        f"{name}/{split}",
    )
