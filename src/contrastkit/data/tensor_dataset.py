"""In-memory image data set: one uint8 tensor of images and one int64 tensor of labels."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastkit.errors import ContrastkitError

UNLABELLED = -1
"""The label of an image without one (STL-10's unlabeled split, a folder without classes)."""


class ImageTensorDataset(Dataset[tuple[Tensor, int]]):
    """Images held in memory as ``uint8`` ``(N, C, H, W)`` with ``int64`` labels ``(N,)``.

    Small data sets (digits, Fashion-MNIST, CIFAR) fit in memory this way, and the training loop
    indexes whole batches at once on the training device instead of collating per sample.

    Args:
        images: Pixel values 0–255. Shape: (N, C, H, W), dtype uint8.
        labels: Class indices, ``UNLABELLED`` (-1) for images without a label. Shape: (N,).
        classes: Class names, index = label.
        name: Short description used in messages and reports.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classes: list[str] | None = None,
        name: str = "data",
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ContrastkitError(
                f"{name}: images must be uint8 of shape (N, C, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ContrastkitError(
                f"{name}: labels must have shape (N,) = ({images.shape[0]},), "
                f"got {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)
        n_classes = int(self.labels.max()) + 1 if self.labels.numel() else 0
        self.classes = classes if classes is not None else [str(i) for i in range(n_classes)]
        self.name = name

    def __len__(self) -> int:
        """Number of images N."""
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        """Return image ``i`` as uint8 ``(C, H, W)`` and its label."""
        return self.images[i], int(self.labels[i])

    @property
    def has_labels(self) -> bool:
        """True when every image has a class label."""
        return bool(self.labels.numel()) and bool((self.labels != UNLABELLED).all())

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: Tensor) -> ImageTensorDataset:
        """Return the images at ``indices`` as a new data set with the same classes."""
        return ImageTensorDataset(
            self.images[indices], self.labels[indices], self.classes, self.name
        )


def limit_indices(n: int, limit: int) -> Tensor:
    """The seeded random subset ``--limit`` keeps: the first ``limit`` of a permutation (seed 0)."""
    g = torch.Generator().manual_seed(0)
    return torch.randperm(n, generator=g)[:limit]


def to_uint8_images(x: Tensor) -> Tensor:
    """Convert one image or a batch to uint8: floats are read as 0–1, integers as 0–255."""
    if x.dtype == torch.uint8:
        return x
    if x.is_floating_point():
        return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x.clamp(0, 255).to(torch.uint8)


def as_image_dataset(
    data: Dataset[tuple[Tensor, int]], name: str = "dataset"
) -> ImageTensorDataset:
    """Materialise any ``Dataset`` of ``(image tensor (C, H, W), label)`` in memory.

    Float images are taken as values in [0, 1], integer images as 0–255; a ``(H, W)`` image is
    one channel. Labels ``None`` or negative mean unlabelled.

    Raises:
        ContrastkitError: if the data set is empty, an item is not ``(tensor, label)`` or the
            images differ in shape.
    """
    if isinstance(data, ImageTensorDataset):
        return data
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise ContrastkitError(f"{name} is empty")
    images: list[Tensor] = []
    labels: list[int] = []
    for i in range(n):
        item = data[i]
        if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], Tensor):
            raise ContrastkitError(
                f"{name}[{i}] must be (image tensor (C, H, W), label), got {type(item).__name__}"
            )
        img, label = item
        img = img.unsqueeze(0) if img.ndim == 2 else img
        if img.ndim != 3:
            raise ContrastkitError(
                f"{name}[{i}]: image must have shape (C, H, W), got {tuple(img.shape)}"
            )
        if images and img.shape != images[0].shape:
            raise ContrastkitError(
                f"{name}[{i}]: every image must have shape {tuple(images[0].shape)}, "
                f"got {tuple(img.shape)}"
            )
        images.append(to_uint8_images(img))
        labels.append(UNLABELLED if label is None else int(label))
    classes = getattr(data, "classes", None)
    return ImageTensorDataset(
        torch.stack(images),
        torch.tensor(labels, dtype=torch.int64),
        list(classes) if classes is not None else None,
        name,
    )
