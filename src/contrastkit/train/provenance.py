"""Where a run came from: the git commit and dirty flag of the code, library versions, machine."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _git(*args: str, cwd: str | Path | None = None) -> str | None:
    """Output of ``git ARGS`` run in ``cwd`` (default: the contrastkit package's directory)."""
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=Path(__file__).resolve().parents[1] if cwd is None else cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_sha(cwd: str | Path | None = None) -> str:
    """The commit of the contrastkit source tree, ``unknown`` outside a git checkout."""
    out = _git("rev-parse", "HEAD", cwd=cwd)
    return out.strip() if out is not None else "unknown"


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether files under ``cwd`` (default: this package's source) differ from ``HEAD``.

    Modified, staged, deleted and new (untracked, not ignored) files count; ``None`` outside
    git. A run records it beside :func:`git_sha`: a SHA alone does not say that the code
    which ran was that commit's.
    """
    out = _git("status", "--porcelain", "--untracked-files=normal", "--", ".", cwd=cwd)
    return bool(out.strip()) if out is not None else None


@functools.cache
def source_state() -> tuple[str, bool | None]:
    """(:func:`git_sha`, :func:`git_dirty`) of the package, read once per process.

    Read when the first run of the process records its provenance, so a commit made while a
    long ``contrastkit run`` trains does not relabel its later methods.
    """
    return git_sha(), git_dirty()


def provenance(device: str) -> dict[str, Any]:
    """Git SHA, dirty flag, library versions, Python, platform and device of this process.

    The git fields are read once per process (:func:`source_state`).
    """
    import numpy
    import sklearn
    import torch
    import torchvision

    import contrastkit

    sha, dirty = source_state()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "contrastkit": contrastkit.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "threads": torch.get_num_threads(),
    }
