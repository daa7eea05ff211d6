"""``contrastkit summarize``: mean ± std of each method over runs that differ only in the seed."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError
from contrastkit.train import files, rundir
from contrastkit.train.report import BASELINES, baseline_rows, check_scored, run_dirs, scored_row

SEED_FREE_KEYS = frozenset({"seed", "out", "quiet", "device", "knn_every", "tensorboard"})
"""Config keys that may differ between the runs averaged into one row of :func:`seed_summary`
(``knn_every`` only decides how often the monitor looks: the weights do not depend on it)."""

_SUMMARY_METRICS = (
    "seconds",
    "eval_seconds",
    "knn_acc",
    "probe_acc",
    "head_acc",
    "precision_at_1",
    "map_at_r",
)
_PROBE_KEYS = ("epochs", "lr", "weight_decay", "batch_size")
_ROW_KEYS = frozenset({"method", "model", "epochs"})
"""What names a row of :func:`seed_summary`: these cannot be pooled."""

Member = tuple[dict[str, Any], dict[str, Any]]
"""One run of a row: its recipe (what must be equal) and its measured figures."""


@dataclass
class _Collected:
    """The runs of a summary grouped by recipe, the baselines shown and the config keys seen."""

    groups: dict[str, list[Member]] = field(default_factory=dict)
    baselines: dict[tuple[str, ...], tuple[dict[str, Any], list[str]]] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)


def seed_summary(
    run_dirs_given: list[str | Path],
    pool: Sequence[str] = (),
    split: str = "test",
    data: str | None = None,
) -> dict[str, Any]:
    """Mean ± standard deviation of each method over runs that differ only in their seed.

    Every argument is a pretraining run directory or a ``contrastkit run`` directory (all its
    methods are taken). Runs are grouped by their config without the keys in
    :data:`SEED_FREE_KEYS` and ``pool``, plus the epochs completed and the probe's and kNN's
    settings; each group is one row. The standard deviation is the sample one (n - 1), shown
    for n ≥ 2.

    Args:
        run_dirs_given: the run directories.
        pool: further config keys whose values may differ within a row (e.g. ``precision``
            for seeds run in bfloat16 on one machine and float32 on another). The table says
            which value each seed had, under the rows; wall seconds of a pooled row mix
            whatever the pooled key changes.
        split: whose accuracies: ``test`` (``probe.json``…) or ``val`` (``probe_val.json``…,
            of runs with a validation split).
        data: the accuracies of the transfer to this data set instead (``probe-<data>.json``…,
            written by ``linear-probe``/``knn``/``retrieval RUN --data DATA``).

    Returns:
        ``{"rows": [...], "baselines": [...], "table": str}``: per row the method, model,
        epochs, seeds, n, ``(mean, std)`` of seconds, eval seconds, kNN, probe and CE-head
        accuracy, and of the retrieval's ``precision_at_1`` and ``map_at_r`` (from each
        run's ``retrieval.json``; the table's P@1 and MAP@R columns appear when a row has
        them) (None where a run lacks the value) and ``pooled`` (per pooled key that
        varies in the row, each value's seeds); the raw-pixel baselines that differ in
        what the table shows (one percentage digit; where they differ, each pair's label
        names the run directories it came from; only for the test split of the run's own data,
        which is where they were scored); the Markdown table, whose accuracy columns name the
        split or transfer when it is not the test split.

    Raises:
        ContrastkitError: if a directory holds no run, if two groups share method, model and
            epochs (their recipes differ in a key other than the seed: the error names it), if
            a group repeats a seed, or if ``pool`` names a row key (method, model, epochs) or
            a key that no run's config has, if ``split`` is not test or val, ``data`` is no
            data set name or is given with ``split="val"`` (a transfer is scored on its test
            split), or if, for the validation split or a transfer, no run has its kNN or
            probe file (a run that lacks them has – in its row).
    """
    check_scored(split, data)
    pool = list(dict.fromkeys(pool))
    bad = sorted(_ROW_KEYS.intersection(pool))
    if bad:
        raise ContrastkitError(
            f"cannot pool over {', '.join(bad)}: method, model and epochs name a row"
        )
    own_test = (split, data) == ("test", None)  # the raw-pixel baselines were scored there
    collected = _collect(run_dirs_given, pool, split, data, own_test)
    unknown = [k for k in pool if k not in collected.known]
    if unknown:
        raise ContrastkitError(
            f"cannot pool over {', '.join(unknown)}: no run's config has that key "
            f"(keys: {', '.join(sorted(collected.known))})"
        )
    if not own_test:
        _check_found(collected.groups, split, data)
    rows = _rows(collected.groups, pool)
    return {
        "rows": rows,
        "baselines": [b for b, _ in collected.baselines.values()],
        "table": _table(rows, collected.baselines, pool, "" if own_test else _scored(split, data)),
    }


def _check_found(groups: dict[str, list[Member]], split: str, data: str | None) -> None:
    """Refuse a validation or transfer summary when no run has any of its kNN and probe files."""
    members = [m for group in groups.values() for _, m in group]
    if any(m["probe_acc"] is not None or m["knn_acc"] is not None for m in members):
        return
    kinds = " or ".join(rundir.result_name(k, split, data) for k in ("probe", "knn"))
    given = f"--data {data}" if data is not None else f"--split {split}"
    how = (
        f"`contrastkit linear-probe RUN --data {data}` and `knn RUN --data {data}` write them"
        if data is not None
        else "runs pretrained with --val-fraction F write them"
    )
    raise ContrastkitError(f"{given}: none of the {len(members)} runs has {kinds} ({how})")


def _scored(split: str, data: str | None) -> str:
    """What the accuracy columns name when they are not the test split of the run's own data."""
    return f" ({data}, {split})" if data is not None else f" ({split})"


def _collect(
    given: list[str | Path], pool: list[str], split: str, data: str | None, own_test: bool
) -> _Collected:
    """Read every run under ``given`` once, grouped by what must be equal within a row."""
    out = _Collected()
    free = SEED_FREE_KEYS.union(pool)
    done: set[Path] = set()
    for d in given:
        root = Path(d)
        if not root.is_dir():
            raise ContrastkitError(f"run directory {root} does not exist")
        runs = run_dirs(root)
        if not runs:
            raise ContrastkitError(f"{root} holds no pretraining run")
        base = files.read_json(root / BASELINES)
        # one row pair per distinct shown result: lbfgs differs in far digits across threads
        if base is not None and own_test:
            shown = tuple(baseline_rows(base, extra=2))
            _, sources = out.baselines.setdefault(shown, (base, []))
            sources += [str(d)] if str(d) not in sources else []
        for run in runs:
            if run.resolve() in done:
                continue  # a directory given twice (or inside another one given) counts once
            done.add(run.resolve())
            recipe, measured = _member(run, free, pool, split, data)
            out.known.update(rundir.read_config(run))
            key = json.dumps(recipe, sort_keys=True, default=str)
            out.groups.setdefault(key, []).append((recipe, measured))
    return out


def _member(
    run: Path, free: frozenset[str], pool: list[str], split: str, data: str | None
) -> Member:
    """A run's recipe (its config but the free keys, the epochs done, probe and kNN settings)."""
    cfg = rundir.read_config(run)
    measured = scored_row(run, split, data)
    measured["pooled"] = {k: cfg.get(k) for k in pool}
    recipe = {k: v for k, v in cfg.items() if k not in free}
    recipe["epochs_done"] = measured["epochs"]
    for name, keys in (("probe", _PROBE_KEYS), ("knn", ("k", "t"))):
        found = files.read_json(run / f"{name}.json") or {}
        recipe.update({f"{name}_{k}": found.get(k) for k in keys})
    return recipe, measured


def _rows(groups: dict[str, list[Member]], pool: list[str]) -> list[dict[str, Any]]:
    """One row per group, refusing two groups with one name and a seed given twice."""
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for members in groups.values():
        recipe, first = members[0]
        ident = (first["method"], first["model"], first["epochs"])
        if ident in seen:
            other = seen[ident]
            diff = sorted(k for k in set(recipe) | set(other) if recipe.get(k) != other.get(k))
            raise ContrastkitError(
                f"runs of {first['method']} ({first['epochs']} epochs) differ in "
                f"{', '.join(diff)}, not only in the seed: summarise them separately "
                f"(or average over a key that does not matter with --pool {diff[0]})"
            )
        seen[ident] = recipe
        seeds = sorted(r["seed"] for _, r in members)
        if len(set(seeds)) < len(seeds):
            raise ContrastkitError(
                f"runs of {first['method']} repeat a seed ({', '.join(map(str, seeds))}): "
                "the same seed twice is not an independent sample"
            )
        row: dict[str, Any] = {
            "method": first["method"],
            "model": first["model"],
            "epochs": first["epochs"],
            "n": len(members),
            "seeds": seeds,
            "pooled": _pooled(members, pool),
        }
        for m in _SUMMARY_METRICS:
            values = [r.get(m) for _, r in members]
            row[m] = None if None in values else _mean_std(values)  # type: ignore[arg-type]
        rows.append(row)
    return rows


def _table(
    rows: list[dict[str, Any]],
    baselines: dict[tuple[str, ...], tuple[dict[str, Any], list[str]]],
    pool: list[str],
    scored: str = "",
) -> str:
    """The Markdown table of the rows, the baselines, and a note on the pooled keys.

    The retrieval columns (P@1, MAP@R) appear when a row has them; ``scored`` follows the
    accuracy columns' names (the split or transfer shown, when it is not the test split).
    """
    found = any(r["precision_at_1"] is not None for r in rows)
    lines = [
        f"| method | model | epochs | seeds | seconds | eval s | kNN acc %{scored} "
        f"| linear-probe acc %{scored} | own head acc %{scored} |"
        + (f" P@1 %{scored} | MAP@R %{scored} |" if found else ""),
        "|---|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if found else ""),
    ]
    for r in rows:
        retrieval = f" {_pm(r['precision_at_1'], 100, 2)} | {_pm(r['map_at_r'], 100, 2)} |"
        lines.append(
            f"| {r['method']} | {r['model']} | {r['epochs']} | "
            f"{', '.join(map(str, r['seeds']))} | {_pm(r['seconds'], 1, 0)} | "
            f"{_pm(r['eval_seconds'], 1, 0)} | {_pm(r['knn_acc'], 100, 2)} | "
            f"{_pm(r['probe_acc'], 100, 2)} | {_pm(r['head_acc'], 100, 2)} |"
            + (retrieval if found else "")
        )
    for b, sources in baselines.values():
        lines += baseline_rows(b, sources if len(baselines) > 1 else (), extra=2 if found else 0)
    notes = [
        f"{r['method']}: {key} " + "; ".join(f"{v} ({_seeds(s)})" for v, s in by.items())
        for r in rows
        for key, by in r["pooled"].items()
    ]
    if notes:
        lines += ["", "Pooled over " + ", ".join(pool) + ": " + " · ".join(notes) + "."]
    return "\n".join(lines)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def _pm(stat: tuple[float, float | None] | None, scale: float, digits: int) -> str:
    if stat is None:
        return "–"
    mean, std = stat
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def _seeds(seeds: list[Any]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _pooled(members: list[Member], pool: list[str]) -> dict[str, dict[str, list[Any]]]:
    """Per pooled key that takes more than one value in a row: each value (as text) → seeds."""
    out: dict[str, dict[str, list[Any]]] = {}
    for key in pool:
        by: dict[str, list[Any]] = {}
        for _, m in sorted(members, key=lambda rm: rm[1]["seed"]):
            by.setdefault(str(m["pooled"][key]), []).append(m["seed"])
        if len(by) > 1:
            out[key] = by
    return out
