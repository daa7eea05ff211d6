"""Kill a real pretraining process with SIGKILL, resume it, and compare with an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_equal_to_an_uninterrupted_run(tmp_path):
    ref = tmp_path / "ref"
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cli("pretrain", *ARGS, "--out", str(killed)), env=env(), stderr=subprocess.PIPE
    )
    reference = subprocess.Popen(
        cli("pretrain", *ARGS, "--out", str(ref)), env=env(), stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while completed_epochs(killed) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert 2 <= interrupted["epoch"] < 12 and not interrupted["finished"]

    resumed = subprocess.run(
        cli("pretrain", "--out", str(killed), "--resume"), env=env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait() == 0, reference.stderr.read()

    a = load_checkpoint(killed / "checkpoints" / "last.pt")
    b = load_checkpoint(ref / "checkpoints" / "last.pt")
    assert a["finished"] and b["finished"] and a["step"] == b["step"] == 12 * 8
    for part in ["encoder", "head"]:
        for k in b[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for k, v in b["optimizer"]["state"].items():
        assert torch.equal(a["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"])
    # the metrics of the resumed run hold each step exactly once
    steps = [
        line
        for line in (killed / "metrics.jsonl").read_text().splitlines()
        if '"kind": "step"' in line
    ]
    assert len(steps) == 12 * 8
