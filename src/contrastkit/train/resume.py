"""Resuming a run: the one place that decides what a resume may change and what it must keep.

A run directory says which command wrote it (``command`` in its ``config.yaml``'s provenance):
a ``pretrain`` run, or a ``contrastkit run`` directory holding one pretraining run per method.
:func:`resume` continues either with its saved options. Options given again must equal the
saved ones, except those in :data:`RESUME_MAY_CHANGE`; a ``run`` may be given more methods
(trained with the run's recipe), never fewer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contrastkit.errors import ContrastkitError
from contrastkit.train import rundir
from contrastkit.train.config import CUSTOM_DATA, PretrainConfig, RunConfig, comma_list, from_dict

if TYPE_CHECKING:
    from contrastkit.train.pretrain import DataArg, PretrainResult
    from contrastkit.train.run import RunResult

RESUME_MAY_CHANGE = ("quiet", "device", "tensorboard", "workers", "save_every")
"""Options that a resume may give differently from the run's saved config."""

KINDS = {"pretrain": "`contrastkit pretrain` run", "run": "`contrastkit run` directory"}
"""What each command writes, in messages."""


def resume(
    run_dir: str | Path,
    *,
    data: DataArg | None = None,
    test_data: DataArg | None = None,
    device: str | None = None,
    quiet: bool | None = None,
    method: str | None = None,
) -> PretrainResult | RunResult:
    """Continue the run in ``run_dir`` (``pretrain`` or ``run``) with its saved options.

    A run killed at any point continues from its last checkpoint, bit-exactly; one stopped
    before its first checkpoint starts over; a finished one returns its results.

    Args:
        run_dir: A directory written by :func:`~contrastkit.pretrain` or :func:`~contrastkit.run`.
        data: The ``Dataset`` object the run trained on, if it did (it cannot be saved).
        test_data: Its labelled test ``Dataset``.
        device: Another device to continue on (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        quiet: Hide (or show) progress bars.
        method: For a ``run`` directory: its methods plus new ones to add (comma-separated).

    Returns:
        The :class:`~contrastkit.train.pretrain.PretrainResult` of a pretraining run, the
        :class:`~contrastkit.train.run.RunResult` of a ``run`` directory.

    Raises:
        ContrastkitError: if ``run_dir`` holds no run, on a method dropped or unknown, or if
            the ``Dataset`` objects given do not match what the run used.
    """
    given: dict[str, Any] = {"device": device, "quiet": quiet, "method": method}
    return resume_with(
        run_dir, {k: v for k, v in given.items() if v is not None}, data=data, test_data=test_data
    )


def resume_with(
    run_dir: str | Path,
    given: Mapping[str, Any],
    *,
    command: str | None = None,
    data: DataArg | None = None,
    test_data: DataArg | None = None,
) -> PretrainResult | RunResult:
    """:func:`resume` with the options of a command line (``contrastkit pretrain --resume ...``).

    Args:
        run_dir: The run directory.
        given: The options given with the resume (flat names); each must equal the saved one
            unless a resume may change it.
        command: The command resuming (``pretrain`` or ``run``); None accepts either.
        data: The ``Dataset`` object the run trained on, if it did.
        test_data: Its labelled test ``Dataset``.

    Raises:
        ContrastkitError: as :func:`resume`, when ``command`` did not write ``run_dir``, and
            on a data set's name in ``data`` or ``test_data`` (a run reads it from its config).
    """
    from contrastkit.train.pretrain import check_data_objects

    check_data_objects(data, test_data)
    path = Path(run_dir)
    kind = written_by(path)
    if command is not None and kind != command:
        raise ContrastkitError(
            f"{path} is a {KINDS[kind]}, not a {KINDS[command]}: resume it with "
            f"`contrastkit {kind} --out {path} --resume`"
            + (" (or one method's subdirectory with pretrain)" if kind == "run" else "")
        )
    if kind == "pretrain":
        from contrastkit.train import pretrain

        pretrain_cfg = from_dict(PretrainConfig, saved_options(path, given, data is not None))
        source = data if data is not None else pretrain_cfg.data
        return pretrain.train(pretrain_cfg, source, test_data, final_knn=True, resume=True)
    from contrastkit.train import run

    saved = saved_options(path, {k: v for k, v in given.items() if k != "method"}, data is not None)
    kept = comma_list(str(saved["method"]))
    added = _added_methods(kept, given.get("method"))
    cfg = from_dict(RunConfig, {**saved, "method": ",".join(kept + added)})
    return run.continue_run(path, cfg, added, data=data, test_data=test_data)


def written_by(path: Path) -> str:
    """``pretrain`` or ``run``: the command that wrote the run directory ``path``.

    Raises:
        ContrastkitError: if ``path`` holds no run, or its ``config.yaml`` does not say.
    """
    if not (path / rundir.CONFIG).is_file():
        never = path.is_dir() and not rundir.unstarted_entries(path)
        raise ContrastkitError(
            f"cannot resume: {path} holds no run (no {rundir.CONFIG})"
            + ("; it was stopped before it began: start it again without --resume" if never else "")
        )
    command = rundir.read_provenance(path).get("command")
    if command not in KINDS:
        raise ContrastkitError(
            f"cannot resume {path}: its {rundir.CONFIG} does not say which command wrote it "
            "(no provenance: command); start a new run"
        )
    return str(command)


def saved_options(path: Path, given: Mapping[str, Any], data_object: bool) -> dict[str, Any]:
    """The options that continue the run in ``path``: its saved ones and those a resume changes.

    ``out`` becomes ``path`` (the directory may have moved since it was written). A run on a
    ``Dataset`` object (saved ``data`` is :data:`CUSTOM_DATA`) resumes only with an object
    given again, and an object resumes only such a run.

    Raises:
        ContrastkitError: on a given option that differs from the saved one (or that the run
            does not record), or a ``Dataset`` object where the run used a data set or the
            reverse.
    """
    saved = rundir.read_config(path)
    if data_object and saved.get("data") != CUSTOM_DATA:
        raise ContrastkitError(
            f"{path} was run on the data set {saved.get('data')!r}, not on a Dataset object: "
            "resume it without data="
        )
    if not data_object and saved.get("data") == CUSTOM_DATA:
        raise ContrastkitError(
            f"{path} was run on a Dataset object: pass it again as data= (with its test set "
            "as test_data=) to resume"
        )
    compared = [k for k in given if k not in (*RESUME_MAY_CHANGE, "out")]
    unrecorded = [k for k in compared if k not in saved]
    if unrecorded:
        raise ContrastkitError(
            f"cannot resume with {', '.join(unrecorded)}: the run's {rundir.CONFIG} does not "
            "record them; resume without them"
        )
    diff = [k for k in compared if saved[k] != given[k]]
    if diff:
        raise ContrastkitError(
            "cannot resume with different options: "
            + ", ".join(f"{k}={given[k]!r} (run has {saved[k]!r})" for k in diff)
        )
    may_change = {k: given[k] for k in RESUME_MAY_CHANGE if k in given}
    return {**saved, **may_change, "out": str(path)}


def _added_methods(kept: list[str], given: Any) -> list[str]:
    """The methods ``given`` adds to a run's ``kept`` ones (all of which it must name)."""
    if given is None:
        return []
    names = comma_list(",".join(given) if isinstance(given, list | tuple) else str(given))
    dropped = [m for m in kept if m not in names]
    if dropped:
        raise ContrastkitError(
            f"cannot resume without the run's method(s) {', '.join(dropped)}: a resume may add "
            f"methods to {','.join(kept)!r}, not drop them"
        )
    return [m for m in dict.fromkeys(names) if m not in kept]


def method_options(method_dir: Path, run: RunConfig) -> PretrainConfig:
    """The saved config of one method of a ``run``, with the options the run may change."""
    may_change = {k: getattr(run.pretrain, k) for k in RESUME_MAY_CHANGE}
    saved = rundir.read_config(method_dir)
    return from_dict(PretrainConfig, {**saved, **may_change, "out": str(method_dir)})


def check_same_recipe(root: Path, kept: list[str], recipe: PretrainConfig) -> None:
    """Refuse to add methods to a run when its options now resolve to another recipe.

    The run's ``config.yaml`` leaves unset options (epochs, batch size, kNN k…) to the data
    set's defaults; if those changed since the run's methods trained, an added method would
    train differently. Every option of ``recipe`` (the run's, with the data set's defaults) that
    is set must equal what a trained method of the run recorded.

    Raises:
        ContrastkitError: naming the options that differ.
    """
    from contrastkit.train.config import to_dict

    common = {k: v for k, v in to_dict(recipe).items() if v is not None}
    skip = {*RESUME_MAY_CHANGE, "method", "out"}
    for method in kept:
        if not (root / method / rundir.CONFIG).is_file():
            continue
        saved = rundir.read_config(root / method)
        diff = [k for k, v in common.items() if k not in skip and saved.get(k, v) != v]
        if diff:
            raise ContrastkitError(
                f"cannot add methods to {root}: its {method} trained with "
                + ", ".join(f"{k}={saved[k]!r}" for k in diff)
                + " and these options now resolve to "
                + ", ".join(f"{k}={common[k]!r}" for k in diff)
                + " (changed defaults?); start another run"
            )
        return
