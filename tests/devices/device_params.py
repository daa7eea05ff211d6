"""The devices the device tests run on: the CPU always, CUDA when present (else skipped, with why).

Every test under ``tests/devices`` is marked ``gpu`` (``make test-gpu`` selects them) and
parametrised over these devices; the CPU cases run in ``make test`` too, so the logic of each
test is exercised on every machine and only the CUDA cases wait for a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

NO_CUDA = (
    f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}: "
    "torch.cuda.is_available() is False)"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


def cuda(*values: object, id: str | None = None) -> object:
    """A parameter set that runs on CUDA only: skipped with the reason when there is none."""
    return pytest.param(*values, marks=needs_cuda, id=id)


DEVICES = ["cpu", cuda("cuda", id="cuda")]


def skip_without_bf16(device: str) -> None:
    """Skip on a CUDA device without bfloat16 (before Ampere)."""
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bfloat16")


@contextmanager
def deterministic(device: str) -> Iterator[None]:
    """Deterministic algorithms, and on CUDA no TF32 (exact float32 GEMMs and convolutions).

    ``CUBLAS_WORKSPACE_CONFIG`` is set by this directory's conftest. Everything is put back
    afterwards.
    """
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.allow_tf32 = before[2]
        torch.backends.cuda.matmul.allow_tf32 = before[3]
        torch.backends.cudnn.benchmark = before[4]
