"""The results table and ``report.html``, rebuilt from the files of a run directory alone."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastkit.errors import ContrastkitError
from contrastkit.train import files, metrics, plots, rules, rundir
from contrastkit.train.config import comma_list

BASELINES = "baselines.json"
RESULTS = "results.json"
RETRIEVAL = rundir.result_name("retrieval", "test")


def method_row(run: Path, split: str = "test", data: str | None = None) -> dict[str, Any]:
    """One table row from a pretraining run directory: method, epochs, seconds, kNN, probe, retrieval.

    The accuracies are those of split ``split`` (``test`` or ``val``: ``knn.json`` or
    ``knn_val.json``…), or with ``data`` those of the transfer to that data set
    (``knn-<data>.json``…). ``seconds`` is the pretraining wall time (with the kNN monitor);
    ``eval_seconds`` that of the evaluations on the data set shown: on the run's own data the
    final kNN and linear probe, the retrieval where ``retrieval.json`` exists and those of the
    validation split where its files exist; on a transfer's data set its kNN, probe and
    retrieval (None until kNN and probe ran, or for runs written before they were timed).
    Without the kNN file the kNN cell is the monitor's after the last epoch, if the monitor
    scored that split (never a transfer's).
    """
    check_scored(split, data)
    return scored_row(run, split, data)


def scored_row(run: Path, split: str, data: str | None) -> dict[str, Any]:
    """:func:`method_row` of a ``split`` and ``data`` already checked by :func:`check_scored`."""
    cfg = rundir.read_config(run)
    epochs = [r for r in metrics.read_metrics(run) if r["kind"] == "epoch"]
    # each evaluation file of the data set shown, read once: a transfer is scored on test only
    splits = ("test",) if data is not None else ("test", "val")
    found_files = {
        (kind, s): files.read_json(run / rundir.result_name(kind, s, data))
        for kind in ("knn", "probe", "retrieval")
        for s in splits
    }
    knn, probe, found = (found_files[kind, split] for kind in ("knn", "probe", "retrieval"))
    evals = [
        done.get("seconds") if done else None
        for (kind, s), done in found_files.items()
        if done is not None or (kind != "retrieval" and s == "test")  # kNN and probe required
    ]
    last = epochs[-1] if epochs else {}
    # the monitor scores the final weights on its own split (test before validation existed)
    monitor = (
        last.get("knn_acc") if data is None and last.get("knn_split", "test") == split else None
    )
    acc = f"{split}_acc"
    return {
        "method": cfg["method"],
        "model": cfg.get("model"),
        "epochs": last.get("epoch", 0),
        "seconds": last.get("elapsed", 0.0),
        "cpu_seconds": last.get("cpu_elapsed"),
        "knn_acc": knn[acc] if knn else monitor,
        "probe_acc": probe[acc] if probe else None,
        "probe_train_acc": probe["train_acc"] if probe else None,
        "head_acc": probe.get(f"head_{acc}") if probe else None,
        "eval_seconds": None if None in evals else sum(evals),
        "precision_at_1": found.get("precision_at_1") if found else None,
        "map_at_r": found.get("map_at_r") if found else None,
        "seed": cfg.get("seed"),
        "dir": run.name,
    }


def check_scored(split: str, data: str | None) -> None:
    """Refuse a split other than val or test, a bad data set name, and val beside a transfer.

    Raises:
        ContrastkitError: one line naming the option, what it got and what it expects.
    """
    rules.EVAL_SPLIT.check("split", split)
    if data is not None:
        rules.DATA.check("data", data)
    rules.check_transfer_split(split, data)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def format_table(rows: list[dict[str, Any]], baselines: dict[str, Any] | None) -> str:
    """A Markdown table: method, epochs, seconds, kNN, probe, CE-head accuracy and retrieval (%).

    "seconds" is the pretraining wall time, "CPU s" its process time over all threads (the
    work done, when the machine is shared and wall time is inflated by other jobs), "eval s"
    the wall time of the final kNN, linear probe and retrieval. "P@1" and "MAP@R" are the
    retrieval of the test split against the training split without the validation images
    (``retrieval.json``); the two columns appear when a row has them.
    """
    found = any(r.get("precision_at_1") is not None for r in rows)
    lines = [
        "| method | model | epochs | seconds | CPU s | eval s | kNN acc % | linear-probe acc % | own head acc % |"
        + (" P@1 % | MAP@R % |" if found else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if found else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['model']} | {r['epochs']} | {r['seconds']:.0f} | "
            f"{_secs(r['cpu_seconds'])} | {_secs(r.get('eval_seconds'))} | "
            f"{_pct(r['knn_acc'])} | {_pct(r['probe_acc'])} | {_pct(r.get('head_acc'))} |"
            + (f" {_pct(r.get('precision_at_1'))} | {_pct(r.get('map_at_r'))} |" if found else "")
        )
    if baselines:
        lines += baseline_rows(baselines, extra=2 if found else 0)
    return "\n".join(lines)


def baseline_rows(b: dict[str, Any], runs: Sequence[str] = (), extra: int = 0) -> list[str]:
    """The raw-pixel rows of a 9-column results table (probe and kNN columns 8 and 7).

    ``runs``, if given, are the run directories the rows came from, named in their labels;
    ``extra`` empty cells follow for a table with more columns. With ``extra`` 2 (the
    retrieval columns P@1 and MAP@R) a third row gives the raw-pixel retrieval, where ``b``
    has it (``baselines.json`` written before it was computed has not).
    """
    source = f" ({', '.join(runs)})" if runs else ""
    tail = " – |" * extra
    rows = [
        f"| raw pixels: logistic regression{source} | – | – | – | – | – | – | "
        f"{_pct(b['logreg'])} | – |" + tail,
        f"| raw pixels: kNN (k={b['knn_k']}){source} | – | – | – | – | – | {_pct(b['knn'])} | – | – |"
        + tail,
    ]
    found = b.get("retrieval")
    if extra == 2 and found:
        rows.append(
            f"| raw pixels: cosine retrieval{source} |"
            + " – |" * 8
            + f" {_pct(found['precision_at_1'])} | {_pct(found['map_at_r'])} |"
        )
    return rows


def run_dirs(root: Path) -> list[Path]:
    """Pretraining run directories: ``root`` itself, or its sub-directories (a ``run``)."""
    if (root / rundir.CHECKPOINT).is_file():
        return [root]
    runs = sorted(p for p in root.iterdir() if p.is_dir() and (p / rundir.CONFIG).is_file())
    methods = rundir.read_config(root).get("method", "") if (root / rundir.CONFIG).is_file() else ""
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


def _retrieval_html(
    runs: list[Path], rows: list[dict[str, Any]], baselines: dict[str, Any] | None
) -> list[str]:
    """A table of each method's ``retrieval.json`` (P@1, Recall@k, MAP@R), if any has one.

    The raw-pixel retrieval of ``baselines.json`` follows as the last row where it was
    computed (it has P@1 and MAP@R, no Recall@k).
    """
    found = [
        (row["method"], files.read_json(run / RETRIEVAL))
        for run, row in zip(runs, rows, strict=True)
    ]
    found = [(m, r) for m, r in found if r]
    if not found:
        return []
    ks = list(found[0][1]["recall_at_k"])
    head = "| method | queries | P@1 % | " + " | ".join(f"R@{k} %" for k in ks) + " | MAP@R % |"
    lines = [head, "|---" * (4 + len(ks)) + "|"]
    for method, r in found:
        recall = " | ".join(_pct(r["recall_at_k"].get(k)) for k in ks)
        lines.append(
            f"| {method} | {r['split']} ({r['n_queries']}) | {_pct(r['precision_at_1'])} | "
            f"{recall} | {_pct(r['map_at_r'])} |"
        )
    pixels = (baselines or {}).get("retrieval")
    if pixels:
        lines.append(
            f"| raw pixels | {found[0][1]['split']} ({pixels['n_queries']}) | "
            f"{_pct(pixels['precision_at_1'])} |"
            + " – |" * len(ks)
            + f" {_pct(pixels['map_at_r'])} |"
        )
    return ["<h2>Retrieval (against the training images)</h2>", _md_table_html("\n".join(lines))]


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
    runs = run_dirs(root)
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
        "baselines use the same split. P@1 and MAP@R: the test images retrieving the "
        "training images by cosine similarity (precision@1, MAP@R of Musgrave et al. 2020).</p>",
        *_retrieval_html(runs, rows, baselines),
        _img(overview, root),
    ]
    for method, pngs in figures:
        parts.append(f"<h2>{html.escape(method)}</h2>")
        parts += [_img(f, root) for f in pngs]
    for run, row in zip(runs, rows, strict=True):  # each method trained with its own options
        cfg_text = (run / rundir.CONFIG).read_text()
        parts.append(
            f"<h2>Configuration ({html.escape(row['method'])})</h2>"
            f"<pre>{html.escape(cfg_text)}</pre>"
        )
    parts.append("</body></html>")
    out = root / "report.html"
    files.write_atomic(out, "\n".join(parts))
    return out
