"""``folder:PATH``: an ImageFolder tree, with ``train/`` and ``test/`` or split by a fraction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contrastkit.data.tensor_dataset import ImageTensorDataset
from contrastkit.errors import ContrastkitError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


class BadImage(ContrastkitError):
    """A file of the folder that is not a readable image (its path in ``file``)."""

    def __init__(self, file: str, reason: object) -> None:
        super().__init__(f"{file}: not a readable image ({reason})")
        self.file = file


@dataclass
class FolderSplit:
    """The files of one split of a folder and how to decode them.

    Attributes:
        files: Image paths, in ImageFolder order.
        labels: Their class indices.
        classes: Class names (sub-directory names).
        grey: Decode as grey (every file of the tree is grey) or RGB.
        target: The (H, W) every image is resized to.
    """

    files: list[str]
    labels: list[int]
    classes: list[str]
    grey: bool
    target: tuple[int, int]


def _list_tree(path: Path) -> tuple[list[str], list[int], list[str]]:
    from torchvision.datasets import ImageFolder

    try:
        tree = ImageFolder(str(path), loader=str)
    except (FileNotFoundError, RuntimeError) as e:
        raise ContrastkitError(f"folder {path}: {e}") from None
    return [f for f, _ in tree.samples], [t for _, t in tree.samples], list(tree.classes)


def list_folder(
    path: Path,
    split: str,
    image_size: int | None = None,
    test_fraction: float = TEST_FRACTION,
    bad: list[str] | None = None,
) -> FolderSplit:
    """The files of split ``split`` of the folder ``path`` and their format (:func:`load_folder`).

    The format (:func:`image_format`) is that of the split's tree (``PATH/train``) or of the
    whole folder when it is split by ``test_fraction``; ``bad`` collects unreadable files
    instead of raising.
    """
    if not path.is_dir():
        raise ContrastkitError(f"folder {path} does not exist or is not a directory")
    if (path / "train").is_dir() and (path / "test").is_dir():
        files, labels, classes = _list_tree(path / split)
        grey, target = image_format(files, image_size, bad)
        return FolderSplit(files, labels, classes, grey, target)
    files, labels, classes = _list_tree(path)
    grey, target = image_format(files, image_size, bad)
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    counts = np.bincount(y)
    stratify = y if counts.min() >= 2 else None
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=test_fraction, stratify=stratify, random_state=SPLIT_SEED
    )
    idx = idx_train if split == "train" else idx_test
    return FolderSplit([files[i] for i in idx], [labels[i] for i in idx], classes, grey, target)


def image_format(
    files: list[str], size: int | None, bad: list[str] | None = None
) -> tuple[bool, tuple[int, int]]:
    """Grey (every file grey) or RGB, and the (H, W) to resize to: ``size`` or the first file's.

    Reads only the files' headers. With ``bad`` (a list), unreadable files are appended to it
    instead of raising.

    Raises:
        BadImage: naming the first file that is not an image (without ``bad``).
    """
    from PIL import Image, UnidentifiedImageError

    grey = True
    first: tuple[int, int] | None = None
    for file in files:
        try:
            with Image.open(file) as handle:
                mode, (w, h) = handle.mode, handle.size
        except (UnidentifiedImageError, OSError) as e:
            if bad is None:
                raise BadImage(file, e) from None
            bad.append(file)
            continue
        grey &= mode in ("L", "1", "I;16")
        first = first or (h, w)
    if first is None:
        raise ContrastkitError("the folder holds no readable image")
    return grey, (size, size) if size else first


def decode_image(file: str, grey: bool, target: tuple[int, int]) -> np.ndarray:
    """The image in ``file`` as uint8 (C, H, W): grey or RGB, resized bilinearly to ``target``.

    Raises:
        BadImage: naming the file if it is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as handle:
            handle.load()
            im = handle.convert("L" if grey else "RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise BadImage(file, e) from None
    if im.size != (target[1], target[0]):
        im = im.resize((target[1], target[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_folder(
    path: Path, split: str, image_size: int | None = None, test_fraction: float = TEST_FRACTION
) -> ImageTensorDataset:
    """Return the ``"train"`` or ``"test"`` part of an image folder, uint8 (N, C, H, W).

    ``PATH/train`` and ``PATH/test`` are used when both exist; otherwise ``PATH/<class>/*`` is
    split stratified with ``test_fraction`` and seed 0. Images are resized to ``image_size``
    (square) or to the first image's size; grey when every file is grey, else RGB.
    """
    part = list_folder(path, split, image_size, test_fraction)
    x = torch.from_numpy(np.stack([decode_image(f, part.grey, part.target) for f in part.files]))
    y = torch.tensor(part.labels, dtype=torch.int64)
    return ImageTensorDataset(x, y, part.classes, f"folder:{path}/{split}")
