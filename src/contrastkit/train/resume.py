"""Resuming a run: the one place that decides what a resume may change and what it must keep.

A run directory says which command wrote it (``config.yaml``'s provenance, ``command``). A
resume continues the run with its saved options; options given again must equal them, except
those in :data:`RESUME_MAY_CHANGE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError
from contrastkit.train.rundir import CONFIG, CUSTOM_DATA, read_config, unstarted_entries

RESUME_MAY_CHANGE = ("resume", "quiet", "device")
"""Options that a resume may give differently from the run's saved config."""


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
