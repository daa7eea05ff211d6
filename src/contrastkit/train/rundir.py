"""The run directory: its layout, ``config.yaml``, and how a run takes a directory.

Layout::

    RUN/config.yaml            resolved options + provenance (what wrote it, git SHA and dirty
                               flag, versions, device), written atomically
    RUN/metrics.jsonl          one JSON object per line: kind "step" or "epoch" (metrics.py)
    RUN/checkpoints/last.pt    full resume state (checkpoint.py, state.py)
    RUN/.lock                  locked (flock) while a process trains in RUN (lock.py)
    RUN/probe.json, knn.json   evaluation results, and retrieval.json (result_name; on the
                               validation split probe_val.json…)
    RUN/similarity.npz         a batch's similarity matrix and positive mask (for the plot)
    RUN/embeddings_test.npz    test features (for the t-SNE plot)
    RUN/plots/*.png, RUN/report.html

A ``contrastkit run`` directory holds one such directory per method, beside its own
``config.yaml``, ``baselines.json`` and report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError
from contrastkit.train.files import is_temporary, os_errors, write_atomic
from contrastkit.train.lock import LOCK, RunLock
from contrastkit.train.metrics import METRICS
from contrastkit.train.rules import CUSTOM_DATA

CONFIG = "config.yaml"
CHECKPOINT = "checkpoints/last.pt"
RUN_FILES = (CONFIG, METRICS, LOCK)
"""What a pretraining run directory holds before its first checkpoint (besides temporaries)."""
PROVENANCE_KEY = "provenance"

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "CUSTOM_DATA",
    "LOCK",
    "METRICS",
    "PROVENANCE_KEY",
    "RUN_FILES",
    "discard_unstarted",
    "open_run_dir",
    "read_config",
    "result_name",
    "unstarted_entries",
    "update_config",
    "write_config",
]


def result_name(kind: str, split: str, data: str | None = None) -> str:
    """An evaluation's file: ``knn.json``, ``probe.json``… on test, ``knn_val.json``… on val.

    With ``data`` (the evaluation of a transfer to that data set) the data set's name is
    appended: ``probe.json`` → ``probe-fashion-mnist.json`` (:func:`transfer_name`).
    """
    name = f"{kind}.json" if split == "test" else f"{kind}_{split}.json"
    return name if data is None else transfer_name(name, data)


def transfer_name(name: str, data: str) -> str:
    """A transfer's file: ``name`` with ``-<data>`` before its suffix (unsafe characters → ``_``).

    Raises:
        ContrastkitError: if ``data`` is empty.
    """
    if not data.strip():
        raise ContrastkitError(f"data must name a data set for a transfer's file, got {data!r}")
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in data)
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}-{slug}.{suffix}"


def write_config(path: Path, config: dict[str, Any], prov: dict[str, Any], *, command: str) -> None:
    """Write ``config.yaml`` atomically: the options, then the provenance under ``provenance:``.

    The provenance starts with ``command``, what wrote the directory (``pretrain`` or ``run``):
    what :mod:`contrastkit.train.resume` reads to continue it.
    """
    import yaml

    text = yaml.safe_dump(config, sort_keys=False)
    text += yaml.safe_dump({PROVENANCE_KEY: {"command": command, **prov}}, sort_keys=False)
    write_atomic(path / CONFIG, text)


def _read_config_file(path: Path) -> dict[str, Any]:
    """The whole ``config.yaml`` of ``path``, provenance included.

    Raises:
        ContrastkitError: if the file is missing.
    """
    from contrastkit.train.config import load_yaml

    file = path / CONFIG
    if not file.is_file():
        raise ContrastkitError(f"{path} is not a run directory (no {CONFIG})")
    return load_yaml(str(file))


def read_provenance(path: Path) -> dict[str, Any]:
    """The provenance block of the ``config.yaml`` in ``path`` (empty when it has none).

    Raises:
        ContrastkitError: if the file is missing.
    """
    prov = _read_config_file(path).get(PROVENANCE_KEY)
    return prov if isinstance(prov, dict) else {}


def read_config(path: Path) -> dict[str, Any]:
    """Read a run's ``config.yaml`` without its provenance.

    Raises:
        ContrastkitError: if the file is missing.
    """
    data = _read_config_file(path)
    data.pop(PROVENANCE_KEY, None)
    return data


def update_config(path: Path, changes: dict[str, Any]) -> None:
    """Change options of the ``config.yaml`` in ``path``; the rest and the provenance stay."""
    from contrastkit.train.config import load_yaml

    saved = load_yaml(str(path / CONFIG))
    prov = dict(saved.pop(PROVENANCE_KEY, {}))
    write_config(path, {**saved, **changes}, prov, command=str(prov.pop("command", "run")))


def _unstarted_part(entry: Path, own: Sequence[str], sub_runs: bool) -> bool:
    """Whether ``entry`` is a file or directory that a run holds before its first checkpoint."""
    if entry.is_symlink() or not entry.is_dir():
        return entry.name in own or is_temporary(entry.name)
    if entry.name == "checkpoints":
        return all(is_temporary(p.name) and not p.is_dir() for p in entry.iterdir())
    return sub_runs and not unstarted_entries(entry)


def unstarted_entries(
    path: Path, own: Sequence[str] = RUN_FILES, sub_runs: bool = False
) -> list[str]:
    """Names in ``path`` that a run stopped before its first checkpoint would not hold.

    Such a run (killed, out of disk, or failed at its start) holds only the files ``own``,
    temporaries of atomic writes (:func:`is_temporary`) and ``checkpoints/`` with nothing but
    temporaries in it; a ``contrastkit run`` directory (``sub_runs``) also method directories
    of that kind. An empty list means ``path`` can start over; anything else (a checkpoint, a
    result, a user's file) means it cannot.
    """
    return sorted(e.name for e in path.iterdir() if not _unstarted_part(e, own, sub_runs))


def discard_unstarted(
    path: Path,
    keep: Sequence[str] = (LOCK,),
    own: Sequence[str] = RUN_FILES,
    sub_runs: bool = False,
) -> None:
    """Delete the parts of an unstarted run in ``path`` (:func:`unstarted_entries`) but ``keep``.

    Anything else in ``path`` stays untouched. A method directory of a ``run`` is deleted
    under its own lock, so one in use by another process is refused, not pulled away.

    Raises:
        ContrastkitError: if another process holds a method directory's lock.
    """
    for entry in sorted(path.iterdir()):
        if entry.name in keep or not _unstarted_part(entry, own, sub_runs):
            continue
        with os_errors("delete", entry):
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink()
            elif entry.name == "checkpoints":
                for p in entry.iterdir():
                    p.unlink()
                entry.rmdir()
            else:
                with RunLock(entry):
                    discard_unstarted(entry, keep=())
                entry.rmdir()


def _refuse_started(path: Path, own: Sequence[str], sub_runs: bool) -> None:
    """Refuse a new run in ``path`` unless it is absent, empty or an unstarted run."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ContrastkitError(f"{path} exists and is not a directory; choose another --out")
    foreign = unstarted_entries(path, own, sub_runs)
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
    if (path / CONFIG).is_file():
        raise ContrastkitError(
            f"run directory {path} already exists ({shown}); pass --resume to continue it or "
            "choose another --out (finished work is never overwritten)"
        )
    raise ContrastkitError(
        f"run directory {path} already exists and holds files that are not a run's ({shown}); "
        "choose another --out (they are never deleted)"
    )


def open_run_dir(
    path: str | Path,
    *,
    resume: bool,
    own: Sequence[str] = RUN_FILES,
    sub_runs: bool = False,
) -> RunLock:
    """Create or check the run directory ``path`` and lock it for this process.

    A new run (``resume`` False) takes ``path`` when it is absent, empty or holds only an
    unstarted run (:func:`unstarted_entries`: a start killed or failed before its first
    checkpoint), whose files it deletes; finished or started work and a user's own files are
    never touched. A resume needs ``path`` to exist. The state is checked before anything is
    created and again under the lock (another process may have started in between).

    Args:
        path: The run directory.
        resume: Continue the run in ``path`` instead of starting one.
        own: Names of the files an unstarted run holds (besides temporaries, ``checkpoints/``).
        sub_runs: ``path`` is a ``contrastkit run`` directory: unstarted method directories
            count as its own.

    Returns:
        The held :class:`RunLock`; release it when the work ends.

    Raises:
        ContrastkitError: if ``path`` holds other files (new run) or is no directory (resume),
            or another process holds its lock (naming that process).
        OSError: ``cannot create run directory PATH: <reason>`` and other file-system errors.
    """
    path = Path(path)
    if not resume:
        _refuse_started(path, own, sub_runs)
    elif not path.is_dir():
        raise ContrastkitError(f"cannot resume: {path} is not a directory")
    with os_errors("create run directory", path):
        path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(path)
    try:
        if not resume:
            _refuse_started(path, own, sub_runs)
            discard_unstarted(path, own=own, sub_runs=sub_runs)
    except BaseException:
        lock.release()
        raise
    return lock
