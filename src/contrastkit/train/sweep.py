"""``contrastkit sweep``: a resumable hyperparameter search on validation accuracy (Optuna).

The study lives in an Optuna RDB storage: a SQLite file in the sweep directory by default, any
SQLAlchemy URL (PostgreSQL…) for many machines. Every trial pretrains an ordinary run directory
``out/<study>/trial-NNNN`` with ``--val-fraction`` held out, reports its kNN-monitor accuracy on
validation after each epoch to a median pruner, and is scored on validation (kNN or linear
probe); the test split is never read.

Killed at any moment, the same command continues: finished trials are kept; a trial whose
process died stops beating its heartbeat and, ``2 × heartbeat`` seconds later, is marked failed
and queued again with the same parameters (``RetryHeartbeatStaleTrialCallback``); a trial
interrupted by Ctrl-C is queued again at once. A trial another live process runs keeps its
heartbeat and is never taken. Several processes on one storage share the work: each starts a
trial only while fewer than ``trials`` are finished or running, and a trial that finds that
``trials`` smaller-numbered ones are already finished or running gives its place up (it
ends FAIL, marked ``surplus``), so the study ends with exactly ``trials`` finished ones.
"""

from __future__ import annotations

import csv
import io
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contrastkit.errors import ContrastkitError
from contrastkit.train import files, recipes
from contrastkit.train.config import KnnConfig, ProbeConfig, SweepConfig, to_dict
from contrastkit.train.rules import flag
from contrastkit.train.space import Param, load_space

if TYPE_CHECKING:
    import optuna

FINISHED = ("COMPLETE", "PRUNED")
SUMMARY, SUMMARY_CSV, PLOT = "summary.md", "summary.csv", "sweep.png"


@dataclass
class SweepResult:
    """What :func:`sweep` returns.

    Attributes:
        dir: The study's directory (``out/<study>``): trials, summary table, plot.
        storage: The storage URL.
        finished: Number of finished (complete or pruned) trials.
        best_params: The best complete trial's parameters (None if none completed).
        best_value: Its validation accuracy.
        table: The Markdown summary table.
        best_trial: The best complete trial's number (None if none completed).
    """

    dir: Path
    storage: str
    finished: int
    best_params: dict[str, Any] | None
    best_value: float | None
    table: str
    best_trial: int | None = None

    @property
    def best_flags(self) -> str | None:
        """The best trial's parameters as command-line options (see :func:`option_flags`)."""
        return None if self.best_params is None else option_flags(self.best_params)


def option_flags(params: dict[str, Any]) -> str:
    """Options as they are typed after ``contrastkit run`` or ``pretrain``.

    ``{"lr": 0.12139, "augment": "shift-flip", "symmetric": False}`` gives
    ``--lr 0.1214 --augment shift-flip --no-symmetric``: floats to 4 significant digits (the
    trial's ``config.yaml`` holds the exact values), booleans as the flag or its ``--no-``.
    """
    out = []
    for name, value in params.items():
        if isinstance(value, bool):  # argparse's BooleanOptionalAction: --x / --no-x
            out.append(flag(name) if value else flag(f"no_{name}"))
        else:
            out.append(f"{flag(name)} {_cell(value)}")
    return " ".join(out)


class _Surplus(Exception):
    """A trial that found the study's ``trials`` already finished or running (see module doc)."""


def sweep_base(cfg: SweepConfig) -> tuple[SweepConfig, list[Param]]:
    """The sweep's config with its directory and recipe filled, and its checked space.

    Raises:
        ContrastkitError: on a bad space file (one line naming the key).
    """
    base = replace(cfg.pretrain, val_fraction=cfg.val_fraction, out=None)
    base = recipes.with_data_defaults(base)
    out = cfg.out or f"runs/sweep-{base.data.replace(':', '-').replace('/', '-')}-{base.method}"
    if not cfg.space:
        raise ContrastkitError("--space (space) is required: a YAML file of the options to search")
    params = load_space(cfg.space, base)
    return replace(cfg, out=out, pretrain=base), params


def sweep(config: SweepConfig) -> SweepResult:
    """Search the space of ``config`` until the study has ``config.trials`` finished trials.

    The same call continues a killed sweep (see the module's description); several processes
    given the same storage and study share its trials.

    Args:
        config: The pretrain options every trial shares, the space file, the number of
            trials, the storage, study name, objective and sweep directory.

    Returns:
        The study directory, storage, finished count, best parameters and value, summary table.

    Raises:
        ContrastkitError: on a bad space file or storage URL, or a study in that storage that
            was created with another space or other options (before any trial runs).
        OSError: on a file-system error, naming the path.
    """
    cfg, params = sweep_base(config)
    root = Path(str(cfg.out))
    out = root / cfg.study
    if cfg.storage is None:  # the default SQLite file lives in the sweep directory
        _mkdir(root)
    storage = cfg.storage or f"sqlite:///{(root / 'sweep.db').resolve()}"
    study = _open_study(cfg, params, storage)
    _mkdir(out)
    objective = _objective(cfg, params, out, study)
    while True:
        _fail_stale(study)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        done = sum(s in FINISHED for s in states)
        if done >= cfg.trials:
            break
        if done + states.count("RUNNING") >= cfg.trials:  # the others finish or go stale
            time.sleep(min(cfg.heartbeat, 5))
            continue
        study.sampler = _sampler(cfg.pretrain.seed, len(states))
        study.optimize(objective, n_trials=1, catch=(_Surplus,), gc_after_trial=False)
    return _summarise(study, params, out, storage)


def _mkdir(path: Path) -> None:
    with files.os_errors("create directory", path):
        path.mkdir(parents=True, exist_ok=True)


def _open_study(cfg: SweepConfig, params: list[Param], storage: str) -> optuna.Study:
    """Create or load the study; refuse one created with another space or other options."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # errors reach the CLI itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    kw: dict[str, Any] = {}
    if storage.startswith("sqlite"):  # processes sharing the file wait for its lock
        kw["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        rdb = RDBStorage(
            storage,
            heartbeat_interval=cfg.heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
            **kw,
        )
    except Exception as e:  # SQLAlchemy's errors for a bad URL or an unreachable database
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ContrastkitError(
            f"--storage (storage) {storage!r} cannot be opened: {first}"
        ) from None
    study = optuna.create_study(
        storage=rdb,
        study_name=cfg.study,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=_warmup(cfg)),
    )
    recorded = _recorded(cfg, params)
    for key, value in recorded.items():
        saved = study.user_attrs.get(key)
        if saved is None:
            study.set_user_attr(key, value)
        elif saved != value:
            raise ContrastkitError(
                f"study {cfg.study!r} in {storage} was created with another {key} ({saved}); "
                f"give the same options, or another --study or --out"
            )
    return study


def _warmup(cfg: SweepConfig) -> int:
    """Epochs before a trial may be pruned: a third of the run's.

    The first epochs, in the learning-rate warm-up, say little of the end: with pruning from
    epoch 1, a digits sweep pruned 3 of 10 trials after their first epoch.
    """
    return max(1, (cfg.pretrain.epochs or 3) // 3)


def _recorded(cfg: SweepConfig, params: list[Param]) -> dict[str, Any]:
    """What a study keeps of its creation, to refuse a continuation that changed it."""
    options = {k: v for k, v in to_dict(cfg.pretrain).items() if k not in ("quiet", "device")}
    options.update(objective=cfg.objective, probe=asdict(cfg.probe))
    return {"space": {p.name: p.describe() for p in params}, "options": _jsonable(options)}


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(value, sort_keys=True))


def _fail_stale(study: optuna.Study) -> None:
    """Fail the trials whose process stopped beating (and queue them again)."""
    import optuna

    optuna.storages.fail_stale_trials(study)


def _sampler(seed: int, n: int) -> optuna.samplers.BaseSampler:
    """TPE seeded by (seed, trials so far): a restarted process does not repeat the draws."""
    import optuna

    state = int(np.random.SeedSequence([seed, n]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=state)


def _objective(
    cfg: SweepConfig, params: list[Param], out: Path, study: optuna.Study
) -> Callable[[optuna.Trial], float]:
    """The function a trial runs: pretrain its run directory, score it on validation."""
    from contrastkit.train.pretrain import pretrain

    def objective(trial: optuna.Trial) -> float:
        _check_surplus(study, trial, cfg.trials)
        values = {p.name: p.suggest(trial) for p in params}
        run_dir = out / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("pid", os.getpid())
        run_cfg = recipes.resolve(replace(cfg.pretrain, **values, out=str(run_dir)))
        try:
            pretrain(run_cfg, on_epoch=_pruning(trial))
            return _score(cfg, run_dir)
        except KeyboardInterrupt:  # Optuna marks it FAIL: queue its parameters again
            study.enqueue_trial(trial.params, user_attrs={"redo_of": trial.number})
            raise

    return objective


def _check_surplus(study: optuna.Study, trial: optuna.Trial, trials: int) -> None:
    """Give the place up if ``trials`` earlier trials are finished or running."""
    ahead = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number < trial.number and t.state.name in (*FINISHED, "RUNNING")
    ]
    if len(ahead) >= trials:
        trial.set_user_attr("surplus", True)
        raise _Surplus(f"trial {trial.number}: the study already has {trials} trials")


def _pruning(trial: optuna.Trial) -> Callable[[int, float | None], None]:
    import optuna

    def on_epoch(epoch: int, acc: float | None) -> None:
        if acc is None:
            return
        trial.report(acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: kNN validation accuracy {acc:.4f}")

    return on_epoch


def _score(cfg: SweepConfig, run_dir: Path) -> float:
    """Validation accuracy of the finished run: kNN or linear probe (``knn_val.json``…)."""
    from contrastkit.train.evaluate import knn, linear_probe

    device = cfg.pretrain.device
    if cfg.objective == "knn":
        return float(knn(KnnConfig(run_dir=str(run_dir), split="val", device=device))["val_acc"])
    probe = ProbeConfig(
        **asdict(cfg.probe),
        run_dir=str(run_dir),
        split="val",
        seed=cfg.pretrain.seed,
        device=device,
        quiet=cfg.pretrain.quiet,
    )
    return float(linear_probe(probe)["val_acc"])


# --- the summary ---------------------------------------------------------------------------------


def _rows(study: optuna.Study, params: list[Param]) -> list[dict[str, Any]]:
    """One row per finished trial, by number: state, validation accuracy, parameters, run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in FINISHED:
            continue
        value = t.value if t.state.name == "COMPLETE" else None
        last = max(t.intermediate_values) if t.intermediate_values else None
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "val_acc": value,
            "last_knn_val_acc": t.intermediate_values[last] if last is not None else None,
            "epochs": last,
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None,
        }
        row.update({p.name: t.params.get(p.name) for p in params})
        row["run_dir"] = t.user_attrs.get("run_dir")
        rows.append(row)
    return rows


def _cell(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.2f}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_table(rows: list[dict[str, Any]], params: list[Param], objective: str) -> str:
    """A Markdown table of the finished trials, best complete one first."""
    names = [p.name for p in params]
    head = ["trial", "state", f"{objective} val acc %", "last kNN val %", "epochs", "seconds"]
    lines = ["| " + " | ".join(head + names) + " |", "|" + "---|" * (len(head) + len(names))]
    order = sorted(rows, key=lambda r: (r["val_acc"] is None, -(r["val_acc"] or 0), r["trial"]))
    for r in order:
        cells = [str(r["trial"]), r["state"], _cell(r["val_acc"], True)]
        cells += [_cell(r["last_knn_val_acc"], True), _cell(r["epochs"]), _cell(r["seconds"])]
        cells += [_cell(r[n]) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summarise(study: optuna.Study, params: list[Param], out: Path, storage: str) -> SweepResult:
    """Write ``summary.md``, ``summary.csv`` and ``sweep.png``; return the result."""
    from contrastkit.train.files import write_atomic
    from contrastkit.train.plots import plot_sweep

    rows = _rows(study, params)
    objective = str(study.user_attrs.get("options", {}).get("objective", "knn"))
    table = summary_table(rows, params, objective)
    complete = [r for r in rows if r["val_acc"] is not None]
    best = max(complete, key=lambda r: r["val_acc"]) if complete else None
    best_params = {p.name: best[p.name] for p in params} if best else None
    footer = (
        f"\nBest: trial {best['trial']}, {objective} accuracy on validation "
        f"{_cell(best['val_acc'], True)} %: `{option_flags(best_params or {})}`\n"
        if best
        else ""
    )
    write_atomic(out / SUMMARY, table + "\n" + footer)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(out / SUMMARY_CSV, buf.getvalue())
    plot_sweep(rows, params, out / PLOT)
    value = best["val_acc"] if best else None
    number = best["trial"] if best else None
    return SweepResult(out, storage, len(rows), best_params, value, table, number)
