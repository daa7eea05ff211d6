"""The data of a pretraining run: its splits, the per-epoch batch order, the augmentation.

:func:`epoch_batches` is the one place that orders the data: a ``DistributedSampler`` gives each
process its share of every global batch, so W processes see the batches one process would.
:class:`TrainBatches` turns those index batches into image batches on the device, from memory
or from ``shards:DIR`` (read by DataLoader workers): the same batches either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from contrastkit import distributed
from contrastkit.data import (
    MultiViewAugment,
    channel_stats,
    dataset_info,
    resolve_dataset,
)
from contrastkit.data.registry import Split
from contrastkit.data.shards import BatchList, ShardSplit, batch_loader
from contrastkit.data.splits import carve_val
from contrastkit.data.tensor_dataset import limit_indices
from contrastkit.errors import ContrastkitError
from contrastkit.train import launch
from contrastkit.train.config import PretrainConfig
from contrastkit.train.methods import get_method
from contrastkit.train.networks import DataShape


@dataclass
class RunData:
    """The splits a run uses (in memory, or ``shards:DIR`` read on demand).

    Attributes:
        train: The images pretraining sees (without the validation images).
        bank: The labelled images the kNN monitor votes with (None without labels).
        test: The test split (None when the run has a validation split: it is not read).
        shape: Channels, size, classes and normalisation of the images.
        val: The validation images (``--val-fraction``), None without.
    """

    train: Split
    bank: Split | None
    test: Split | None
    shape: DataShape
    val: Split | None = None

    @property
    def monitored(self) -> tuple[Split | None, str]:
        """The split the kNN monitor scores and its name: validation if the run has one."""
        return (self.val, "val") if self.val is not None else (self.test, "test")


def _check_labels(cfg: PretrainConfig, train: Split) -> None:
    if get_method(cfg.method).uses_labels and not train.has_labels:
        raise ContrastkitError(
            f"method {cfg.method} needs labels, but {train.name} has unlabelled images; "
            "use --method simclr or a labelled split"
        )


def load_run_data(
    cfg: PretrainConfig,
    data: str | Dataset[tuple[Tensor, int]],
    test_data: str | Dataset[tuple[Tensor, int]] | None,
) -> RunData:
    """Load the pretraining split, the kNN bank (labelled train images) and the monitored split.

    With ``val_fraction`` > 0 the validation images are carved from the training split first
    (:func:`~contrastkit.data.splits.carve_val`; ``limit`` then subsets what is left) and the
    test split is not loaded; else the monitor scores the test split, as before.
    """
    kw = {"root": cfg.data_root, "download": cfg.download, "image_size": cfg.image_size}
    bank: Split | None
    test: Split | None
    if isinstance(data, str):
        info = dataset_info(data)
        split = cfg.train_split or "train"
        train = resolve_dataset(data, split, **kw)  # type: ignore[arg-type]
        _check_labels(cfg, train)
        bank = train if train.has_labels else None
        if bank is None and "train" in info.splits and split != "train":
            bank = resolve_dataset(data, "train", **kw)  # type: ignore[arg-type]
    else:
        train = resolve_dataset(data, "train")
        bank = train if train.has_labels else None
    train, val = carve_val(train, cfg.val_fraction)
    if val is not None:  # the monitor scores validation: the test split is not read
        bank, test = train, None
    elif isinstance(data, str):
        test = resolve_dataset(test_data or data, "test", **kw)  # type: ignore[arg-type]
    else:
        test = resolve_dataset(test_data, "test") if test_data is not None else None
    if cfg.limit is not None and cfg.limit < len(train):
        train = train.subset(limit_indices(len(train), cfg.limit))
        bank = train if train.has_labels else bank
    if len(train) < 2:
        raise ContrastkitError(f"the training data has {len(train)} image(s); need at least 2")
    _check_labels(cfg, train)
    if test is not None and not test.has_labels:
        test = None
    # prepared shards carry the statistics of their training split (computed as here, from
    # the same images, when prepared from a registry data set)
    mean, std = (
        (train.mean, train.std) if isinstance(train, ShardSplit) else channel_stats(train.images)
    )
    c, h, w = train.image_shape
    classes = (bank or train).classes
    shape = DataShape(c, max(h, w), len(classes), mean, std, classes)
    return RunData(train, bank, test, shape, val)


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[Tensor]:
    """This process's batches of one epoch: shuffled indices cut into full batches.

    A ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` with ``set_epoch(epoch)``
    gives process r the positions r, r + W, r + 2W… of one permutation of 0..n−1; cut into
    batches of ``batch_size / W``, step k of all processes together covers positions
    [k·B, (k+1)·B) of that permutation: exactly the global batch one process would draw (W = 1
    runs the same code), so a run on W processes sees the same batches as one process. The last
    partial batch is dropped; when n ≤ batch_size the whole shuffled set is one batch. The order
    depends only on (seed, epoch), so a resumed run continues it exactly.

    Raises:
        ValueError: if the number of processes does not divide ``batch_size``.
    """
    sampler: DistributedSampler[int] = DistributedSampler(
        range(n),  # type: ignore[arg-type]  # any sized sequence works
        num_replicas=distributed.world_size(),
        rank=distributed.rank(),
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    local = torch.tensor(list(sampler), dtype=torch.long)  # (n // W,)
    if n <= batch_size:
        return [local]
    per_process = launch.local_batch_size(batch_size)
    return list(local[: len(local) - len(local) % per_process].split(per_process))


class TrainBatches:
    """The training split's batches on the device: the images and labels of index batches.

    In memory, the split is moved to the device once and indexed there; ``shards:DIR`` is read
    batch by batch by ``workers`` DataLoader processes (page-locked for a CUDA device) and
    copied to the device. Either way batch k holds the images of the k-th index batch, so a run
    on shards equals the run in memory.
    """

    def __init__(self, split: Split, device: torch.device, workers: int) -> None:
        self.split, self.device, self.workers = split, device, workers
        if not isinstance(split, ShardSplit):
            self.images = split.images.to(device)
            self.labels = split.labels.to(device)
            return
        self.sampler = BatchList()  # the workers persist from epoch to epoch
        cuda = device.type == "cuda"
        self.loader = batch_loader(
            split, self.sampler, workers=workers, pin_memory=cuda, persistent=True
        )

    def __len__(self) -> int:
        """Number of training images N."""
        return len(self.split)

    def __call__(self, batches: Sequence[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        """(uint8 images (B, C, H, W), labels (B,)) on the device, one per index batch."""
        if not isinstance(self.split, ShardSplit):
            for idx in batches:
                idx = idx.to(self.device)
                yield self.images[idx], self.labels[idx]
            return
        cuda = self.device.type == "cuda"
        self.sampler.batches = list(batches)
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=cuda), labels.to(self.device)


def augment_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the augmentation generator for one epoch on one process (distinct per rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of batches :func:`epoch_batches` yields."""
    return 1 if n <= batch_size else n // batch_size


def augmentation(
    cfg: PretrainConfig, source: str | Dataset[tuple[Tensor, int]], shape: DataShape
) -> MultiViewAugment:
    """The run's augmentation: ``--augment``, else the data set's preset, with the method's views.

    A ``Dataset`` object gets ``simclr`` for colour images and ``fashion-mnist`` for grey ones.
    """
    preset = cfg.augment or (
        dataset_info(source).preset
        if isinstance(source, str)
        else ("simclr" if shape.channels == 3 else "fashion-mnist")
    )
    views = get_method(cfg.method).views(cfg.views)
    return MultiViewAugment(preset, views, shape.mean, shape.std)
