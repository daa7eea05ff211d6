"""Kill a real pretraining process with SIGKILL, resume it, and compare with an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bit_equal import assert_bit_equal
from contrastkit.train.checkpoint import load_checkpoint

SRC = str(Path(__file__).resolve().parents[2] / "src")
ARGS = [
    "--data",
    "digits",
    "--method",
    "supcon",
    "--limit",
    "256",
    "--batch-size",
    "32",
    "--epochs",
    "12",
    "--knn-every",
    "0",
    "--device",
    "cpu",
    "--quiet",
    "--seed",
    "3",
]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "contrastkit", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def completed_epochs(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    return sum('"kind": "epoch"' in line for line in metrics.read_text().splitlines())


# MoCo: a queue of 200 keys wraps mid-batch (200 % 32 = 8); split BN shuffles the key batch;
# 8 epochs (killed after 3 or more) keep the test short
MOCO = ["--method", "moco", "--queue-size", "200", "--norm", "split", "--bn-splits", "4"]
MOCO += ["--epochs", "8"]


@pytest.mark.slow
@pytest.mark.parametrize("method", [[], MOCO], ids=["supcon", "moco"])
def test_kill_9_then_resume_is_bit_equal_to_an_uninterrupted_run(tmp_path, method):
    ref = tmp_path / "ref"
    killed = tmp_path / "killed"
    args = [*ARGS, *method]  # the last --method counts
    proc = subprocess.Popen(
        cli("pretrain", *args, "--out", str(killed)), env=env(), stderr=subprocess.PIPE
    )
    reference = subprocess.Popen(
        cli("pretrain", *args, "--out", str(ref)), env=env(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while completed_epochs(killed) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted = load_checkpoint(killed / "checkpoints" / "last.pt")
    epochs = 8 if method else 12
    assert 2 <= interrupted["epoch"] < epochs and not interrupted["finished"]

    resumed = subprocess.run(
        cli("pretrain", "--out", str(killed), "--resume"), env=env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait() == 0, reference.stderr.read()

    assert_same_training(killed, ref, epochs=epochs)


def assert_same_training(run: Path, ref: Path, epochs: int) -> None:
    """``run`` ended where ``ref`` did, bit for bit, and its metrics hold each step once."""
    a = load_checkpoint(run / "checkpoints" / "last.pt")
    b = load_checkpoint(ref / "checkpoints" / "last.pt")
    assert a["finished"] and b["finished"] and a["step"] == b["step"] == epochs * 8
    assert a.keys() == b.keys()
    parts = ["encoder", "head", "optimizer", "scheduler", "scaler", "rng", "epoch"]
    if a["config"]["method"] == "moco":  # key network, queue, its labels and pointer
        parts.append("momentum")
        assert {"queue.keys", "queue.ptr", "encoder.features.1.weight"} <= a["momentum"].keys()
        assert int(a["momentum"]["queue.ptr"]) == epochs * 8 * 32 % 200
    for part in parts:
        assert_bit_equal(a[part], b[part], part)
    assert step_losses(run) == step_losses(ref)
    assert len(step_losses(run)) == epochs * 8


def step_losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "step"]


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_then_resume_is_bit_equal(tmp_path, small_disks):
    # the last --epochs counts; a 1-epoch warm-up keeps the run free of the clamp's warning
    args = [*ARGS, "--epochs", "3", "--warmup-epochs", "1"]
    ref = tmp_path / "ref"
    done = subprocess.run(cli("pretrain", *args, "--out", str(ref)), env=env(), capture_output=True)
    assert done.returncode == 0, done.stderr
    size = (ref / "checkpoints" / "last.pt").stat().st_size
    disk = small_disks.mount(size * 3 // 2)  # room for one checkpoint, not for a second beside it
    run = disk / "run"
    full = subprocess.run(
        cli("pretrain", *args, "--out", str(run)), env=env(), capture_output=True, text=True
    )
    ckpt = run / "checkpoints" / "last.pt"
    assert full.returncode == 2
    assert full.stderr == (
        f"error: cannot write checkpoint {ckpt}: no space left on device; "
        f"the previous checkpoint {ckpt} is intact\n"
    )
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.pt"]  # no temp file left
    assert load_checkpoint(ckpt)["epoch"] == 1  # epoch 2's checkpoint did not fit

    small_disks.resize(disk, 64 * 2**20)  # space freed
    resumed = subprocess.run(
        cli("pretrain", "--out", str(run), "--resume"), env=env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_training(run, ref, epochs=3)
