"""The ``contrastkit`` command line: a thin layer over the keyword-only Python functions.

Every flag comes from a config dataclass field (its help text included); ``--config FILE.yaml``
supplies values and flags override them. Bad input prints ``error: ...`` and exits with 2, a
file-system error ``error: ...`` naming the path and exits with 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from contrastkit.errors import ContrastkitError, ContrastkitWarning

Command = Callable[[argparse.Namespace, dict[str, Any]], None]

POSITIONAL = {"run_dir", "source"}


def _field_type(hint: Any) -> Any:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next(a for a in args if a is not type(None))


def _add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per option of config class ``cls`` (a positional for ``run_dir``), with its help."""
    from contrastkit.train.config import options
    from contrastkit.train.rules import flag

    for o in options(cls):
        default = o.field.default
        help_text = o.help
        shown = default is not None and default is not False and default != ""
        if shown and o.name not in POSITIONAL and "default" not in help_text:
            help_text += f" (default: {default})"
        if o.name in POSITIONAL:
            parser.add_argument(o.name, help=help_text)
            continue
        flags = [flag(o.name)]
        flags += [o.field.metadata["short"]] if "short" in o.field.metadata else []
        t = _field_type(o.hint)
        if t is bool:
            parser.add_argument(
                *flags,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                *flags, type=t, default=argparse.SUPPRESS, metavar=o.name.upper(), help=help_text
            )


_NOT_OPTIONS = ("command", "config", "func", "resume", "images")


def _options(ns: argparse.Namespace) -> dict[str, Any]:
    """The options given: ``--config`` file values, overridden by the flags given."""
    from contrastkit.train.config import load_yaml
    from contrastkit.train.rundir import PROVENANCE_KEY

    values: dict[str, Any] = {}
    if getattr(ns, "config", None):
        values = load_yaml(ns.config)
        values.pop(PROVENANCE_KEY, None)
        _check_file_keys(ns.config, ns.command, values)
    values.update({k: v for k, v in vars(ns).items() if k not in _NOT_OPTIONS})
    return values


def _check_file_keys(path: str, command: str, values: dict[str, Any]) -> None:
    """Refuse a config file's keys that belong to other commands, naming those commands.

    A ``run`` file (``probe_epochs``...) given to ``pretrain`` is the usual case; keys no command
    knows are left to the config's own error, which lists the known ones.
    """
    from contrastkit.train.config import options

    commands = {name: cls for name, cls, _, _ in _commands()}
    unknown = set(values) - {o.name for o in options(commands[command])}
    if not unknown:  # the usual file: no other command's options are looked at
        return
    takers = {name: {o.name for o in options(cls)} & unknown for name, cls in commands.items()}
    foreign = {
        key: [f"`contrastkit {n}`" for n, keys in takers.items() if key in keys] for key in unknown
    }
    named = {key: where for key, where in foreign.items() if where}
    if named:
        found = ", ".join(
            f"{key!r} (of {', '.join(where)})" for key, where in sorted(named.items())
        )
        raise ContrastkitError(
            f"--config {path}: {found}: not for `contrastkit {command}`; remove those keys from the "
            f"file, or give the options `contrastkit {command}` takes as flags"
        )


def _resume(ns: argparse.Namespace, given: dict[str, Any], command: str) -> Any:
    """Continue the run in ``--out`` (:func:`contrastkit.train.resume.resume_with`)."""
    from contrastkit.train.resume import resume_with

    out = given.pop("out", None)
    if not out:
        raise ContrastkitError("--resume needs --out, the run directory to continue")
    return resume_with(out, given, command=command)


def _cmd_pretrain(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    if ns.resume:
        r = _resume(ns, given, "pretrain")
    else:
        from contrastkit.train.config import PretrainConfig, from_dict
        from contrastkit.train.pretrain import pretrain

        r = pretrain(from_dict(PretrainConfig, given))
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    knn = "–" if r.knn_acc is None else f"{100 * r.knn_acc:.2f} %"
    split = {"val": "validation"}.get(r.knn_split, r.knn_split)
    loss = "–" if math.isnan(r.loss) else f"{r.loss:.4f}"
    figures = f"{r.epochs} epochs in {r.seconds:.1f} s: loss {loss}, kNN {split} accuracy {knn}"
    if r.already_finished:
        print(f"{r.run_dir} was already finished, nothing to train; it pretrained {figures}")
    else:
        print(f"pretrained {figures}")
    print(f"run directory: {r.run_dir}")


def _cmd_run(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    if ns.resume:
        r = _resume(ns, given, "run")
    else:
        from contrastkit.train.config import RunConfig, from_dict
        from contrastkit.train.run import run

        r = run(from_dict(RunConfig, given))
    print(r.table)
    print(f"report: {r.dir}/report.html")


def _cmd_probe(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.config import ProbeConfig, from_dict
    from contrastkit.train.evaluate import linear_probe
    from contrastkit.train.rundir import result_name

    cfg = from_dict(ProbeConfig, given)
    r = linear_probe(cfg)
    name = result_name("probe", cfg.split)
    print(
        f"linear probe: train {100 * r['train_acc']:.2f} %, {cfg.split} "
        f"{100 * r[cfg.split + '_acc']:.2f} % → {_written(cfg.run_dir, name, cfg.data)}"
    )


def _written(run_dir: str, name: str, data: str | None) -> str:
    """The evaluation's file: ``RUN/name``, or its transfer's ``RUN/name-<data>.json``."""
    from contrastkit.train.evaluate import Transfer

    return f"{run_dir}/{Transfer(data, []).file(name) if data else name}"


def _cmd_knn(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.config import KnnConfig, from_dict
    from contrastkit.train.evaluate import knn
    from contrastkit.train.rundir import result_name

    cfg = from_dict(KnnConfig, given)
    r = knn(cfg)
    acc, name = 100 * r[cfg.split + "_acc"], result_name("knn", cfg.split)
    print(
        f"kNN (k={r['k']}, t={r['t']}): {cfg.split} {acc:.2f} % "
        f"→ {_written(cfg.run_dir, name, cfg.data)}"
    )


def _cmd_retrieval(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.config import RetrievalConfig, from_dict
    from contrastkit.train.evaluate import retrieval
    from contrastkit.train.rundir import result_name

    cfg = from_dict(RetrievalConfig, given)
    r = retrieval(cfg)
    recall = ", ".join(f"R@{k} {100 * v:.2f} %" for k, v in r["recall_at_k"].items())
    print(
        f"retrieval ({r['split']} against train): P@1 {100 * r['precision_at_1']:.2f} %, "
        f"{recall}, MAP@R {100 * r['map_at_r']:.2f} % "
        f"→ {_written(cfg.run_dir, result_name('retrieval', cfg.split), cfg.data)}"
    )


def _cmd_export(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.config import ExportConfig, from_dict
    from contrastkit.train.export import export

    done = export(from_dict(ExportConfig, given))
    c = done.contract
    shape = "×".join(map(str, c["shape"]))
    print(
        f"wrote {done.path} ({c['format']}): input {c['input']!r} {c['dtype']} {shape} in "
        f"{c['range']} → output {c['output']!r} (N×{c['features']})"
    )


def _cmd_index(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train import files
    from contrastkit.train.config import IndexConfig, from_dict
    from contrastkit.train.search import INDEX_INFO, build_index

    out = build_index(from_dict(IndexConfig, given))
    i = files.read_json(out / INDEX_INFO) or {}
    left = i.get("validation_left_out")
    held = f"; {left} validation images left out" if left else ""
    print(f"wrote {out}: {i['size']} training images × {i['dim']} features, {i['kind']}{held}")


def _cmd_search(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.config import SearchConfig, from_dict
    from contrastkit.train.search import search

    cfg = from_dict(SearchConfig, given)
    found = search(cfg, ns.images)
    for image, row in zip(ns.images, found, strict=True):
        print(image)
        for n in row:
            print(f"  id {n.id:>6}  label {n.label:>3}  similarity {n.similarity:.4f}")
    print(f"grid: {cfg.out}")


def _cmd_embed(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.config import EmbedConfig, from_dict
    from contrastkit.train.evaluate import embed

    print(f"wrote {embed(from_dict(EmbedConfig, given))}")


def _cmd_prepare(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.data.prepare import prepare
    from contrastkit.train.config import PrepareConfig, from_dict

    cfg = from_dict(PrepareConfig, given)
    opts = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("source", "out")}
    index = prepare(cfg.source, cfg.out, **opts)
    counts = ", ".join(f"{s} {v['count']}" for s, v in index["splits"].items())
    print(f"prepared {counts} images of {index['image_shape']} in {cfg.out}")
    print(f"train with: contrastkit run --data shards:{cfg.out}")


def _cmd_report(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.report import build_report

    path = build_report(given["run_dir"])
    print((path.parent / "table.md").read_text().rstrip())
    print(f"report: {path}")


def _cmd_summarize(ns: argparse.Namespace, opts: dict[str, Any]) -> None:
    from contrastkit.train.config import comma_list
    from contrastkit.train.summary import seed_summary

    pool = comma_list(*(opts.get("pool") or []))
    table = seed_summary(opts["run_dirs"], pool=pool, split=opts["split"], data=opts.get("data"))[
        "table"
    ]
    print(table)
    if opts.get("out"):
        try:
            with open(opts["out"], "w") as f:
                f.write(table + "\n")
        except OSError as e:
            raise ContrastkitError(f"cannot write {opts['out']}: {e.strerror}") from None
        print(f"wrote {opts['out']}")


def _cmd_sweep(ns: argparse.Namespace, given: dict[str, Any]) -> None:
    from contrastkit.train.config import SweepConfig, from_dict
    from contrastkit.train.sweep import sweep

    r = sweep(from_dict(SweepConfig, given))
    print(r.table)
    if r.best_value is None:
        print(f"{r.finished} finished trials; none complete yet")
    else:
        print(
            f"{r.finished} finished trials; best validation accuracy {100 * r.best_value:.2f} % "
            f"(trial {r.best_trial}): {r.best_flags}"
        )
    print(f"study: {r.storage}; summary: {r.dir}/summary.md, plot: {r.dir}/sweep.png")


@dataclasses.dataclass
class _ReportConfig:
    run_dir: str = dataclasses.field(
        default="", metadata={"help": "run directory (pretrain or run)"}
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``error: ...``, like contrastkit's own."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: <message> (see `<prog> --help`)`` and exit with status 2."""
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _commands() -> list[tuple[str, type, Command, str]]:
    """Each sub-command with a config class: its name, class, function and help line."""
    from contrastkit.train.config import (
        EmbedConfig,
        ExportConfig,
        IndexConfig,
        KnnConfig,
        PrepareConfig,
        PretrainConfig,
        ProbeConfig,
        RetrievalConfig,
        RunConfig,
        SearchConfig,
        SweepConfig,
    )
    from contrastkit.train.rules import METHODS

    return [
        (
            "prepare",
            PrepareConfig,
            _cmd_prepare,
            "write a data set once as tar shards, for --data shards:DIR",
        ),
        (
            "pretrain",
            PretrainConfig,
            _cmd_pretrain,
            f"pretrain an encoder ({', '.join(METHODS)})",
        ),
        (
            "linear-probe",
            ProbeConfig,
            _cmd_probe,
            "linear classifier on frozen features → probe.json",
        ),
        ("knn", KnnConfig, _cmd_knn, "weighted kNN accuracy on frozen features → knn.json"),
        (
            "retrieval",
            RetrievalConfig,
            _cmd_retrieval,
            "precision@1, recall@k, MAP@R of a split against the training split → retrieval.json",
        ),
        ("embed", EmbedConfig, _cmd_embed, "backbone features of a split → .npz"),
        (
            "export",
            ExportConfig,
            _cmd_export,
            "frozen encoder with its input normalisation → ONNX or TorchScript file",
        ),
        ("index", IndexConfig, _cmd_index, "faiss index of the training features → DIR"),
        ("search", SearchConfig, _cmd_search, "nearest training images of image files (+ PNG)"),
        ("run", RunConfig, _cmd_run, "pretrain + evaluate every method, table and report"),
        ("report", _ReportConfig, _cmd_report, "rebuild report.html and plots from the run files"),
        (
            "sweep",
            SweepConfig,
            _cmd_sweep,
            "hyperparameter search on validation accuracy (Optuna; resumable, shareable)",
        ),
    ]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per function."""
    parser = _Parser(
        prog="contrastkit",
        description="Contrastive representation learning: pretrain, probe, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cls, func, help_text in _commands():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_options(p, cls)
        if name in ("pretrain", "run"):
            p.add_argument(
                "--resume",
                action="store_true",
                help="continue the run in --out with its saved options (options given must "
                "equal them, but for --device, --quiet and --tensorboard"
                + ("; --method may add methods)" if name == "run" else ")"),
            )
        if name == "search":
            p.add_argument("images", nargs="+", metavar="IMAGE", help="image files to look up")
        if name != "report":
            p.add_argument(
                "--config", metavar="FILE.yaml", help="options from a YAML file (flags override)"
            )
        p.set_defaults(func=func)
    help_text = "mean ± std per method over runs that differ only in the seed (Markdown table)"
    p = sub.add_parser("summarize", help=help_text, description=help_text)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="pretrain or run directories")
    p.add_argument("--out", metavar="FILE.md", help="also write the table to this file")
    p.add_argument(
        "--pool",
        action="append",
        metavar="KEY[,KEY]",
        help="config keys that may also differ within a row, e.g. precision (repeatable); "
        "the table notes each seed's value",
    )
    p.add_argument(
        "--split",
        default="test",
        help="whose accuracies: the test split (default) or the validation split",
    )
    p.add_argument(
        "--data",
        metavar="NAME",
        help="the accuracies of the transfer to this data set instead (the files "
        "`linear-probe|knn|retrieval RUN --data NAME` wrote)",
    )
    p.set_defaults(func=_cmd_summarize)
    return parser


def _check_launch(command: str) -> None:
    """Under torchrun only ``pretrain`` runs; the other commands are single-process."""
    from contrastkit.train.launch import launched

    if launched() and command != "pretrain":
        raise ContrastkitError(
            f"`contrastkit {command}` runs in one process; only `pretrain` runs under torchrun "
            "(start it without torchrun)"
        )


def os_error_message(e: OSError) -> str:
    """One line for a file-system error: what happened, and to which path(s)."""
    text = e.strerror or str(e)
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return text + (f": {' -> '.join(paths)}" if paths else "")


_python_show_warning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print contrastkit's own warnings as ``warning: ...``; others as Python does."""
    if issubclass(category, ContrastkitWarning):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status: 0 ok, 1 file-system error, 2 bad input, 130 ^C.

    Errors print one line, ``error: ...``, without a traceback: bad input (a
    ``ContrastkitError``) and file-system errors (an ``OSError``: a read-only or full disk,
    a missing permission), which name the path. contrastkit's warnings print as
    ``warning: ...``.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless already set (before torch loads): on a machine
    shared with other jobs, spinning OpenMP threads made small steps 3–9× slower (measured).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            _check_launch(ns.command)
            ns.func(ns, _options(ns))
    except ContrastkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
