"""Data: the data-set registry, in-memory image tensors and batched multi-view augmentation."""

from contrastkit.data.augment import (
    PRESETS,
    AugmentPreset,
    MultiViewAugment,
    channel_stats,
    get_preset,
    normalize,
)
from contrastkit.data.registry import (
    DATASETS,
    dataset_info,
    dataset_names,
    load_dataset,
    resolve_dataset,
)
from contrastkit.data.tensor_dataset import UNLABELLED, ImageTensorDataset, as_image_dataset

__all__ = [
    "DATASETS",
    "PRESETS",
    "UNLABELLED",
    "AugmentPreset",
    "ImageTensorDataset",
    "MultiViewAugment",
    "as_image_dataset",
    "channel_stats",
    "dataset_info",
    "dataset_names",
    "get_preset",
    "load_dataset",
    "normalize",
    "resolve_dataset",
]
