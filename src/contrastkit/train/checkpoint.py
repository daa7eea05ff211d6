"""Checkpoints written atomically, and every random-number-generator state of a run.

Schema of ``checkpoints/last.pt`` (``format`` 1): ``encoder``, ``head`` (state dicts),
``optimizer``, ``scheduler``, ``scaler``, ``rng`` (python, numpy, torch, cuda, loader,
augment), ``epoch`` (completed epochs), ``step``, ``elapsed`` and ``cpu_elapsed`` (training wall
and process CPU seconds), ``finished``,
``config`` (the resolved pretraining config) and ``data`` (normalisation, image shape, classes).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastkit.errors import ContrastkitError

FORMAT = 1


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file in the same directory, then rename.

    ``os.replace`` is atomic on POSIX: a crash at any point leaves either the previous file or
    the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic`.

    Raises:
        ContrastkitError: if the file is missing or not a contrastkit checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ContrastkitError(
            f"checkpoint {path} not found (did pretraining run in this directory?)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign files raise many types
        raise ContrastkitError(f"checkpoint {path} is corrupt ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ContrastkitError(f"{path} is not a contrastkit checkpoint (format {FORMAT})")
    return ckpt


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Capture Python's, NumPy's, torch's (CPU and CUDA) and the named generators' states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002  (the global state users may rely on)
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    state.update({name: g.get_state() for name, g in generators.items()})
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back every state captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state[name])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
