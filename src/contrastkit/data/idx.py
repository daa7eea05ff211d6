"""Fashion-MNIST from its IDX ``.gz`` files (Debian's ``dataset-fashion-mnist`` or a download)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from contrastkit.data.tensor_dataset import ImageTensorDataset
from contrastkit.errors import ContrastkitError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four files."""

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip-compressed IDX file of unsigned bytes into an array of its stated shape.

    Raises:
        ContrastkitError: if the file is not gzip, has a wrong magic number or is truncated.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ContrastkitError(f"{path}: not a readable gzip IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ContrastkitError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ContrastkitError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ContrastkitError(
            f"{path}: corrupt IDX file: header says shape {shape} ({expected} bytes), "
            f"found {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_fashion_dir(root: Path | None) -> Path:
    """Return the directory holding the four IDX files: ``root``, its torchvision layout, or Debian's.

    Raises:
        ContrastkitError: with the ways to get the files when none is found.
    """
    candidates = [] if root is None else [root, root / "FashionMNIST" / "raw"]
    if root is None:
        candidates.append(DEBIAN_DIR)
    for d in candidates:
        if all((d / f).is_file() for pair in FILES.values() for f in pair):
            return d
    where = ", ".join(str(c) for c in candidates)
    raise ContrastkitError(
        f"Fashion-MNIST IDX files not found (looked in {where}). Get them with "
        "'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or pass --data-root DIR with "
        "the four *-ubyte.gz files, or add --download (needs internet)"
    )


def load_fashion_mnist(split: str, root: Path | None, download: bool) -> ImageTensorDataset:
    """Return Fashion-MNIST's ``"train"`` (60,000) or ``"test"`` (10,000) images, (N, 1, 28, 28)."""
    if download:
        from torchvision.datasets import FashionMNIST

        root = root or Path("data")
        FashionMNIST(str(root), train=split == "train", download=True)
    d = find_fashion_dir(root)
    images_file, labels_file = FILES[split]
    x = read_idx(d / images_file)
    y = read_idx(d / labels_file)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ContrastkitError(
            f"{d}: images {x.shape} and labels {y.shape} do not match (N, 28, 28) and (N,)"
        )
    return ImageTensorDataset(
        torch.from_numpy(x.copy()).unsqueeze(1),
        torch.from_numpy(y.astype(np.int64)),
        CLASSES,
        f"fashion-mnist/{split}",
    )
