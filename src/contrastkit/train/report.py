"""The results table and ``report.html``, rebuilt from the files of a run directory alone."""

from __future__ import annotations

import base64
import html
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError
from contrastkit.train import files, metrics, plots, rundir
from contrastkit.train.config import comma_list

BASELINES = "baselines.json"
RESULTS = "results.json"


def method_row(run: Path) -> dict[str, Any]:
    """One table row from a pretraining run directory: method, epochs, seconds, kNN, probe.

    ``seconds`` is the pretraining wall time (with the kNN monitor); ``eval_seconds`` that of
    the final kNN and linear probe (None until both ran, or for runs written before they were
    timed). Without ``knn.json`` the kNN cell is the monitor's after the last epoch, if any.
    """
    cfg = rundir.read_config(run)
    epochs = [r for r in metrics.read_metrics(run) if r["kind"] == "epoch"]
    knn = files.read_json(run / "knn.json")
    probe = files.read_json(run / "probe.json")
    evals = [d.get("seconds") if d else None for d in (knn, probe)]
    monitor = epochs[-1].get("knn_acc") if epochs else None  # of the final weights only
    return {
        "method": cfg["method"],
        "model": cfg.get("model"),
        "epochs": epochs[-1]["epoch"] if epochs else 0,
        "seconds": epochs[-1]["elapsed"] if epochs else 0.0,
        "cpu_seconds": epochs[-1].get("cpu_elapsed") if epochs else None,
        "knn_acc": knn["test_acc"] if knn else monitor,
        "probe_acc": probe["test_acc"] if probe else None,
        "probe_train_acc": probe["train_acc"] if probe else None,
        "head_acc": probe.get("head_test_acc") if probe else None,
        "eval_seconds": None if None in evals else sum(evals),
        "seed": cfg.get("seed"),
        "dir": run.name,
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def format_table(rows: list[dict[str, Any]], baselines: dict[str, Any] | None) -> str:
    """A Markdown table: method, epochs, seconds, kNN, probe and CE-head accuracy (%).

    "seconds" is the pretraining wall time, "CPU s" its process time over all threads (the
    work done, when the machine is shared and wall time is inflated by other jobs), "eval s"
    the wall time of the final kNN and linear probe.
    """
    lines = [
        "| method | model | epochs | seconds | CPU s | eval s | kNN acc % | linear-probe acc % | own head acc % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['model']} | {r['epochs']} | {r['seconds']:.0f} | "
            f"{_secs(r['cpu_seconds'])} | {_secs(r.get('eval_seconds'))} | "
            f"{_pct(r['knn_acc'])} | {_pct(r['probe_acc'])} | {_pct(r.get('head_acc'))} |"
        )
    if baselines:
        lines += _baseline_rows(baselines)
    return "\n".join(lines)


def _baseline_rows(b: dict[str, Any], runs: Sequence[str] = ()) -> list[str]:
    """The raw-pixel rows of a 9-column results table (probe and kNN columns 8 and 7).

    ``runs``, if given, are the run directories the rows came from, named in their labels.
    """
    source = f" ({', '.join(runs)})" if runs else ""
    return [
        f"| raw pixels: logistic regression{source} | – | – | – | – | – | – | "
        f"{_pct(b['logreg'])} | – |",
        f"| raw pixels: kNN (k={b['knn_k']}){source} | – | – | – | – | – | {_pct(b['knn'])} | – | – |",
    ]


def _run_dirs(root: Path) -> list[Path]:
    """Pretraining run directories: ``root`` itself, or its sub-directories (a ``run``)."""
    if (root / rundir.CHECKPOINT).is_file():
        return [root]
    runs = sorted(p for p in root.iterdir() if p.is_dir() and (p / rundir.CONFIG).is_file())
    methods = (
        rundir.read_config(root).get("methods", "") if (root / rundir.CONFIG).is_file() else ""
    )
    order = comma_list(str(methods))
    return sorted(runs, key=lambda p: order.index(p.name) if p.name in order else len(order))


def _img(path: Path, root: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    alt = html.escape(str(path.relative_to(root)))
    return f'<img src="data:image/png;base64,{data}" alt="{alt}" style="max-width:100%">'


def _md_table_html(table: str) -> str:
    rows = [
        line.strip("|").split("|") for line in table.splitlines() if not line.startswith("|---")
    ]
    head, *body = rows
    th = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    trs = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body
    )
    return f"<table><tr>{th}</tr>{trs}</table>"


def build_report(run_dir: str | Path) -> Path:
    """Re-draw every plot and write ``report.html`` (images embedded, opens offline).

    Works on a single pretraining run directory or on a ``contrastkit run`` directory holding
    one sub-directory per method. Writes ``table.md`` and ``results.json`` too.

    Raises:
        ContrastkitError: if ``run_dir`` holds no run.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ContrastkitError(f"run directory {root} does not exist")
    runs = _run_dirs(root)
    if not runs:
        raise ContrastkitError(
            f"{root} holds no pretraining run (no checkpoints/last.pt or sub-runs)"
        )
    rows = [method_row(r) for r in runs]
    baselines = files.read_json(root / BASELINES)
    table = format_table(rows, baselines)
    files.write_atomic(root / "table.md", table + "\n")
    files.write_json(root / RESULTS, {"rows": rows, "baselines": baselines})
    figures: list[tuple[str, list[Path]]] = []
    curves = {}
    for run, row in zip(runs, rows, strict=True):
        figures.append((row["method"], plots.method_plots(run, row["method"])))
        curves[row["method"]] = metrics.knn_curve(run)
    with files.os_errors("create directory", root / "plots"):
        (root / "plots").mkdir(exist_ok=True)
    overview = root / "plots" / "knn_all.png"
    plots.plot_knn(curves, overview)
    cfg_text = (runs[0] / rundir.CONFIG).read_text()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>contrastkit report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "pre{background:#f6f6f6;padding:8px;font-size:12px}</style></head><body>",
        f"<h1>contrastkit report: {html.escape(root.name)}</h1>",
        "<h2>Results (test accuracy)</h2>",
        _md_table_html(table),
        "<p>kNN: weighted cosine kNN on frozen backbone features; linear probe: a linear "
        "classifier on frozen features extracted once without augmentation. Raw-pixel "
        "baselines use the same split.</p>",
        _img(overview, root),
    ]
    for method, pngs in figures:
        parts.append(f"<h2>{html.escape(method)}</h2>")
        parts += [_img(f, root) for f in pngs]
    parts.append(
        f"<h2>Configuration ({html.escape(runs[0].name)})</h2><pre>{html.escape(cfg_text)}</pre>"
    )
    parts.append("</body></html>")
    out = root / "report.html"
    files.write_atomic(out, "\n".join(parts))
    return out


SEED_FREE_KEYS = frozenset({"seed", "out", "resume", "quiet", "device", "knn_every"})
"""Config keys that may differ between the runs averaged into one row of :func:`seed_summary`
(``knn_every`` only decides how often the monitor looks: the weights do not depend on it)."""

_SUMMARY_METRICS = ("seconds", "eval_seconds", "knn_acc", "probe_acc", "head_acc")
_PROBE_KEYS = ("epochs", "lr", "weight_decay", "batch_size")


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def _pm(stat: tuple[float, float | None] | None, scale: float, digits: int) -> str:
    if stat is None:
        return "–"
    mean, std = stat
    text = f"{scale * mean:.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


_ROW_KEYS = frozenset({"method", "model", "epochs"})
"""What names a row of :func:`seed_summary`: these cannot be pooled."""


def seed_summary(run_dirs: list[str | Path], pool: Sequence[str] = ()) -> dict[str, Any]:
    """Mean ± standard deviation of each method over runs that differ only in their seed.

    Every argument is a pretraining run directory or a ``contrastkit run`` directory (all its
    methods are taken). Runs are grouped by their config without the keys in
    :data:`SEED_FREE_KEYS` and ``pool``, plus the epochs completed and the probe's and kNN's
    settings; each group is one row. The standard deviation is the sample one (n - 1), shown
    for n ≥ 2.

    Args:
        run_dirs: the run directories.
        pool: further config keys whose values may differ within a row (e.g. ``precision``
            for seeds run in bfloat16 on one machine and float32 on another). The table says
            which value each seed had, under the rows; wall seconds of a pooled row mix
            whatever the pooled key changes.

    Returns:
        ``{"rows": [...], "baselines": [...], "table": str}``: per row the method, model,
        epochs, seeds, n, ``(mean, std)`` of seconds, eval seconds, kNN, probe and CE-head
        accuracy (None where a run lacks the value) and ``pooled`` (per pooled key that
        varies in the row, each value's seeds); the raw-pixel baselines that differ in
        what the table shows (one percentage digit; where they differ, each pair's label
        names the run directories it came from); the Markdown table.

    Raises:
        ContrastkitError: if a directory holds no run, if two groups share method, model and
            epochs (their recipes differ in a key other than the seed: the error names it), if
            a group repeats a seed, or if ``pool`` names a row key (method, model, epochs) or
            a key that no run's config has.
    """
    pool = list(dict.fromkeys(pool))
    bad = sorted(_ROW_KEYS.intersection(pool))
    if bad:
        raise ContrastkitError(
            f"cannot pool over {', '.join(bad)}: method, model and epochs name a row"
        )
    free = SEED_FREE_KEYS.union(pool)
    known: set[str] = set()
    groups: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    # per distinct pair of shown rows: the first run's baselines and the directories with them
    baselines: dict[tuple[str, ...], tuple[dict[str, Any], list[str]]] = {}
    done: set[Path] = set()
    for d in run_dirs:
        root = Path(d)
        if not root.is_dir():
            raise ContrastkitError(f"run directory {root} does not exist")
        single = (root / rundir.CONFIG).is_file() and "method" in rundir.read_config(root)
        runs = [root] if single else _run_dirs(root)
        if not runs:
            raise ContrastkitError(f"{root} holds no pretraining run")
        base = files.read_json(root / BASELINES)
        # one row pair per distinct shown result: lbfgs differs in far digits across threads
        if base is not None:
            _, sources = baselines.setdefault(tuple(_baseline_rows(base)), (base, []))
            sources += [str(d)] if str(d) not in sources else []
        for run in runs:
            if run.resolve() in done:
                continue  # a directory given twice (or inside another one given) counts once
            done.add(run.resolve())
            cfg = rundir.read_config(run)
            known.update(cfg)
            measured = method_row(run)
            measured["pooled"] = {k: cfg.get(k) for k in pool}
            recipe = {k: v for k, v in cfg.items() if k not in free}
            # what else makes two numbers comparable: epochs done, probe and kNN settings
            recipe["epochs_done"] = measured["epochs"]
            for name, keys in (("probe", _PROBE_KEYS), ("knn", ("k", "t"))):
                found = files.read_json(run / f"{name}.json") or {}
                recipe.update({f"{name}_{k}": found.get(k) for k in keys})
            key = json.dumps(recipe, sort_keys=True, default=str)
            groups.setdefault(key, []).append((recipe, measured))
    unknown = [k for k in pool if k not in known]
    if unknown:
        raise ContrastkitError(
            f"cannot pool over {', '.join(unknown)}: no run's config has that key "
            f"(keys: {', '.join(sorted(known))})"
        )
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
    lines = [
        "| method | model | epochs | seeds | seconds | eval s | kNN acc % | linear-probe acc % | own head acc % |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['model']} | {r['epochs']} | "
            f"{', '.join(map(str, r['seeds']))} | {_pm(r['seconds'], 1, 0)} | "
            f"{_pm(r['eval_seconds'], 1, 0)} | {_pm(r['knn_acc'], 100, 2)} | "
            f"{_pm(r['probe_acc'], 100, 2)} | {_pm(r['head_acc'], 100, 2)} |"
        )
    for b, sources in baselines.values():
        lines += _baseline_rows(b, sources if len(baselines) > 1 else ())
    notes = [
        f"{r['method']}: {key} " + "; ".join(f"{v} ({_seeds(s)})" for v, s in by.items())
        for r in rows
        for key, by in r["pooled"].items()
    ]
    if notes:
        lines += ["", "Pooled over " + ", ".join(pool) + ": " + " · ".join(notes) + "."]
    return {
        "rows": rows,
        "baselines": [b for b, _ in baselines.values()],
        "table": "\n".join(lines),
    }


def _seeds(seeds: list[Any]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _pooled(
    members: list[tuple[dict[str, Any], dict[str, Any]]], pool: list[str]
) -> dict[str, dict[str, list[Any]]]:
    """Per pooled key that takes more than one value in a row: each value (as text) → seeds."""
    out: dict[str, dict[str, list[Any]]] = {}
    for key in pool:
        by: dict[str, list[Any]] = {}
        for _, m in sorted(members, key=lambda rm: rm[1]["seed"]):
            by.setdefault(str(m["pooled"][key]), []).append(m["seed"])
        if len(by) > 1:
            out[key] = by
    return out
