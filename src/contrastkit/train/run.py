"""``contrastkit run``: pretrain every method, evaluate it, print the table, write the report."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from contrastkit.data import resolve_dataset
from contrastkit.data.registry import Split
from contrastkit.errors import ContrastkitError
from contrastkit.train import files, pretrain, provenance, recipes, resume, rundir
from contrastkit.train.baselines import raw_pixel_baselines
from contrastkit.train.config import ProbeConfig, RunConfig, to_dict
from contrastkit.train.device import autocast_dtype, resolve_device
from contrastkit.train.evaluate import evaluate_splits
from contrastkit.train.lock import LOCK
from contrastkit.train.pretrain import DataArg
from contrastkit.train.report import BASELINES, build_report, format_table, method_row


@dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        dir: The run directory (one sub-directory per method).
        rows: One row per method (:func:`~contrastkit.train.report.method_row`).
        baselines: The raw-pixel baselines (None for unlabelled data).
        table: The Markdown results table.
    """

    dir: Path
    rows: list[dict[str, Any]]
    baselines: dict[str, Any] | None
    table: str


def run(
    config: RunConfig | None = None,
    *,
    data: DataArg | None = None,
    test_data: DataArg | None = None,
) -> RunResult:
    """Pretrain, kNN-evaluate and linear-probe each method, then write table and report.

    A directory left by a start that never trained a method (killed or failed before its
    first checkpoint) is reused; the directory is locked while the run works in it
    (:func:`~contrastkit.train.rundir.open_run_dir`). :func:`contrastkit.resume` continues a
    run, and may add methods to it.

    Args:
        config: The methods, the one pretraining recipe they share and the probe's settings
            (default: ``RunConfig()``, SimCLR, SupCon and cross-entropy on the digits).
        data: A ``Dataset`` of ``(image, label)`` to train on instead of ``config``'s data set
            (then pass ``test_data``).
        test_data: The labelled test ``Dataset`` beside ``data``.

    Returns:
        The directory, one row per method, the raw-pixel baselines and the table.

    Raises:
        ContrastkitError: on bad options or data, a directory holding other work, or a
            directory another process is using (naming it).
        OSError: on a file-system error, saying what failed on which path.
    """
    cfg = config if config is not None else RunConfig()
    recipe = pretrain.with_data_object(cfg.pretrain, data, test_data)
    if data is not None and test_data is None:
        raise ContrastkitError(
            "run with a Dataset object needs test_data= (a labelled test Dataset)"
        )
    if recipe.out is None:
        recipe = replace(recipe, out=recipes.default_out(recipe.data))
    cfg = replace(cfg, pretrain=recipe)
    autocast_dtype(recipe.precision, resolve_device(recipe.device))  # fail before any work
    return _run(cfg, [], data, test_data, resume=False)


def continue_run(
    root: Path,
    cfg: RunConfig,
    added: list[str],
    *,
    data: DataArg | None,
    test_data: DataArg | None,
) -> RunResult:
    """Continue the ``run`` directory ``root`` with its saved ``cfg``, adding methods ``added``.

    Called by :func:`contrastkit.resume`, which checked the options against the saved ones.
    """
    cfg = replace(cfg, pretrain=replace(cfg.pretrain, out=str(root)))
    return _run(cfg, added, data, test_data, resume=True)


def _run(
    cfg: RunConfig,
    added: list[str],
    data: DataArg | None,
    test_data: DataArg | None,
    *,
    resume: bool,
) -> RunResult:
    """Take the directory, write config and baselines, train what is missing, report."""
    root = Path(str(cfg.pretrain.out))
    train, test = _splits(cfg, data, test_data)
    own = (rundir.CONFIG, LOCK, BASELINES)  # what the root holds before any method
    with rundir.open_run_dir(root, resume=resume, own=own, sub_runs=True):
        if not resume:
            prov = provenance.provenance(cfg.pretrain.device)
            rundir.write_config(root, to_dict(cfg), prov, command="run")
        if train.has_labels and test.has_labels and not (root / BASELINES).is_file():
            found = raw_pixel_baselines(train, test, val_fraction=cfg.pretrain.val_fraction)
            files.write_json(root / BASELINES, found)
        _train_methods(root, cfg, added, data, test_data)
        build_report(root)
    rows = [method_row(root / m) for m in cfg.methods]
    base = files.read_json(root / BASELINES)
    return RunResult(root, rows, base, format_table(rows, base))


def _splits(cfg: RunConfig, data: DataArg | None, test_data: DataArg | None) -> tuple[Split, Split]:
    """The training and test splits, for the raw-pixel baselines."""
    if data is not None and test_data is not None:
        return resolve_dataset(data, "train"), resolve_dataset(test_data, "test")
    p = cfg.pretrain
    kw: dict[str, Any] = {"root": p.data_root, "download": p.download, "image_size": p.image_size}
    return resolve_dataset(p.data, "train", **kw), resolve_dataset(p.data, "test", **kw)


def _train_methods(
    root: Path,
    cfg: RunConfig,
    added: list[str],
    data: DataArg | None,
    test_data: DataArg | None,
) -> None:
    """Pretrain and evaluate each method of ``cfg`` in ``root/<method>`` not done yet.

    A method directory with a checkpoint resumes with its saved options; one without (a start
    stopped before its first checkpoint) starts over with the run's recipe.
    """
    recipe = recipes.with_data_defaults(cfg.pretrain)
    if added:
        resume.check_same_recipe(root, [m for m in cfg.methods if m not in added], recipe)
    source = data if data is not None else recipe.data
    for i, method in enumerate(cfg.methods, 1):
        out = root / method
        if all((out / rundir.result_name(k, "test")).is_file() for k in ("probe", "knn")):
            continue
        resuming = (out / rundir.CHECKPOINT).is_file()
        if not recipe.quiet:
            verb = "resuming" if resuming else "starting"
            print(f"run: {verb} {method} ({i}/{len(cfg.methods)}) in {out}", file=sys.stderr)
        if resuming:
            method_cfg = resume.method_options(out, cfg)
        else:
            method_cfg = recipes.resolve(recipes.for_method(recipe, method, str(out)))
        # knn.json, computed right below from the final weights, closes the kNN curve; after
        # --limit the monitor's bank is the subset, and with --val-fraction it scores the
        # validation split, so there the last epoch is monitored too
        final_knn = recipe.limit is not None or recipe.val_fraction > 0
        pretrain.train(method_cfg, source, test_data, final_knn, resume=resuming)
        # validation first (what a choice would read), then the test split, once; one probe,
        # trained once on the training features, scores both
        probe = ProbeConfig(
            **dataclasses.asdict(cfg.probe),
            run_dir=str(out),
            seed=recipe.seed,
            device=recipe.device,
            quiet=recipe.quiet,
        )
        splits = ["val", "test"] if recipe.val_fraction > 0 else ["test"]
        evaluate_splits(out, splits, probe=probe, train_data=data, test_data=test_data)
    if added:  # now trained: the run lists them (its provenance stays as first written)
        rundir.update_config(root, {"method": cfg.method})
