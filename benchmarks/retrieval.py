"""Retrieval metrics at the size a run meets: contrastkit vs pytorch-metric-learning.

Times ``contrastkit.train.retrieval.retrieval_metrics`` against pytorch-metric-learning 2.9's
``AccuracyCalculator(k="max_bin_count")`` (``precision_at_1``, ``mean_average_precision_at_r``,
its default faiss neighbour search) on the same synthetic clustered embeddings: C class
centres drawn on the unit sphere, each vector its class centre plus Gaussian noise, queries
and references drawn alike from one seed (``--noise`` 0.2 per feature: classes that overlap,
MAP@R well below 1). The default sizes are
Fashion-MNIST's, N = 10,000 test queries against M = 60,000 training references, 128
features, 10 classes (R ≈ 6,000), and one smaller size.

At each size the methods take turns (A B, A B, ...) so that both see the same drift of the
load; the table gives the median time over the turns and the ratio to contrastkit's. Peak
memory is the growth of the process's peak RSS during the call: the peak (``VmHWM``) is reset
to the current RSS before each call by writing 5 to ``/proc/self/clear_refs`` (Linux ≥ 4.0).
The two methods' P@1 and MAP@R are printed beside each other (they agree to float32 rounding
of the similarities: ties may rank differently).

    PYTHONPATH=src python benchmarks/retrieval.py --threads 2
    PYTHONPATH=src python benchmarks/retrieval.py --sizes 2000x12000 --rounds 5
    PYTHONPATH=src python benchmarks/retrieval.py --before 045fa07   # + that commit's code

``--before REV`` adds the method ``before``: ``retrieval_metrics`` of
``src/contrastkit/train/retrieval.py`` as it was at git revision REV (read with ``git show``,
loaded as a module of its own), timed in the same turns.
    python benchmarks/retrieval.py --table results.jsonl

Prints one JSON line per call, then a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""Queries (N, D), their labels (N,), references (M, D), their labels (M,)."""


def clustered(n: int, m: int, dim: int, classes: int, noise: float, seed: int) -> Data:
    """Unit-norm vectors around ``classes`` random unit centres (Gaussian noise per feature)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1)  # (C, D)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, classes, (count,), generator=g)
        x = centres[labels] + noise * torch.randn(count, dim, generator=g)  # (count, D)
        return F.normalize(x, dim=1), labels

    query, query_labels = draw(n)
    reference, reference_labels = draw(m)
    return query, query_labels, reference, reference_labels


def _contrastkit(data: Data) -> dict[str, float]:
    from contrastkit.train.retrieval import retrieval_metrics

    m = retrieval_metrics(*data)
    return {"precision_at_1": m.precision_at_1, "map_at_r": m.map_at_r}


def _pml(data: Data) -> dict[str, float]:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    query, query_labels, reference, reference_labels = data
    got = calc.get_accuracy(query, query_labels, reference, reference_labels)
    return {"precision_at_1": got["precision_at_1"], "map_at_r": got["mean_average_precision_at_r"]}


METHODS: dict[str, Callable[[Data], dict[str, float]]] = {
    "contrastkit": _contrastkit,
    "pml": _pml,
}


def _before(rev: str) -> Callable[[Data], dict[str, float]]:
    """``retrieval_metrics`` as it was at git revision ``rev``, as a method."""
    import subprocess
    import sys
    import types

    path = "src/contrastkit/train/retrieval.py"
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(f"retrieval_at_{rev}")
    sys.modules[module.__name__] = module  # its dataclass looks itself up there
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # our own file, at rev

    def method(data: Data) -> dict[str, float]:
        m = module.retrieval_metrics(*data)
        return {"precision_at_1": m.precision_at_1, "map_at_r": m.map_at_r}

    return method


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def timed(fn: Callable[[Data], dict[str, float]], data: Data) -> dict[str, Any]:
    """One call: wall seconds, growth of peak RSS (MiB) over the RSS before it, its figures."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    t = time.perf_counter()
    figures = fn(data)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "peak_mib": (_status_kib("VmHWM") - before) / 1024, **figures}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every size, the methods in turns; one JSON line per call."""
    rows = []
    for size in args.sizes.split(","):
        n, m = (int(x) for x in size.lower().split("x"))
        data = clustered(n, m, args.dim, args.classes, args.noise, args.seed)
        for turn in range(args.rounds):
            for name in args.methods.split(","):
                row = {"size": f"{n}x{m}", "n": n, "m": m, "dim": args.dim, "method": name}
                row.update({"classes": args.classes, "turn": turn, "threads": args.threads})
                row.update(timed(METHODS[name], data))
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Median seconds over the turns, ratio to contrastkit's, max peak-RSS growth, figures."""
    lines = [
        "| N × M × D | method | turns | median s | ÷ contrastkit | peak RSS growth MiB | P@1 | MAP@R |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    sizes = list(dict.fromkeys((r["n"], r["m"], r["dim"]) for r in rows))
    for n, m, dim in sizes:
        at = [r for r in rows if (r["n"], r["m"], r["dim"]) == (n, m, dim)]
        median = {
            name: statistics.median(r["seconds"] for r in at if r["method"] == name)
            for name in dict.fromkeys(r["method"] for r in at)
        }
        for name, seconds in median.items():
            mine = [r for r in at if r["method"] == name]
            ratio = f"{seconds / median['contrastkit']:.2f}" if "contrastkit" in median else "–"
            lines.append(
                f"| {n:,} × {m:,} × {dim} | {name} | {len(mine)} | {seconds:.2f} | {ratio} | "
                f"{max(r['peak_mib'] for r in mine):.0f} | {mine[-1]['precision_at_1']:.6f} | "
                f"{mine[-1]['map_at_r']:.6f} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run (or read ``--table``), print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", default="2000x12000,10000x60000", help="NxM,... queries x refs")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.2, help="noise std per feature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="turns of every method per size")
    p.add_argument("--methods", default="contrastkit,pml", help="of: contrastkit, pml")
    p.add_argument("--before", help="git revision: add its retrieval_metrics as method before")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", help="print the table of a saved JSON-lines file and exit")
    args = p.parse_args()
    if args.table:
        rows = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line]
        print(table(rows))
        return
    unknown = sorted(set(args.methods.split(",")) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.before:
        METHODS["before"] = _before(args.before)
        args.methods = f"before,{args.methods}"
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    print(table(run(args)))


if __name__ == "__main__":
    main()
