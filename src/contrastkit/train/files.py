"""Files a run writes and reads: atomic writes, JSON, and one-line file-system errors."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError


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


def decode_json(raw: bytes, where: str) -> Any:
    """Decode the UTF-8 JSON text ``raw`` read from ``where`` (a file, or a file's line)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        problem = f"is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})"
    except json.JSONDecodeError as e:
        problem = f"is not JSON ({e.msg} at column {e.colno})"
    raise ContrastkitError(f"{where} {problem}: repair or delete it")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (:func:`write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """The content of a JSON file (``knn.json``, ``probe.json``…), None when it is absent.

    Raises:
        ContrastkitError: naming the file if it is not UTF-8 JSON.
    """
    return decode_json(path.read_bytes(), str(path)) if path.is_file() else None
