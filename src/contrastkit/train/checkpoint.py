"""Checkpoints written atomically, and every random-number-generator state of a run.

Schema of ``checkpoints/last.pt`` (``format`` 2): ``encoder``, ``head`` (state dicts),
``optimizer``, ``scheduler``, ``scaler``, ``rng`` (python, numpy, torch, cuda, augment),
``epoch`` (completed epochs), ``step``, ``elapsed`` and ``cpu_elapsed`` (training wall
and process CPU seconds), ``finished``,
``config`` (the resolved pretraining config) and ``data`` (normalisation, image shape, classes);
for the momentum methods (moco, mocov3, supcon-moco) also ``momentum``: the key network's
state dict (``encoder.*``, ``head.*``) and the queue's (``queue.keys``, ``queue.labels``,
``queue.ptr``).

A checkpoint holds tensors and plain data only (dicts, lists, tuples, str, int, float, bool,
None), so it loads with ``torch.load(weights_only=True)``: a file received from someone else is
data, never code. Format 1 kept ``rng["numpy"]`` as NumPy's own state tuple, whose array such a
load refuses; format 2 stores it as :func:`rng_state` describes.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastkit.errors import ContrastkitError

FORMAT = 2

_NUMPY_ARRAY_GLOBALS = {
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
}
"""What format 1's NumPy state needed from the unpickler (NumPy 1 and 2 spell it differently)."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` with ``torch.save`` to a temporary file in the same directory, then rename.

    ``os.replace`` is atomic on POSIX: a crash at any point leaves either the previous file or
    the new one, never a partial file. ``obj`` is serialised in memory first and written with
    plain file calls, so that a failing write (a full disk) keeps the system's own error.

    Raises:
        ContrastkitError: if the file cannot be written (no space left on device, ...); the
            temporary file is removed and a previous file at ``path`` is left as it was.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        _write_and_replace(path, buffer.getbuffer())
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        previous = (
            f"the previous checkpoint {path} is intact"
            if path.is_file()
            else "no earlier checkpoint exists"
        )
        raise ContrastkitError(f"cannot write checkpoint {path}: {reason}; {previous}") from None


def _write_and_replace(path: Path, data: memoryview) -> None:
    """Write ``data`` to a new temporary file beside ``path``, sync it, rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic`, with ``torch.load(weights_only=True)``.

    Nothing in the file is executed: a checkpoint holding anything but tensors and plain data
    is refused.

    Raises:
        ContrastkitError: if the file is missing, truncated, holds other objects (code could
            run), has an older format, or is not a contrastkit checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ContrastkitError(
            f"checkpoint {path} not found (did pretraining run in this directory?)"
        )
    if not zipfile.is_zipfile(path):  # what torch.save writes; a cut-off file lost its index
        raise ContrastkitError(f"checkpoint {path} is truncated or corrupt (not a torch.save file)")
    try:
        with warnings.catch_warnings():  # torch's remarks on a foreign file: the error says it
            warnings.filterwarnings("ignore", category=UserWarning, module="torch.serialization")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only met something it will not build
        raise _refusal(path) from None
    except Exception as e:  # a damaged archive raises many types
        raise ContrastkitError(f"checkpoint {path} is corrupt ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ContrastkitError(f"{path} is not a contrastkit checkpoint (format {FORMAT})")
    return ckpt


def _refusal(path: Path) -> ContrastkitError:
    """The error for a checkpoint that ``weights_only`` refused, naming what it holds if known."""
    try:  # reads the pickle's opcodes without executing them
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # opcodes the static reader does not know (or an older torch): unnamed
        unsafe = set()
    if unsafe and unsafe <= _NUMPY_ARRAY_GLOBALS:
        return ContrastkitError(
            f"checkpoint {path} holds NumPy arrays, as format 1 checkpoints of older contrastkit "
            f"versions did; this version reads format {FORMAT} only (tensors and plain data): "
            "pretrain again, or convert a file you trust as docs/training.md shows"
        )
    named = f" ({', '.join(sorted(unsafe))})" if unsafe else ""
    return ContrastkitError(
        f"checkpoint {path} refused: it holds objects other than tensors and plain data{named}, "
        "which could run code when loaded"
    )


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Capture Python's, NumPy's, torch's (CPU and CUDA) and the named generators' states.

    All tensors and plain data: Python's state is a tuple of ints; NumPy's legacy global state
    is a dict of its 624-word Mersenne Twister ``key`` (an int64 tensor), ``pos``,
    ``has_gauss`` and ``cached_gaussian``; torch's are uint8 tensors.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    state.update({name: g.get_state() for name, g in generators.items()})
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back every state captured by :func:`rng_state`.

    The states may have been loaded onto another device (``map_location``); generators take
    theirs as CPU tensors.
    """
    random.setstate(state["python"])
    n = state["numpy"]
    key = n["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, g in generators.items():
        g.set_state(state[name].cpu())


def _numpy_state() -> dict[str, Any]:
    """NumPy's global (legacy) generator state as tensors and plain data."""
    state = np.random.get_state()  # noqa: NPY002  (the global state users may rely on)
    if not isinstance(state, tuple):  # the legacy form, always given without legacy=False
        raise TypeError(f"np.random.get_state() returned {type(state).__name__}, not a tuple")
    _, key, pos, has_gauss, cached = state
    return {
        "key": torch.from_numpy(key.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
