"""The validation split: a stratified, seeded partition of positions, checked by counting."""

from __future__ import annotations

import pytest
import torch

from contrastkit.data import ImageTensorDataset
from contrastkit.data.splits import carve_positions, carve_val, stratified_split
from contrastkit.errors import ContrastkitError


def labels_of(counts: list[int]) -> torch.Tensor:
    """Class c repeated counts[c] times, interleaved so that classes are not in blocks."""
    ys = [c for c, n in enumerate(counts) for _ in range(n)]
    return torch.tensor(ys)[torch.randperm(len(ys), generator=torch.Generator().manual_seed(3))]


def test_per_class_counts_by_hand() -> None:
    # fraction 0.2 of classes with 10, 5, 1, 3, 2 images: round(2.0)=2, round(1.0)=1,
    # a single image stays in training (0), round(0.6)=1, round(0.4)=0 -> at least 1 -> 1
    y = labels_of([10, 5, 1, 3, 2])
    train, val = stratified_split(y, 0.2, seed=0)
    per_class = torch.bincount(y[val], minlength=5).tolist()
    assert per_class == [2, 1, 0, 1, 1]
    assert sorted(train.tolist() + val.tolist()) == list(range(len(y)))  # a partition
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())
    assert train.dtype == val.dtype == torch.int64


def test_fraction_zero_holds_nothing_out() -> None:
    y = labels_of([4, 4])
    train, val = stratified_split(y, 0.0, seed=0)
    assert val.numel() == 0 and train.tolist() == list(range(8))


def test_pure_function_of_labels_fraction_seed() -> None:
    y = labels_of([50, 40, 30])
    a = stratified_split(y, 0.25, seed=7)
    torch.manual_seed(123)  # global RNG state plays no part
    b = stratified_split(y, 0.25, seed=7)
    c = stratified_split(y, 0.25, seed=8)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])
    assert torch.bincount(y[c[1]]).tolist() == torch.bincount(y[a[1]]).tolist() == [12, 10, 8]


def test_a_class_choice_does_not_depend_on_other_classes() -> None:
    # removing class 1 entirely leaves the images chosen from class 0 the same
    y = labels_of([20, 20])
    _, val = stratified_split(y, 0.3, seed=1)
    only0 = (y == 0).nonzero().flatten()
    _, val0 = stratified_split(y[only0], 0.3, seed=1)
    assert only0[val0].tolist() == [i for i in val.tolist() if y[i] == 0]


@pytest.mark.parametrize(
    ("labels", "fraction", "seed", "needle"),
    [
        (torch.zeros(4, 1, dtype=torch.long), 0.1, 0, "labels must be a 1-D integer tensor"),
        (torch.zeros(4), 0.1, 0, "labels must be a 1-D integer tensor"),
        (torch.tensor([0, 1, -1]), 0.1, 0, "labels must be classes >= 0"),
        (torch.tensor([0, 1]), 1.0, 0, "fraction must be a number in [0, 1), got 1.0"),
        (torch.tensor([0, 1]), -0.1, 0, "fraction must be a number in [0, 1), got -0.1"),
        (torch.tensor([0, 1]), float("nan"), 0, "fraction must be a number in [0, 1)"),
        (torch.tensor([0, 1]), 0.1, -1, "seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_input_is_one_line(labels, fraction, seed, needle) -> None:
    with pytest.raises(ContrastkitError, match=None) as e:
        stratified_split(labels, fraction, seed)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_carve_positions_are_the_images_carve_val_keeps_and_holds_out() -> None:
    y = labels_of([10, 5, 1, 3, 2])
    images = torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1, 1)  # image i holds i
    ds = ImageTensorDataset(images, y)
    keep, val = carve_positions(ds, 0.2)
    assert torch.bincount(y[val], minlength=5).tolist() == [2, 1, 0, 1, 1]  # as by hand above
    assert sorted(keep.tolist() + val.tolist()) == list(range(len(y)))
    kept, held = carve_val(ds, 0.2)
    assert kept.images.flatten().tolist() == keep.tolist()
    assert held is not None and held.images.flatten().tolist() == val.tolist()
    keep, val = carve_positions(ds, 0.0)  # nothing held out
    assert keep.tolist() == list(range(len(y))) and val.tolist() == []
    unlabelled = ImageTensorDataset(images, torch.full((len(y),), -1))
    with pytest.raises(ContrastkitError, match=r"--val-fraction \(val_fraction\) 0.2 needs a"):
        carve_positions(unlabelled, 0.2)
