"""DDP pretraining on 2 processes equals one process on the same global batches, per device.

On CUDA (2 GPUs or more): nccl, and ``sync_bn`` (SyncBatchNorm: batch statistics over the
global batch, so 2 processes with BatchNorm equal one process with BatchNorm); without
``sync_bn`` each process normalises its own half-batch, which the same comparison must show to
differ. On the CPU: gloo, GroupNorm (``sync_bn`` needs CUDA), the same harness. The processes
are started by ``torchrun`` itself (``ddp_child.py``), the one-process references here, under
the same settings (deterministic algorithms, no TF32, one CPU thread).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from device_params import DEVICES, deterministic

import contrastkit
from contrastkit.train.checkpoint import load_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.distributed]

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
OPTIONS: dict[str, Any] = {
    "data": "digits",
    "method": "supcon",
    "limit": 64,
    "batch_size": 16,  # 4 steps per epoch, 8 samples per process
    "epochs": 2,
    "model": "small_cnn",
    "augment": "none",  # the same views in both runs: the only difference is the split
    "lr": 0.1,  # a small step keeps float32 rounding from growing (tests/train/test_ddp.py)
    "knn_every": 0,
    "precision": "fp32",
    "quiet": True,
}
TIMEOUT = 300  # seconds: the jobs take well under a minute; a stuck collective ends here
EQUAL = 1e-5  # tests/train/test_ddp.py: gloo DDP and one process agree to 1e-7 at lr 0.1
# (job name, norm, sync_bn, equal to one process): CUDA runs all, the CPU the ones without sync_bn
JOBS = [
    ("group", "group", False, True),
    ("sync-bn", "batch", True, True),
    ("local-bn", "batch", False, False),  # per-process statistics: must differ
]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    return {f"{part}.{k}": v for part in ("encoder", "head") for k, v in ckpt[part].items()}


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def _torchrun(device: str, jobs: list[dict[str, Any]], cwd: Path) -> None:
    """Run the jobs on 2 processes; a hang (a stuck collective) ends their whole group."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(
        [*command, str(HERE / "ddp_child.py"), device, json.dumps(jobs)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the launcher and its workers: one process group
    )
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within {TIMEOUT} s; stderr:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.parametrize("device", DEVICES)
def test_ddp_on_two_processes_equals_one_process(tmp_path, device):
    if device == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip(f"DDP over nccl needs 2 CUDA devices, {torch.cuda.device_count()} visible")
    backend = "nccl" if device == "cuda" else "gloo"
    available = {"nccl": dist.is_nccl_available, "gloo": dist.is_gloo_available}[backend]
    if not (dist.is_available() and available()):
        pytest.skip(f"torch.distributed with {backend} is not available in this build")
    jobs = [j for j in JOBS if device == "cuda" or not j[2]]
    options = {name: {**OPTIONS, "device": device, "norm": norm} for name, norm, _, _ in jobs}
    _torchrun(
        device,
        [
            {**options[n], "sync_bn": sync, "out": str(tmp_path / f"ddp-{n}")}
            for n, _, sync, _ in jobs
        ],
        tmp_path,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each of the two processes
    try:
        with deterministic(device):
            for norm in sorted({norm for _, norm, _, _ in jobs}):
                options = {**OPTIONS, "device": device, "norm": norm, "out": str(tmp_path / norm)}
                contrastkit.pretrain(contrastkit.PretrainConfig(**options))
    finally:
        torch.set_num_threads(threads)
    for name, norm, _, equal in jobs:
        difference = _max_difference(tmp_path / f"ddp-{name}", tmp_path / norm)
        if equal:
            assert difference < EQUAL, f"{name}: 2 processes end {difference:.3g} from one"
        else:
            # the comparison can fail: per-process statistics move the weights far beyond it
            assert difference > 100 * EQUAL, f"{name}: only {difference:.3g} from one process"
