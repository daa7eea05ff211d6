"""The run directory's lock: one process at a time trains in a run directory."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
from datetime import datetime
from pathlib import Path

from contrastkit.errors import ContrastkitError
from contrastkit.train.files import os_errors

LOCK = ".lock"
"""The lock file's name in a run directory."""


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

_HELD: set[int] = set()
"""File descriptors of the locks this process holds."""


def _drop_in_child() -> None:
    """Close a forked child's copies of its parent's lock descriptors.

    ``flock`` locks belong to the open file, which a fork shares: a child that keeps its copy
    (a DataLoader worker, which outlives a ``kill -9`` of its parent by up to a few seconds)
    would hold the run directory after its parent died. Closing the copy (never ``LOCK_UN``,
    which would unlock the parent's file too) leaves the lock to the process that took it.
    """
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)


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
    ``kill -9``: no lock outlives its holder (the file stays, and is reused). Forked children
    (DataLoader workers) close their copy at once, so they never hold it. While held, the
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
        _HELD.add(fd)

    def release(self) -> None:
        """Drop the lock (closing the file); a second call does nothing."""
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
