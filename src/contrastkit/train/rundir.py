"""The run directory: resolved ``config.yaml`` with provenance, ``metrics.jsonl``, checkpoints.

Layout::

    RUN/config.yaml            resolved options + provenance (git SHA and dirty flag,
                               versions, seed, device)
    RUN/metrics.jsonl          one JSON object per line: kind "step" or "epoch"
    RUN/checkpoints/last.pt    full resume state (see contrastkit.train.checkpoint)
    RUN/probe.json, knn.json   evaluation results
    RUN/similarity.npz         a batch's similarity matrix and positive mask (for the plot)
    RUN/embeddings_test.npz    test features (for the t-SNE plot)
    RUN/plots/*.png, RUN/report.html
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoints/last.pt"
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


def prepare_run_dir(path: str | Path, *, resume: bool) -> Path:
    """Create ``path`` for a new run, or check that it holds a run to resume.

    Raises:
        ContrastkitError: if ``path`` exists (and is not empty) without ``resume`` — finished work
            is never overwritten — or ``resume`` is asked for a directory without a checkpoint.
    """
    path = Path(path)
    if resume:
        if not (path / CHECKPOINT).is_file():
            raise ContrastkitError(f"cannot resume: {path / CHECKPOINT} does not exist")
        return path
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ContrastkitError(
            f"run directory {path} already exists; pass --resume to continue it or choose "
            "another --out (finished work is never overwritten)"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(path: Path, config: dict[str, Any], prov: dict[str, Any]) -> None:
    """Write ``config.yaml``: the options, then the provenance under ``provenance:``."""
    import yaml

    text = yaml.safe_dump(config, sort_keys=False)
    text += yaml.safe_dump({PROVENANCE_KEY: prov}, sort_keys=False)
    (path / CONFIG).write_text(text)


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
        raise ContrastkitError(f"cannot resume: {out} holds no run (no {CONFIG})")
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
    """Append one JSON line to ``metrics.jsonl``."""
    with (path / METRICS).open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` (an empty list when absent)."""
    file = path / METRICS
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def knn_curve(path: Path) -> list[tuple[int, float]]:
    """(epoch, kNN test accuracy) pairs of a run: its monitor, closed by ``knn.json``.

    ``contrastkit run`` skips the monitor after the last epoch and computes ``knn.json`` from
    the same final weights instead; that value becomes the last point when it measured what
    the monitor measures: the run's k and t, and a bank as large as the run's training set
    (after ``--limit`` the monitor's bank is the subset, ``knn.json``'s the whole split).
    """
    epochs = [r for r in read_metrics(path) if r["kind"] == "epoch"]
    curve = [(r["epoch"], r["knn_acc"]) for r in epochs if r.get("knn_acc") is not None]
    knn = read_json(path / "knn.json")
    if not epochs or epochs[-1].get("knn_acc") is not None or knn is None:
        return curve
    cfg = read_config(path)
    limit = cfg.get("limit")
    same = knn.get("k") == cfg.get("knn_k") and knn.get("t") == cfg.get("knn_t")
    n_train = knn.get("n_train")
    if same and (limit is None or (n_train is not None and limit >= n_train)):
        curve.append((epochs[-1]["epoch"], knn["test_acc"]))
    return curve


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only records up to ``step`` (used on resume: later ones are re-done)."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    (path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in kept))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON."""
    path.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """The content of a JSON file (``knn.json``, ``probe.json``…), None when it is absent."""
    return json.loads(path.read_text()) if path.is_file() else None
