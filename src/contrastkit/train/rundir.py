"""The run directory: resolved ``config.yaml`` with provenance, ``metrics.jsonl``, checkpoints.

Layout::

    RUN/config.yaml            resolved options + provenance (git SHA and dirty flag,
                               versions, seed, device), written atomically
    RUN/metrics.jsonl          one JSON object per line: kind "step" or "epoch"
    RUN/checkpoints/last.pt    full resume state (see contrastkit.train.checkpoint)
    RUN/.lock                  locked (flock) while a process trains in RUN; its pid, host,
                               command and start time
    RUN/probe.json, knn.json   evaluation results
    RUN/similarity.npz         a batch's similarity matrix and positive mask (for the plot)
    RUN/embeddings_test.npz    test features (for the t-SNE plot)
    RUN/plots/*.png, RUN/report.html
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import platform
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoints/last.pt"
LOCK = ".lock"
RUN_FILES = (CONFIG, METRICS, LOCK)
"""What a pretraining run directory holds before its first checkpoint (besides temporaries)."""
PROVENANCE_KEY = "provenance"
RESUME_MAY_CHANGE = ("resume", "quiet", "device")
"""Options that a resume may give differently from the run's saved config."""
CUSTOM_DATA = "<dataset object>"
"""A run's saved ``data`` when it ran on a ``Dataset`` object (which a config cannot hold)."""


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


# --- writing files ------------------------------------------------------------------------------


@contextlib.contextmanager
def os_errors(action: str, path: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` as one whose message says what failed on which path.

    ``cannot write runs/x/config.yaml: No space left on device`` is its ``strerror`` (its
    ``filename`` is unset), with the errno and type of the original, which it chains.
    """
    try:
        yield
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, f"cannot {action} {path}: {e.strerror}") from e


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary of an atomic write (``.NAME.<random>.tmp``).

    :func:`write_atomic` and the checkpoint writer name them so; one is left behind only when
    its process dies mid-write.
    """
    return name.startswith(".") and name.endswith(".tmp")


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, sync it, then rename it to ``path``.

    A crash or a full disk leaves either the previous file or the new one, never a part of it.

    Raises:
        OSError: saying ``cannot write PATH: <reason>``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with os_errors("write", path):
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_config(path: Path, config: dict[str, Any], prov: dict[str, Any]) -> None:
    """Write ``config.yaml`` atomically: the options, then the provenance under ``provenance:``."""
    import yaml

    text = yaml.safe_dump(config, sort_keys=False)
    text += yaml.safe_dump({PROVENANCE_KEY: prov}, sort_keys=False)
    write_atomic(path / CONFIG, text)


# --- the lock -----------------------------------------------------------------------------------


def _command() -> str:
    """This process's command line, ``contrastkit ...`` for the CLI."""
    argv = sys.argv or ["python"]
    if Path(argv[0]).name in ("contrastkit", "__main__.py"):
        return shlex.join(["contrastkit", *argv[1:]])
    return shlex.join(argv)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


NO_HOLDER_YET = "another process (it has not written its pid yet)"


def lock_holder(file: Path) -> str:
    """Who holds the lock ``file``, from what it wrote there: pid, host, start time, command."""
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        pid, host = int(info["pid"]), str(info["host"])
        command, started = str(info["command"]), str(info["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return NO_HOLDER_YET
    if host == socket.gethostname() and not _alive(pid):  # a former holder's: the new one
        return NO_HOLDER_YET  # has locked but not yet written
    return f"pid {pid} on {host} since {started} ({command})"


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held while a process works in ``RUN``.

    The kernel drops the lock when the file is closed or its process dies, even by
    ``kill -9``: no lock outlives its holder (the file stays, and is reused). While held, the
    file names the holder (JSON: pid, host, command, start time) for a refused process to
    quote. Under ``torchrun`` only rank 0 takes it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        """Take the lock of the existing directory ``run_dir`` at once, or refuse.

        Raises:
            ContrastkitError: if another process holds it, naming that process.
            OSError: if the lock file cannot be created, locked or written.
        """
        self.path = Path(run_dir) / LOCK
        with os_errors("create the lock file", self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with os_errors("lock", self.path):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ContrastkitError(
                        f"run directory {run_dir} is in use by {lock_holder(self.path)}; "
                        "wait for it to end (or stop it), then try again"
                    ) from None
                info = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": _command(),
                    "started": datetime.now().isoformat(timespec="seconds"),
                }
                os.ftruncate(fd, 0)
                os.write(fd, (json.dumps(info) + "\n").encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (closing the file); a second call does nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- starting, restarting and resuming ----------------------------------------------------------


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


def update_config(path: Path, changes: dict[str, Any]) -> None:
    """Change options of the ``config.yaml`` in ``path``; the rest and the provenance stay."""
    from contrastkit.train.config import load_yaml

    saved = load_yaml(str(path / CONFIG))
    prov = saved.pop(PROVENANCE_KEY, {})
    write_config(path, {**saved, **changes}, prov)


def resumed_options(
    given: dict[str, Any], command: str, data_object: bool = False
) -> dict[str, Any]:
    """The options that resume the run in ``given["out"]``: its saved config, ``resume=True``.

    Options of ``given`` that may change (:data:`RESUME_MAY_CHANGE`) replace the saved ones;
    options in ``given`` other than those, ``out`` and a ``Dataset`` object's ``data`` must
    equal the saved ones (and be recorded there: a run written before an option existed
    cannot say what it used).
    ``out`` is the given one (the directory may have moved since it was written). A run on a
    ``Dataset`` object (saved ``data`` is :data:`CUSTOM_DATA`) resumes only with an object
    given again, and an object resumes only such a run.

    Args:
        given: The options of the resuming call, ``out`` among them.
        command: ``"run"`` or ``"pretrain"``: the command resuming; the directory must have
            been written by it (a ``run`` root saves ``methods``, a pretraining run ``method``).
        data_object: The caller was given a ``Dataset`` object as its data (``given["data"]``
            is then not compared).

    Raises:
        ContrastkitError: without ``out``, if ``out`` holds no run or the other command's
            run, on a differing or unrecorded option, or if the run's data and the given one
            are not both a ``Dataset`` object or both a registry name.
    """
    out = given.get("out")
    if not out:
        raise ContrastkitError("--resume needs --out, the run directory to continue")
    if not (Path(out) / CONFIG).is_file():
        never = Path(out).is_dir() and not unstarted_entries(Path(out))
        raise ContrastkitError(
            f"cannot resume: {out} holds no run (no {CONFIG})"
            + ("; it was stopped before it began: start it again without --resume" if never else "")
        )
    saved = read_config(Path(out))
    written_by = "run" if "methods" in saved else "pretrain"
    if written_by != command:
        kinds = {"run": "`contrastkit run` directory", "pretrain": "`contrastkit pretrain` run"}
        raise ContrastkitError(
            f"{out} is a {kinds[written_by]}, not a {kinds[command]}: resume it with "
            f"`contrastkit {written_by} --out {out} --resume`"
            + (" (or one method's subdirectory with pretrain)" if written_by == "run" else "")
        )
    if data_object and saved.get("data") != CUSTOM_DATA:
        raise ContrastkitError(
            f"{out} was run on the data set {saved.get('data')!r}, not on a Dataset object: "
            "resume it without data= (or with that name)"
        )
    if not data_object and saved.get("data") == CUSTOM_DATA:
        raise ContrastkitError(
            f"{out} was run on a Dataset object: pass it again as data= (with its test set "
            "as test_data=) to resume"
        )
    ignore = ("data",) if data_object else ()
    compared = [k for k in given if k not in (*RESUME_MAY_CHANGE, "out", *ignore)]
    unrecorded = [k for k in compared if k not in saved]
    if unrecorded:
        raise ContrastkitError(
            f"cannot resume with {', '.join(unrecorded)}: the run's {CONFIG} does not record "
            "them (it predates these options); resume without them"
        )
    diff = [k for k in compared if saved[k] != given[k]]
    if diff:
        raise ContrastkitError(
            "cannot resume with different options: "
            + ", ".join(f"{k}={given[k]!r} (run has {saved[k]!r})" for k in diff)
        )
    may_change = {k: given[k] for k in RESUME_MAY_CHANGE if k in given}
    return {**saved, **may_change, "out": out, "resume": True}


def read_config(path: Path) -> dict[str, Any]:
    """Read a run's ``config.yaml`` without its provenance.

    Raises:
        ContrastkitError: if the file is missing.
    """
    from contrastkit.train.config import load_yaml

    file = path / CONFIG
    if not file.is_file():
        raise ContrastkitError(f"{path} is not a run directory (no {CONFIG})")
    data = load_yaml(str(file))
    data.pop(PROVENANCE_KEY, None)
    return data


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl``.

    A crash in the middle leaves a last line without its newline, which :func:`read_metrics`
    ignores and a resume drops (:func:`truncate_metrics`), as a write-ahead log does.

    Raises:
        OSError: saying ``cannot append to PATH: <reason>``.
    """
    file = path / METRICS
    with os_errors("append to", file), file.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _json(raw: bytes, where: str) -> Any:
    """Decode the UTF-8 JSON text ``raw`` read from ``where`` (a file, or a file's line)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        problem = f"is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})"
    except json.JSONDecodeError as e:
        problem = f"is not JSON ({e.msg} at column {e.colno})"
    raise ContrastkitError(f"{where} {problem}: repair or delete it")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` (an empty list when absent).

    A last line without its newline is a record torn by a crash mid-write: it is left out.
    Blank lines are skipped.

    Raises:
        ContrastkitError: naming the file and line of a complete line that is not UTF-8, not
            JSON or not a record (an object with ``kind``).
    """
    file = path / METRICS
    if not file.is_file():
        return []
    lines = file.read_bytes().split(b"\n")[:-1]  # the part after the last newline is torn
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _json(raw, f"{file} line {number}")
        if not isinstance(record, dict) or "kind" not in record:
            raise ContrastkitError(
                f"{file} line {number} is not a metrics record (a JSON object with a "
                '"kind"): repair or delete it'
            )
        records.append(record)
    return records


def knn_curve(path: Path) -> list[tuple[int, float]]:
    """(epoch, kNN test accuracy) pairs of a run: its monitor, closed by ``knn.json``.

    ``contrastkit run`` skips the monitor after the last epoch and computes ``knn.json`` from
    the same final weights instead; that value becomes the last point when it measured what
    the monitor measures: the run's k and t, and a bank as large as the run's training set
    (after ``--limit`` the monitor's bank is the subset, ``knn.json``'s the whole split). A k
    above the bank's size counts as the bank's size, which is what both used.
    """
    epochs = [r for r in read_metrics(path) if r["kind"] == "epoch"]
    curve = [(r["epoch"], r["knn_acc"]) for r in epochs if r.get("knn_acc") is not None]
    knn = read_json(path / "knn.json")
    if not epochs or epochs[-1].get("knn_acc") is not None or knn is None:
        return curve
    cfg = read_config(path)
    limit = cfg.get("limit")
    n_train = knn.get("n_train")

    def used(k: Any) -> Any:  # the kNN vote takes at most the bank's size of neighbours
        return min(k, n_train) if isinstance(k, int) and isinstance(n_train, int) else k

    same = used(knn.get("k")) == used(cfg.get("knn_k")) and knn.get("t") == cfg.get("knn_t")
    if same and (limit is None or (n_train is not None and limit >= n_train)):
        curve.append((epochs[-1]["epoch"], knn["test_acc"]))
    return curve


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only records up to ``step`` (used on resume: later ones are re-done).

    The file is rewritten atomically; a torn last line (:func:`read_metrics`) goes too.
    """
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    write_atomic(path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (:func:`write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """The content of a JSON file (``knn.json``, ``probe.json``…), None when it is absent.

    Raises:
        ContrastkitError: naming the file if it is not UTF-8 JSON.
    """
    return _json(path.read_bytes(), str(path)) if path.is_file() else None
