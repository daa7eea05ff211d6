"""One process of ``torchrun``: join the process group once, then pretrain each job in turn.

Usage (by ``test_ddp_on_device.py``)::

    torchrun --standalone --nproc-per-node=2 tests/devices/ddp_child.py DEVICE JOBS_JSON

Runs under the settings of the test's single-process reference (deterministic algorithms, no
TF32, one CPU thread), so that the only difference left is the split of each global batch.
"""

from __future__ import annotations

import json
import sys

import torch
from device_params import deterministic

import contrastkit
from contrastkit.train import launch


def main() -> None:
    device, jobs = sys.argv[1], json.loads(sys.argv[2])
    torch.set_num_threads(1)
    launch.init_from_env(device)  # nccl on CUDA, gloo on the CPU
    try:
        with deterministic(device):
            for job in jobs:
                contrastkit.pretrain(contrastkit.PretrainConfig(**job))
    finally:
        launch.shutdown()


if __name__ == "__main__":
    main()
