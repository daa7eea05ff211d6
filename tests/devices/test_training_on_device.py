"""Pretraining on each device and precision: it learns, and a resumed run is bit-equal.

Every case trains through the public ``contrastkit.pretrain`` (digits, small_cnn, SupCon with
batched on-device augmentation drawn from a generator on the device, the kNN monitor at the
end), under deterministic algorithms (and on CUDA the fixed cuBLAS workspace and no TF32).
A second run is stopped while it replaces its epoch-2 checkpoint, as if killed there, and
resumed from the epoch-1 checkpoint: the end must equal the uninterrupted run's bit for bit
(weights, optimiser, schedule, grad scaler, every RNG, each step's loss).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from device_params import DEVICES, cuda, deterministic, skip_without_bf16

import contrastkit
from bit_equal import assert_bit_equal
from contrastkit.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.gpu

OPTIONS: dict[str, Any] = {
    "data": "digits",
    "method": "supcon",
    "limit": 128,
    "batch_size": 32,  # 4 steps per epoch
    "epochs": 3,
    "knn_every": 0,  # the monitor runs once, after the last epoch
    "seed": 3,
    "quiet": True,
}
CHECKPOINT = Path("checkpoints") / "last.pt"


class _Stopped(Exception):
    """Raised in place of a checkpoint replacement: the run dies there."""


@contextmanager
def stopped_at_checkpoint(number: int) -> Iterator[None]:
    """Stop the run (raise :class:`_Stopped`) instead of its ``number``-th checkpoint rename.

    Checkpoints are written to a temporary file and renamed over ``last.pt``; a run stopped
    before the rename keeps the previous checkpoint, as after a ``kill -9`` at that moment.
    """
    real_replace = os.replace
    seen = [0]

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        if Path(dst).name == CHECKPOINT.name:
            seen[0] += 1
            if seen[0] == number:
                raise _Stopped
        real_replace(src, dst, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        yield


def _records(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.parametrize(
    ("device", "precision"),
    [
        ("cpu", "fp32"),
        cuda("cuda", "fp32", id="cuda-fp32"),
        cuda("cuda", "fp16", id="cuda-fp16"),
        cuda("cuda", "bf16", id="cuda-bf16"),
    ],
)
def test_training_learns_and_resumes_bit_equal(tmp_path, device, precision):
    if precision == "bf16":
        skip_without_bf16(device)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    options = {**OPTIONS, "device": device, "precision": precision}
    with deterministic(device):
        done = contrastkit.pretrain(contrastkit.PretrainConfig(out=str(ref), **options))
        with stopped_at_checkpoint(2), pytest.raises(_Stopped):
            contrastkit.pretrain(contrastkit.PretrainConfig(out=str(cut), **options))
        stopped = load_checkpoint(cut / CHECKPOINT)
        assert stopped["epoch"] == 1 and not stopped["finished"]
        resumed = contrastkit.resume(cut, device=device, quiet=True)

    # it learns: finite losses, the last epoch's mean below the first's
    steps = [r["loss"] for r in _records(ref, "step")]
    assert len(steps) == 12 and all(math.isfinite(x) for x in steps), steps
    epochs = [r["loss"] for r in _records(ref, "epoch")]
    assert epochs[-1] < epochs[0], epochs
    assert done.knn_acc is not None and 0.0 <= done.knn_acc <= 1.0

    # the grad scaler exists for float16 only, and its state is in the checkpoint
    a, b = load_checkpoint(ref / CHECKPOINT), load_checkpoint(cut / CHECKPOINT)
    if precision == "fp16":
        assert set(stopped["scaler"]) >= {"scale", "_growth_tracker"}
        scale = a["scaler"]["scale"]
        assert scale > 0 and math.log2(scale).is_integer(), scale
    else:
        assert a["scaler"] == {} and stopped["scaler"] == {}

    # the resumed run ends where the uninterrupted one did, bit for bit
    assert a["finished"] and b["finished"] and a["step"] == b["step"] == 12
    for part in ("encoder", "head", "optimizer", "scheduler", "scaler", "rng", "epoch"):
        assert_bit_equal(b[part], a[part], part)
    assert [r["loss"] for r in _records(cut, "step")] == steps
    assert resumed.knn_acc == done.knn_acc


@pytest.mark.parametrize("device", DEVICES)
def test_streaming_loader_pins_memory_for_the_device(device, tmp_path):
    import torch

    from contrastkit.data import load_dataset
    from contrastkit.data.prepare import prepare
    from contrastkit.data.shards import ShardSplit
    from contrastkit.train.rundata import TrainBatches, epoch_batches

    prepare("digits", tmp_path / "sh", shard_size=500, quiet=True)
    split = ShardSplit(tmp_path / "sh", "train")
    source = load_dataset("digits", "train")
    batches = epoch_batches(len(split), 100, seed=0, epoch=0)
    data = TrainBatches(split, torch.device(device), workers=2)
    assert data.loader.pin_memory == (device == "cuda")  # type: ignore[attr-defined]
    for k, (images, labels) in enumerate(data(batches)):
        assert images.device.type == device and labels.device.type == device
        # the non_blocking copies of pinned batches equal the in-memory images
        assert torch.equal(images.cpu(), source.images[batches[k]])
        assert torch.equal(labels.cpu(), source.labels[batches[k]])
