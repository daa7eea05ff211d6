"""The data-set registry: a name (``digits``, ``cifar10``, ``folder:PATH``…) → in-memory splits.

``shards:DIR`` (a directory written by ``contrastkit prepare``) gives a
:class:`~contrastkit.data.shards.ShardSplit` instead: labels in memory, images read on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from contrastkit.data.shards import PREFIX as SHARDS_PREFIX
from contrastkit.data.shards import ShardSplit, read_index
from contrastkit.data.tensor_dataset import ImageTensorDataset, as_image_dataset
from contrastkit.errors import ContrastkitError

Split = ImageTensorDataset | ShardSplit
"""A loaded split: in memory, or prepared shards read on demand."""

Loader = Callable[[str, Path | None, bool, int | None], Split]


@dataclass(frozen=True)
class DatasetInfo:
    """How to load one registered data set and which augmentation preset suits it.

    Attributes:
        loader: ``(split, root, download, image_size) -> ImageTensorDataset``.
        splits: The split names the loader accepts.
        preset: Name of the augmentation preset (see :mod:`contrastkit.data.augment`).
    """

    loader: Loader
    splits: tuple[str, ...]
    preset: str


def _digits(split: str, root: Path | None, download: bool, size: int | None) -> ImageTensorDataset:
    from contrastkit.data.digits import load_digits_split

    return load_digits_split(split)


def _fashion(split: str, root: Path | None, download: bool, size: int | None) -> ImageTensorDataset:
    from contrastkit.data.idx import load_fashion_mnist

    return load_fashion_mnist(split, root, download)


def _cifar(name: str) -> Loader:
    def load(split: str, root: Path | None, download: bool, size: int | None) -> ImageTensorDataset:
        from contrastkit.data.cifar import load_cifar

        return load_cifar(name, split, root, download)

    return load


def _stl10(split: str, root: Path | None, download: bool, size: int | None) -> ImageTensorDataset:
    from contrastkit.data.stl10 import load_stl10

    return load_stl10(split, root, download)


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(_digits, ("train", "test"), "digits"),
    "fashion-mnist": DatasetInfo(_fashion, ("train", "test"), "fashion-mnist"),
    "cifar10": DatasetInfo(_cifar("cifar10"), ("train", "test"), "simclr"),
    "cifar100": DatasetInfo(_cifar("cifar100"), ("train", "test"), "simclr"),
    "stl10": DatasetInfo(_stl10, ("train", "test", "unlabeled", "train+unlabeled"), "simclr"),
}
"""Registered data sets; ``folder:PATH`` is accepted besides these names."""

FOLDER_PREFIX = "folder:"


def dataset_names() -> list[str]:
    """Return every accepted data-set name (``folder:PATH`` stands for any folder)."""
    return [*DATASETS, "folder:PATH", "shards:DIR"]


def dataset_info(name: str) -> DatasetInfo:
    """Return the registry entry of ``name`` (``folder:PATH`` and ``shards:DIR`` included).

    Raises:
        ContrastkitError: for an unknown name, listing the known ones; for ``shards:DIR``
            that is not a prepared directory, saying how to make one.
    """
    if name.startswith(SHARDS_PREFIX):
        root = Path(name[len(SHARDS_PREFIX) :])
        if not str(root):
            raise ContrastkitError("shards: needs a directory, e.g. shards:/data/my-shards")
        index = read_index(root)

        def shards(split: str, _r: Path | None, _d: bool, _s: int | None) -> Split:
            return ShardSplit(root, split)

        return DatasetInfo(shards, tuple(index["splits"]), str(index.get("preset", "simclr")))
    if name.startswith(FOLDER_PREFIX):
        path = Path(name[len(FOLDER_PREFIX) :])
        if not str(path):
            raise ContrastkitError("folder: needs a path, e.g. folder:/data/my-images")

        def load(split: str, root: Path | None, download: bool, size: int | None) -> Split:
            from contrastkit.data.folder import load_folder

            return load_folder(path, split, size)

        return DatasetInfo(load, ("train", "test"), "simclr")
    if name not in DATASETS:
        raise ContrastkitError(
            f"unknown data set {name!r}; choose one of {', '.join(dataset_names())}"
        )
    return DATASETS[name]


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> Split:
    """Load split ``split`` of the registered data set ``name`` into memory.

    Args:
        name: A registry name (see :func:`dataset_names`) or ``folder:PATH``.
        split: ``"train"``, ``"test"`` (STL-10 also ``"unlabeled"``, ``"train+unlabeled"``).
        root: Directory of the files (``--data-root``); each data set has its default.
        download: Fetch the files with torchvision first (needs internet).
        image_size: Resize folder images to this square size (folder only).

    Returns:
        The images as uint8 (N, C, H, W) with int64 labels (N,), -1 where unlabelled
        (``shards:DIR``: a :class:`~contrastkit.data.shards.ShardSplit`).

    Raises:
        ContrastkitError: on an unknown name or split, missing or corrupt files.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ContrastkitError(
            f"data set {name!r} has no split {split!r}; choose one of {', '.join(info.splits)}"
        )
    return info.loader(split, Path(root) if root else None, download, image_size)


def resolve_dataset(
    data: str | Dataset[tuple[Tensor, int]],
    split: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> Split:
    """Return ``data``: load a registry name, or materialise a ``Dataset`` object in memory."""
    if isinstance(data, str):
        return load_dataset(data, split, root=root, download=download, image_size=image_size)
    return as_image_dataset(data, name=f"dataset ({split})")
