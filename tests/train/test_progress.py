"""Epoch lines when stderr is not a terminal, `run`'s method lines, and TensorBoard scalars."""

import json
import re

import pytest

from contrastkit.train.config import RunConfig, from_dict
from contrastkit.train.progress import duration, epoch_line
from contrastkit.train.run import run


def test_duration_and_epoch_line_by_hand():
    assert [duration(s) for s in (0, 42.4, 65, 3600 + 125)] == ["0s", "42s", "1m05s", "1h02m"]
    record = {"epoch": 3, "loss": 4.12345, "knn_acc": 0.912, "images_per_s": 812.4}
    assert epoch_line("supcon", record, 100, 550) == (
        "supcon epoch 3/100: loss 4.1235, kNN 91.20 %, 812 images/s, ETA 9m10s"
    )
    assert "kNN –" in epoch_line("ce", {**record, "knn_acc": None}, 100, None)


def test_run_prints_methods_and_epochs_and_logs_tensorboard(tmp_path, capsys):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    out = tmp_path / "r"
    cfg = from_dict(
        RunConfig,
        {
            "method": "ce",
            "data": "digits",
            "limit": 64,
            "batch_size": 32,
            "epochs": 2,
            "knn_k": 10,
            "probe_epochs": 1,
            "device": "cpu",
            "out": str(out),
            "tensorboard": True,
        },
    )
    run(cfg)
    err = capsys.readouterr().err.splitlines()  # captured: stderr is not a terminal
    assert f"run: starting ce (1/1) in {out / 'ce'}" in err
    epochs = [
        json.loads(line)
        for line in (out / "ce" / "metrics.jsonl").read_text().splitlines()
        if '"epoch"' in line and '"kind": "epoch"' in line
    ]
    lines = [line for line in err if line.startswith("ce epoch ")]
    assert len(lines) == 2 == len(epochs)
    for line, r in zip(lines, epochs, strict=True):
        assert line.startswith(f"ce epoch {r['epoch']}/2: loss {r['loss']:.4f}, ")
        assert f"{r['images_per_s']:.0f} images/s, ETA " in line
    assert re.search(r"ETA 0s$", lines[-1])
    acc = event_accumulator.EventAccumulator(str(out / "ce" / "tensorboard"))
    acc.Reload()
    steps = [json.loads(x) for x in (out / "ce" / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in steps if r["kind"] == "step"]
    logged = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in logged] == [s for s, _ in losses]
    # TensorBoard stores float32
    assert [v for _, v in logged] == pytest.approx([v for _, v in losses], rel=1e-6)
    knn = [e.value for e in acc.Scalars("epoch/knn_acc")]
    assert knn == pytest.approx(
        [r["knn_acc"] for r in epochs if r["knn_acc"] is not None], rel=1e-6
    )
