"""``--device auto|cpu|cuda`` → a ``torch.device``; ``--precision`` → an autocast dtype."""

from __future__ import annotations

import functools
import warnings

import torch

from contrastkit.errors import ContrastkitError
from contrastkit.train.rules import PRECISIONS


def resolve_device(name: str) -> torch.device:
    """Return CUDA for ``auto`` when available (else CPU); check that ``cuda`` exists.

    Raises:
        ContrastkitError: for an unknown name or ``cuda`` without a GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ContrastkitError(f"device {name!r} requested but CUDA is not available")
        return torch.device(name)
    raise ContrastkitError(f"unknown device {name!r}; choose auto, cpu or cuda")


def cpu_has_onednn_bf16() -> bool | None:
    """Whether oneDNN has bfloat16 kernels for this CPU (on x86: AVX-512 or newer).

    ``None`` when this build of torch cannot tell (no oneDNN, or no such query). On an x86 CPU
    below AVX-512 (AVX2 only) the answer is False and bfloat16 runs through a slow fallback,
    much slower than float32 (``benchmarks/precision.py`` measures both kinds of CPU; figures in
    docs/training.md). AVX-512 CPUs without the BF16 extension answer True.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


@functools.cache  # once per process (libraries reset Python's warning registry)
def _warn_slow_bf16() -> None:
    warnings.warn(
        "precision bf16 on a CPU for which oneDNN has no bfloat16 kernels (torch reports CPU "
        f"capability {torch.backends.cpu.get_cpu_capability()}): about 10x slower than float32 "
        "on such a CPU (benchmarks/precision.py); train with precision fp32 here",
        UserWarning,
        stacklevel=3,
    )


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None = plain float32).

    ``auto`` is float16 on CUDA (with grad scaling in training) and float32 on the CPU, so a
    CPU run gives the same numbers on every CPU. ``bf16`` autocasts convolutions and matrix
    products to bfloat16 on either device (``benchmarks/precision.py`` measures what it gains
    on a CPU); on a CPU for which oneDNN has no bfloat16 kernels (:func:`cpu_has_onednn_bf16`)
    it warns, since it is then much slower than float32. Training computes only the network
    under autocast; losses stay float32.

    Raises:
        ContrastkitError: for an unknown name, or ``fp16`` on a device other than CUDA.
    """
    if precision not in PRECISIONS:
        raise ContrastkitError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ContrastkitError("precision bf16: this CUDA device has no bfloat16; use fp16")
        if device.type == "cpu" and cpu_has_onednn_bf16() is False:
            _warn_slow_bf16()
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ContrastkitError(
                f"precision fp16 needs CUDA, the device is {device.type}; use bf16 or fp32"
            )
        return torch.float16
    return None


def autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """The autocast context for ``dtype`` from :func:`autocast_dtype` (None = plain float32)."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)
