"""CIFAR-10/100 from the pickled batches of torchvision's layout (``cifar-10-batches-py/``).

The batches are pickles; they are read with a restricted unpickler that builds dicts, lists,
strings, numbers and plain NumPy arrays and nothing else, so a crafted file under
``--data-root`` cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

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


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR batch never holds (``what`` names it)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _plain_dtype(*args: Any) -> np.dtype[Any]:
    """``numpy.dtype(*args)``, refusing dtypes that hold Python objects."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused("an array of Python objects")
    return dtype


_NDARRAY = object()
"""Stands for ``numpy.ndarray``, which a pickle names only as the class to reconstruct: calling
the real class could build an object array over arbitrary memory."""


def _empty_array(subtype: object, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` for plain arrays: the array that BUILD fills."""
    if subtype is not _NDARRAY:
        raise _Refused(f"a {type(subtype).__name__} rebuilt as an array")
    return np.empty(shape, _plain_dtype(dtype))


def _from_buffer(buffer: object, dtype: Any, shape: tuple[int, ...], order: str) -> np.ndarray:
    """``numpy.core.numeric._frombuffer`` (pickle protocol 5) for plain arrays."""
    if not isinstance(buffer, bytes | bytearray):
        raise _Refused(f"an array over a {type(buffer).__name__}")
    flat = np.frombuffer(buffer, _plain_dtype(dtype))
    return flat.reshape(shape, order="F" if order == "F" else "C")


def _latin1(text: object, encoding: object) -> bytes:
    """``_codecs.encode``, as protocol-2 pickles of Python 3 spell bytes (latin-1 text)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode of a {type(text).__name__} to {encoding!r}")
    return text.encode("latin1")


_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,  # NumPy 1 (the official files)
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,  # NumPy 2
    ("numpy.core.numeric", "_frombuffer"): _from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _from_buffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1,
}


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR batch holds: dicts, lists, str, bytes, numbers, NumPy arrays.

    Containers and scalars need no global; every global a pickle names comes through
    :meth:`find_class`, which knows nothing but the stand-ins for NumPy's array reconstruction
    in ``_GLOBALS``. Arrays of Python objects are refused when their dtype is built.
    """

    def find_class(self, module: str, name: str) -> Any:
        """The stand-in for ``module.name``, or :class:`_Refused` for anything else."""
        try:
            return _GLOBALS[module, name]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _unpickle(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise ContrastkitError(f"missing CIFAR file {path}")
    try:
        with path.open("rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except _Refused as e:
        raise ContrastkitError(
            f"{path}: refused: it holds {e.what}, not only the lists, strings, numbers and "
            "NumPy arrays of a CIFAR batch (unpickling it could run code)"
        ) from None
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
