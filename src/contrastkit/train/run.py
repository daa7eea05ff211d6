"""``contrastkit run``: pretrain every method, evaluate it, print the table, write the report."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from contrastkit.data import resolve_dataset
from contrastkit.errors import ContrastkitError
from contrastkit.train import files, provenance, resume, rundir
from contrastkit.train.baselines import raw_pixel_baselines
from contrastkit.train.config import RunConfig, comma_list, from_dict, to_dict
from contrastkit.train.device import autocast_dtype, resolve_device
from contrastkit.train.evaluate import knn_and_probe
from contrastkit.train.pretrain import pretrain
from contrastkit.train.recipes import data_defaults
from contrastkit.train.report import BASELINES, build_report, format_table, method_row


def run(
    *,
    data: str | Dataset[tuple[Tensor, int]] | None = None,
    test_data: Dataset[tuple[Tensor, int]] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Pretrain, kNN-evaluate and linear-probe each method, then write table and report.

    A directory left by a start that never trained a method (killed or failed before its
    first checkpoint) is reused; the directory is locked while the run works in it
    (:func:`~contrastkit.train.rundir.open_run_dir`).

    Args:
        data: A registry name (default ``"digits"``) or a ``Dataset`` of ``(image, label)``
            (then pass ``test_data``).
        test_data: The labelled test ``Dataset`` when ``data`` is a ``Dataset`` (refused
            beside a registry name, which brings its own test split).
        **options: Fields of :class:`~contrastkit.train.config.RunConfig`. With
            ``resume=True`` the run's saved ``config.yaml`` in ``out`` supplies every option
            not given (also ``data``, for a registry name; a ``Dataset`` must be passed
            again); options given must agree with it except ``device`` and ``quiet``, so
            ``run(out=DIR, resume=True)`` continues it. ``methods`` given on a resume may
            add methods to the run's (trained with its saved options), not drop any.

    Returns:
        ``{"dir": path, "rows": [...], "baselines": {...}, "table": str}``.

    Raises:
        ContrastkitError: on bad options, an unknown method, a directory holding other work,
            ``test_data`` beside a registry name, a resume whose options differ from the
            run's, or a directory another process is using (naming it).
        OSError: on a file-system error, saying what failed on which path.
    """
    is_object = data is not None and not isinstance(data, str)
    if data is not None:  # the saved config names a Dataset object by a placeholder
        options = {**options, "data": data if isinstance(data, str) else rundir.CUSTOM_DATA}
    given_methods = options.get("methods")
    if isinstance(given_methods, list | tuple):  # a YAML list in a --config file
        given_methods = ",".join(str(m) for m in given_methods)
    if isinstance(given_methods, str):  # one spelling, no repeats, saved and compared on resume
        options["methods"] = ",".join(dict.fromkeys(comma_list(given_methods)))
    kept: list[str] = []  # on a resume, the run's methods
    added: list[str] = []  # and those the resume adds to them
    if options.get("resume"):
        given_methods = options.pop("methods", None)
        options = resume.resumed_options(options, "run", data_object=is_object)
        if not is_object:
            data = options["data"]
        kept = comma_list(options["methods"])
        if given_methods is not None:
            given = comma_list(given_methods)
            dropped = [m for m in kept if m not in given]
            if dropped:
                raise ContrastkitError(
                    f"cannot resume without the run's method(s) {', '.join(dropped)}: a resume "
                    f"may add methods to {options['methods']!r}, not drop them"
                )
            added = [m for m in given if m not in kept]
            options["methods"] = ",".join(kept + added)  # the run's order, then the new ones
    if data is None:
        data = options.setdefault("data", "digits")
    if isinstance(data, str) and test_data is not None:
        raise ContrastkitError(
            f"test_data= is for a Dataset object in data=; the registry data set {data!r} "
            "brings its own test split (pass both as Dataset objects to use another)"
        )
    if not isinstance(data, str) and test_data is None:
        raise ContrastkitError(
            "run with a Dataset object needs test_data= (a labelled test Dataset)"
        )
    cfg = from_dict(RunConfig, options)  # every option checked: nothing is created before
    methods = comma_list(cfg.methods)
    autocast_dtype(cfg.precision, resolve_device(cfg.device))  # fail before any work
    name = cfg.data if isinstance(data, str) else "dataset"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(cfg.out or f"runs/{name.replace(':', '-').replace('/', '-')}-{stamp}")
    train_src: Any = data
    kw = {"root": cfg.data_root, "download": cfg.download, "image_size": cfg.image_size}
    train = resolve_dataset(train_src, "train", **kw)  # type: ignore[arg-type]
    test = resolve_dataset(test_data if test_data is not None else train_src, "test", **kw)  # type: ignore[arg-type]
    own = (rundir.CONFIG, rundir.LOCK, BASELINES)  # what the root holds before any method
    with rundir.open_run_dir(root, resume=cfg.resume, own=own, sub_runs=True):
        if not cfg.resume:
            rundir.write_config(root, to_dict(cfg), provenance.provenance(cfg.device))
        if train.has_labels and test.has_labels and not (root / BASELINES).is_file():
            files.write_json(root / BASELINES, raw_pixel_baselines(train, test))
        _train_methods(root, cfg, data, test_data, kept, added)
        build_report(root)
    rows = [method_row(root / m) for m in methods]
    base = files.read_json(root / BASELINES)
    table = format_table(rows, base)
    return {"dir": root, "rows": rows, "baselines": base, "table": table}


def _train_methods(
    root: Path,
    cfg: RunConfig,
    data: str | Dataset[tuple[Tensor, int]],
    test_data: Dataset[tuple[Tensor, int]] | None,
    kept: list[str],
    added: list[str],
) -> None:
    """Pretrain and evaluate each method of ``cfg`` in ``root/<method>`` not done yet.

    A method directory with a checkpoint resumes; one without (a start stopped before its
    first checkpoint) starts over (:func:`~contrastkit.train.rundir.open_run_dir`).
    """
    name = cfg.data if isinstance(data, str) else "dataset"
    defaults = data_defaults(name)
    epochs = cfg.epochs or defaults["epochs"]
    batch_size = cfg.batch_size or defaults["batch_size"]

    common: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "model": cfg.model,
        "norm": cfg.norm,
        "optimizer": cfg.optimizer,
        "seed": cfg.seed,
        "device": cfg.device,
        "quiet": cfg.quiet,
        "limit": cfg.limit,
        "knn_k": cfg.knn_k or defaults["knn_k"],
        "knn_t": cfg.knn_t,
        "data_root": cfg.data_root,
        "image_size": cfg.image_size,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "warmup_epochs": cfg.warmup_epochs,
        "temperature": cfg.temperature,
        "augment": cfg.augment,
        "views": cfg.views,
        "proj_dim": cfg.proj_dim,
        "channels_last": cfg.channels_last,
        "precision": cfg.precision,
        "knn_every": cfg.knn_every,
    }
    common = {k: v for k, v in common.items() if v is not None}
    if added:
        _check_same_recipe(root, kept, common)
    eval_data: dict[str, Any] = (
        {} if isinstance(data, str) else {"train_data": data, "test_data": test_data}
    )
    for method in comma_list(cfg.methods):
        out = root / method
        done = (out / "probe.json").is_file() and (out / "knn.json").is_file()
        if done:
            continue
        resuming = (out / rundir.CHECKPOINT).is_file()
        # knn.json, computed right below from the final weights, closes the kNN curve; after
        # --limit the monitor's bank is the subset, so there the last epoch is monitored too
        pretrain(
            data=data,
            **({} if isinstance(data, str) else {"test_data": test_data}),
            final_knn=cfg.limit is not None,
            method=method,
            out=str(out),
            resume=resuming,
            # a resumed method keeps its saved options except those a resume may change
            **(
                {k: getattr(cfg, k) for k in resume.RESUME_MAY_CHANGE if k != "resume"}
                if resuming
                else common
            ),
        )
        knn_and_probe(
            out,
            device=cfg.device,
            probe_options={"epochs": cfg.probe_epochs, "quiet": cfg.quiet, "seed": cfg.seed},
            **eval_data,
        )
    if added:  # now trained: the run lists them (its provenance stays as first written)
        rundir.update_config(root, {"methods": cfg.methods})


def _check_same_recipe(root: Path, kept: list[str], common: dict[str, Any]) -> None:
    """Refuse to add methods to a run when its options now resolve to another recipe.

    The run's ``config.yaml`` leaves unset options (epochs, batch size, kNN k…) to the data
    set's defaults; if those changed since the run's methods trained, an added method would
    train differently. ``common`` (the options it will get) must equal what a method of the
    run recorded.
    """
    for method in kept:
        if not (root / method / rundir.CONFIG).is_file():
            continue
        saved = rundir.read_config(root / method)
        may_differ = resume.RESUME_MAY_CHANGE
        diff = [k for k, v in common.items() if k not in may_differ and saved.get(k, v) != v]
        if diff:
            raise ContrastkitError(
                f"cannot add methods to {root}: its {method} trained with "
                + ", ".join(f"{k}={saved[k]!r}" for k in diff)
                + " and these options now resolve to "
                + ", ".join(f"{k}={common[k]!r}" for k in diff)
                + " (changed defaults?); start another run"
            )
        return
