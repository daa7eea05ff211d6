"""``shards:DIR``: a data set prepared as WebDataset tar shards, read by random access.

A prepared directory (``contrastkit prepare``, :mod:`contrastkit.data.prepare`) holds
``index.json`` and, per split, ``train/shard-000000.tar``… Each tar holds one sample per key:
``{key}.npy`` (the uint8 image, C×H×W, numpy's ``.npy`` format) and ``{key}.cls`` (its label as
text), the WebDataset convention, so ``tar`` and the ``webdataset`` library read them too. Beside
each shard, ``shard-000000.idx.npy`` (int64, (n, 3)) holds every sample's byte offset and length
of its pixels (or PNG bytes) inside the tar, and its label: a reader fetches any sample with one
``os.pread`` — no memory map, so the pages read are the kernel's page cache, not this process's
memory, and the process's memory does not grow with the data set.

:class:`ShardSplit` is one split; :func:`batch_loader` reads lists of indices through a
``DataLoader`` whose workers decode, in the order given (reading is a pure function of the
indices, so the workers change nothing but the speed).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from contrastkit.errors import ContrastkitError

PREFIX = "shards:"
INDEX = "index.json"
FORMAT = "contrastkit-shards"
VERSION = 1
ENCODINGS = ("raw", "png")
EXTENSIONS = {"raw": "npy", "png": "png"}
"""The member that holds a sample's image, per encoding."""


def not_prepared(path: Path, why: str) -> ContrastkitError:
    """The error for a directory that is not a prepared one, saying how to make one."""
    return ContrastkitError(
        f"shards:{path} {why}; make one with `contrastkit prepare SOURCE --out {path}` "
        "(SOURCE: a data set name or folder:PATH)"
    )


def read_index(path: Path) -> dict[str, Any]:
    """The ``index.json`` of the prepared directory ``path``.

    Raises:
        ContrastkitError: if ``path`` is not a prepared directory (saying how to make one) or
            its index is of another format or version.
    """
    file = path / INDEX
    if not path.is_dir():
        raise not_prepared(path, "does not exist")
    if not file.is_file():
        raise not_prepared(path, f"is not a prepared directory (no {INDEX})")
    try:
        index = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ContrastkitError(f"{file} is not JSON ({e}): prepare the directory again") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise not_prepared(path, f"has an {INDEX} of another format")
    if index.get("version") != VERSION:
        raise ContrastkitError(
            f"{file} is of version {index.get('version')}; this contrastkit reads version "
            f"{VERSION}: prepare the directory again"
        )
    return index


def prepared_from(path: str | Path) -> str:
    """The source a prepared directory was written from (``fashion-mnist``, ``folder:PATH``…)."""
    return str(read_index(Path(path)).get("source", ""))


def npy_header_bytes(shape: Sequence[int]) -> int:
    """Length of the ``.npy`` header numpy writes before a uint8 array of ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}
    )
    return len(buf.getvalue())


def decode_png(data: bytes, shape: Sequence[int], where: str) -> np.ndarray:
    """A PNG sample's pixels, uint8 (C, H, W).

    Raises:
        ContrastkitError: naming ``where`` if the bytes are not a PNG of ``shape``.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise ContrastkitError(f"{where}: not a readable PNG ({e})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape != tuple(shape):
        raise ContrastkitError(f"{where}: image of shape {arr.shape}, the index says {shape}")
    return arr


@dataclass(frozen=True)
class _Shard:
    path: Path
    size: int


class ShardSplit:
    """One split of a prepared directory: labels in memory, images read on demand.

    Quacks like :class:`~contrastkit.data.ImageTensorDataset` for everything but ``images``
    (``len``, ``labels``, ``classes``, ``has_labels``, ``image_shape``, ``name``); images come
    from :meth:`read` (a batch of indices) or :func:`batch_loader`.

    Args:
        path: The prepared directory.
        split: ``train`` or ``test``.

    Raises:
        ContrastkitError: if the directory is not prepared, has no such split, or a shard is
            missing or of another size than the index records (naming the shard).
    """

    def __init__(self, path: str | Path, split: str) -> None:
        self.root = Path(path)
        index = read_index(self.root)
        splits = index["splits"]
        if split not in splits:
            raise ContrastkitError(
                f"shards:{self.root} has no split {split!r}; it has {', '.join(splits)}"
            )
        self.split = split
        self.encoding = str(index["encoding"])
        self.classes: list[str] = list(index["classes"])
        c, h, w = (int(v) for v in index["image_shape"])
        self.image_shape = (c, h, w)
        self.mean: list[float] = list(index["mean"])
        self.std: list[float] = list(index["std"])
        self.preset = str(index.get("preset", "simclr"))
        self.name = f"shards:{self.root}/{split}"
        self._shards: list[_Shard] = []
        tables = []
        for entry in splits[split]["shards"]:
            shard = _Shard(self.root / split / entry["file"], int(entry["bytes"]))
            self._check_shard(shard)
            table = self._table(shard, int(entry["count"]))
            tables.append(table)
            self._shards.append(shard)
        table = np.concatenate(tables) if tables else np.zeros((0, 3), np.int64)
        self._shard_of = np.repeat(np.arange(len(tables)), [len(t) for t in tables])
        self._offset, self._length = table[:, 0].copy(), table[:, 1].copy()
        self.labels = torch.from_numpy(table[:, 2].copy())
        if not self.classes and self.has_labels:  # a Dataset without .classes: as in memory
            self.classes = [str(i) for i in range(int(self.labels.max()) + 1)]
        self._files: dict[int, int] = {}  # shard number -> descriptor, per process
        self._pid = os.getpid()

    @staticmethod
    def _check_shard(shard: _Shard) -> None:
        if not shard.path.is_file():
            raise ContrastkitError(f"shard {shard.path} is missing: prepare the directory again")
        size = shard.path.stat().st_size
        if size != shard.size:
            raise ContrastkitError(
                f"shard {shard.path} has {size} bytes, the index records {shard.size} "
                "(truncated or replaced): prepare the directory again"
            )

    @staticmethod
    def _table(shard: _Shard, count: int) -> np.ndarray:
        idx = shard.path.with_suffix(".idx.npy")
        try:
            table = np.load(idx, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ContrastkitError(f"shard index {idx} is unreadable ({e})") from None
        if table.shape != (count, 3) or table.dtype != np.int64:
            raise ContrastkitError(
                f"shard index {idx} holds {table.shape} {table.dtype}, expected ({count}, 3) "
                "int64: prepare the directory again"
            )
        return table

    def __len__(self) -> int:
        """Number of images N."""
        return len(self._offset)

    @property
    def has_labels(self) -> bool:
        """True when every image has a class label."""
        return bool(self.labels.numel()) and bool((self.labels >= 0).all())

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        return len(self.classes)

    @property
    def shard_paths(self) -> list[Path]:
        """The shard files, in sample order."""
        return [s.path for s in self._shards]

    def _fd(self, shard: int) -> int:
        if os.getpid() != self._pid:  # a forked worker opens its own descriptors
            self._files, self._pid = {}, os.getpid()
        fd = self._files.get(shard)
        if fd is None:
            path = self._shards[shard].path
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise ContrastkitError(f"shard {path} cannot be opened: {e.strerror}") from None
            self._files[shard] = fd
        return fd

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a spawned worker) without the open descriptors."""
        return {**self.__dict__, "_files": {}}

    def close(self) -> None:
        """Close the descriptors this process opened."""
        if os.getpid() == self._pid:
            for fd in self._files.values():
                os.close(fd)
        self._files = {}

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError):
            pass

    def read_bytes(self, i: int) -> bytes:
        """The stored bytes of sample ``i`` (raw pixels or PNG), one ``pread``.

        Raises:
            ContrastkitError: naming the shard if it is shorter than the index says.
        """
        shard, offset, length = int(self._shard_of[i]), int(self._offset[i]), int(self._length[i])
        data = os.pread(self._fd(shard), length, offset)
        if len(data) != length:
            raise ContrastkitError(
                f"shard {self._shards[shard].path} is truncated: sample {i} needs bytes "
                f"{offset}..{offset + length}, read {len(data)}; prepare the directory again"
            )
        return data

    def read(self, indices: Tensor | Sequence[int]) -> Tensor:
        """The images at ``indices`` as uint8 (B, C, H, W), in that order."""
        idx = indices.tolist() if isinstance(indices, Tensor) else list(indices)
        shape = self.image_shape
        if self.encoding == "raw":
            buf = b"".join(self.read_bytes(i) for i in idx)
            out = np.frombuffer(buf, np.uint8).reshape((len(idx), *shape))
            return torch.from_numpy(out.copy())
        where = self.name
        arrays = [decode_png(self.read_bytes(i), shape, f"{where}[{i}]") for i in idx]
        return torch.from_numpy(np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8))

    def subset(self, indices: Tensor) -> ShardSplit:
        """The samples at ``indices`` (a view on the same shards)."""
        other = object.__new__(ShardSplit)
        other.__dict__.update(self.__dict__)
        idx = indices.numpy()
        other._shard_of, other._offset = self._shard_of[idx], self._offset[idx]
        other._length, other.labels = self._length[idx], self.labels[indices]
        other._files, other._pid = {}, os.getpid()
        return other


class _Batches(Dataset[tuple[Tensor, Tensor]]):
    """A map-style data set whose item is a batch: ``ds[indices]`` → (uint8 images, labels)."""

    def __init__(self, split: ShardSplit) -> None:
        self.split = split

    def __getitem__(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        return self.split.read(indices), self.split.labels[indices]


class BatchList:
    """A sampler whose batches can be replaced between passes (a persistent loader's epochs)."""

    def __init__(self, batches: Sequence[Tensor] = ()) -> None:
        self.batches = list(batches)

    def __iter__(self) -> Iterator[Tensor]:
        """The batches of this pass."""
        return iter(self.batches)

    def __len__(self) -> int:
        """Number of batches."""
        return len(self.batches)


def batch_loader(
    split: ShardSplit,
    batches: Sequence[Tensor] | BatchList,
    *,
    workers: int,
    pin_memory: bool = False,
    persistent: bool = False,
) -> Iterable[tuple[Tensor, Tensor]]:
    """The images and labels of each batch of indices, in order, read by ``workers`` processes.

    A ``DataLoader`` with the batches as its sampler (``batch_size=None``): each worker reads
    whole batches, and the loader returns them in the sampler's order whatever the workers'
    speed, so the result is that of ``workers=0`` (reading in this process).

    Args:
        split: The shards to read.
        batches: Index tensors, one per batch.
        workers: Reading processes (0: this one).
        pin_memory: Page-lock the batches (for a faster copy to a CUDA device).
        persistent: Keep the workers between passes (``batches`` then is a :class:`BatchList`
            whose batches change between them: a training run's epochs).
    """
    if workers < 0:
        raise ContrastkitError(f"workers must be >= 0, got {workers}")
    if not isinstance(batches, BatchList) and not batches:
        return []
    return DataLoader(
        _Batches(split),
        sampler=batches if isinstance(batches, BatchList) else list(batches),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        persistent_workers=persistent and workers > 0,
        # its own generator: a loader's pass draws a worker seed from it, which would
        # otherwise advance torch's global generator (a checkpoint's rng) per epoch
        generator=torch.Generator().manual_seed(0),
    )


def sequential_batches(n: int, batch_size: int) -> list[Tensor]:
    """``0..n-1`` in consecutive batches of ``batch_size`` (the last one shorter)."""
    return list(torch.arange(n).split(batch_size))


def iter_images(
    split: Any, batch_size: int, *, workers: int = 0, pin_memory: bool = False
) -> Iterator[Tensor]:
    """Every image of a split in order, as uint8 batches (B, C, H, W) of ``batch_size``.

    ``split`` is an in-memory :class:`~contrastkit.data.ImageTensorDataset` (sliced) or a
    :class:`ShardSplit` (streamed through :func:`batch_loader`).
    """
    if isinstance(split, ShardSplit):
        loader = batch_loader(
            split,
            sequential_batches(len(split), batch_size),
            workers=workers,
            pin_memory=pin_memory,
        )
        for images, _ in loader:
            yield images
        return
    images = split.images
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


def take(split: Any, indices: Tensor | Sequence[int]) -> Tensor:
    """The uint8 images (B, C, H, W) at ``indices`` of an in-memory split or a :class:`ShardSplit`."""
    if isinstance(split, ShardSplit):
        return split.read(indices)
    idx = indices if isinstance(indices, Tensor) else torch.as_tensor(list(indices))
    images: Tensor = split.images[idx]
    return images
