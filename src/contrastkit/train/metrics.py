"""``metrics.jsonl``: one JSON record per step and per epoch, appended as training goes.

It is a write-ahead log: a crash mid-write leaves a last line without its newline, which
:func:`read_metrics` ignores and a resume drops (:func:`truncate_metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError
from contrastkit.train.files import decode_json, os_errors, read_json, write_atomic

METRICS = "metrics.jsonl"


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
        record = decode_json(raw, f"{file} line {number}")
        if not isinstance(record, dict) or "kind" not in record:
            raise ContrastkitError(
                f"{file} line {number} is not a metrics record (a JSON object with a "
                '"kind"): repair or delete it'
            )
        records.append(record)
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only records up to ``step`` (used on resume: later ones are re-done).

    The file is rewritten atomically; a torn last line (:func:`read_metrics`) goes too.
    """
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    write_atomic(path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def knn_curve(path: Path) -> list[tuple[int, float]]:
    """(epoch, kNN accuracy) pairs of a run: its monitor, closed by ``knn.json``.

    The monitor scores the test split, or the validation split of a run with
    ``val_fraction`` > 0 (whose curve ``knn.json``, of the test split, never closes).

    ``contrastkit run`` skips the monitor after the last epoch and computes ``knn.json`` from
    the same final weights instead; that value becomes the last point when it measured what
    the monitor measures: the run's k and t, and a bank as large as the run's training set
    (after ``--limit`` the monitor's bank is the subset, ``knn.json``'s the whole split). A k
    above the bank's size counts as the bank's size, which is what both used.
    """
    epochs = [r for r in read_metrics(path) if r["kind"] == "epoch"]
    curve = [(r["epoch"], r["knn_acc"]) for r in epochs if r.get("knn_acc") is not None]
    from contrastkit.train.rundir import read_config, result_name  # rundir imports this module

    knn = read_json(path / result_name("knn", "test"))
    if not epochs or epochs[-1].get("knn_acc") is not None or knn is None:
        return curve

    cfg = read_config(path)
    if cfg.get("val_fraction"):  # the monitor scored validation: knn.json is of the test split
        return curve
    limit = cfg.get("limit")
    n_train = knn.get("n_train")

    def used(k: Any) -> Any:  # the kNN vote takes at most the bank's size of neighbours
        return min(k, n_train) if isinstance(k, int) and isinstance(n_train, int) else k

    same = used(knn.get("k")) == used(cfg.get("knn_k")) and knn.get("t") == cfg.get("knn_t")
    if same and (limit is None or (n_train is not None and limit >= n_train)):
        curve.append((epochs[-1]["epoch"], knn["test_acc"]))
    return curve
