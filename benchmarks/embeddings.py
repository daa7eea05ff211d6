"""Using embeddings: search latency (faiss vs torch), retrieval-metric cost, export parity.

1. **search**: one query at a time against a bank of unit vectors (default 60,000 × 128, the
   size of Fashion-MNIST's training split and ``small_cnn``'s features): faiss ``IndexFlatIP``
   (exact, what ``contrastkit index`` builds), a brute-force torch search (``q @ bank.T`` then
   ``topk``) and faiss ``IndexHNSWFlat`` (M = 32, efSearch 64: ``--approximate``), interleaved query by
   query so that load on a shared machine hits all alike; the median per query and the ratio
   to the exact faiss search. The exact faiss and torch neighbours are compared (agreement),
   HNSW's top-1 against the exact one (recall@1).
2. **retrieval**: ``retrieval_metrics`` of ``--queries-metric`` queries against the bank (10
   classes), its wall time and the growth of peak RSS (the N × M matrix is never built).
3. **export** (with ``--run DIR``, a ``pretrain`` run or a ``run`` directory): each method's
   encoder exported to ONNX and TorchScript, the features of the test split through
   onnxruntime and the TorchScript module against ``embed``'s: max |difference|.

Random vectors from a fixed seed. Prints JSON lines, then a table.

    PYTHONPATH=src python benchmarks/embeddings.py --threads 1
    PYTHONPATH=src python benchmarks/embeddings.py --threads 1 --run runs/digits-demo
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _unit(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=1)  # (n, dim)


def search_latency(bank_size: int, dim: int, queries: int, k: int) -> list[dict[str, Any]]:
    """Median seconds per single-query search of each method, interleaved query by query."""
    import faiss

    from contrastkit.train.search import HNSW_EF_SEARCH, HNSW_LINKS

    bank = _unit(bank_size, dim, 0)
    qs = _unit(queries, dim, 1)
    flat = faiss.IndexFlatIP(dim)
    flat.add(bank.numpy())
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = HNSW_EF_SEARCH  # as contrastkit index --approximate builds it
    hnsw.add(bank.numpy())
    hnsw_build = time.perf_counter() - t0

    def torch_search(q: torch.Tensor) -> np.ndarray:
        return (q @ bank.T).topk(k, dim=1).indices.numpy()  # (1, k)

    methods = {
        "faiss-flat": lambda q: flat.search(q.numpy(), k)[1],
        "torch-brute": torch_search,
        "faiss-hnsw": lambda q: hnsw.search(q.numpy(), k)[1],
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    found: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for i in range(queries):
        q = qs[i : i + 1]  # (1, dim)
        for name, fn in methods.items():
            t = time.perf_counter()
            ids = fn(q)
            times[name].append(time.perf_counter() - t)
            found[name].append(ids[0])
    exact = np.stack(found["faiss-flat"])  # (queries, k)
    base = statistics.median(times["faiss-flat"])
    rows = []
    for name in methods:
        ids = np.stack(found[name])
        row = {
            "part": "search",
            "method": name,
            "bank": bank_size,
            "dim": dim,
            "k": k,
            "queries": queries,
            "median_s": statistics.median(times[name]),
            "ratio_to_faiss_flat": statistics.median(times[name]) / base,
            "same_neighbours_as_flat": float((ids == exact).all(axis=1).mean()),
            "recall_at_1_vs_flat": float((ids[:, 0] == exact[:, 0]).mean()),
        }
        if name == "faiss-hnsw":
            row["build_s"] = hnsw_build
        rows.append(row)
    return rows


def retrieval_cost(bank_size: int, dim: int, queries: int) -> dict[str, Any]:
    """Wall time and peak-RSS growth of ``retrieval_metrics`` on random labelled vectors."""
    from contrastkit.train.retrieval import retrieval_metrics

    g = torch.Generator().manual_seed(2)
    bank, q = _unit(bank_size, dim, 3), _unit(queries, dim, 4)
    labels = torch.randint(0, 10, (bank_size,), generator=g)
    q_labels = torch.randint(0, 10, (queries,), generator=g)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    m = retrieval_metrics(q, q_labels, bank, labels)
    seconds = time.perf_counter() - t
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    return {
        "part": "retrieval",
        "queries": queries,
        "bank": bank_size,
        "dim": dim,
        "seconds": seconds,
        "peak_rss_growth_mib": grown / 1024,
        "dense_matrix_mib": queries * bank_size * 4 / 2**20,
        "map_at_r": m.map_at_r,
    }


def export_parity(run_root: Path) -> list[dict[str, Any]]:
    """Max |exported − embed| features on the test split, per method and format."""
    import onnxruntime as ort

    from contrastkit.data import resolve_dataset
    from contrastkit.train.config import EmbedConfig, ExportConfig
    from contrastkit.train.evaluate import embed
    from contrastkit.train.export import export
    from contrastkit.train.report import run_dirs
    from contrastkit.train.rundir import read_config

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in run_dirs(run_root):
            cfg = read_config(run)
            e = np.load(embed(EmbedConfig(str(run), "test", f"{tmp}/e.npz", "cpu")))
            want = e["features"]
            images = resolve_dataset(cfg["data"], "test", root=cfg.get("data_root")).images
            x = images.float().div(255).numpy()
            for fmt in ("onnx", "torchscript"):
                out = export(ExportConfig(run_dir=str(run), format=fmt, out=f"{tmp}/m.{fmt}"))
                if fmt == "onnx":
                    session = ort.InferenceSession(
                        str(out.path), providers=["CPUExecutionProvider"]
                    )
                    got = np.concatenate(
                        [
                            session.run(None, {"images": x[i : i + 256]})[0]
                            for i in range(0, len(x), 256)
                        ]
                    )
                else:
                    module = torch.jit.load(str(out.path))
                    with torch.no_grad():
                        got = torch.cat(
                            [
                                module(torch.from_numpy(x[i : i + 256]))
                                for i in range(0, len(x), 256)
                            ]
                        ).numpy()
                rows.append(
                    {
                        "part": "export",
                        "run": run.name,
                        "method": cfg["method"],
                        "model": cfg["model"],
                        "format": fmt,
                        "images": len(x),
                        "features": want.shape[1],
                        "max_abs_diff": float(np.abs(got - want).max()),
                        "max_abs_feature": float(np.abs(want).max()),
                    }
                )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown tables of the three parts."""
    out = []
    search = [r for r in rows if r["part"] == "search"]
    if search:
        out += [
            "| method | bank × dim | k | median ms / query | ÷ faiss-flat | same top-k as flat | top-1 = flat |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        out += [
            f"| {r['method']} | {r['bank']:,} × {r['dim']} | {r['k']} | {1000 * r['median_s']:.3f} | "
            f"{r['ratio_to_faiss_flat']:.2f} | {100 * r['same_neighbours_as_flat']:.1f} % | "
            f"{100 * r['recall_at_1_vs_flat']:.1f} % |"
            for r in search
        ]
    for r in (r for r in rows if r["part"] == "retrieval"):
        out += [
            "",
            f"retrieval_metrics: {r['queries']:,} queries × {r['bank']:,} references × {r['dim']}: "
            f"{r['seconds']:.1f} s, peak RSS +{r['peak_rss_growth_mib']:.0f} MiB "
            f"(the dense matrix would be {r['dense_matrix_mib']:.0f} MiB)",
        ]
    export = [r for r in rows if r["part"] == "export"]
    if export:
        out += [
            "",
            "| run | model | format | test images | max abs diff vs embed | max abs feature |",
        ]
        out += ["|---|---|---|---:|---:|---:|"]
        out += [
            f"| {r['run']} | {r['model']} | {r['format']} | {r['images']} | {r['max_abs_diff']:.2e} | "
            f"{r['max_abs_feature']:.2f} |"
            for r in export
        ]
    return "\n".join(out)


def main() -> None:
    """Parse the options, run the parts, print JSON lines and the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bank", type=int, default=60_000, help="reference vectors")
    p.add_argument("--dim", type=int, default=128, help="feature size")
    p.add_argument("--queries", type=int, default=300, help="single-query searches per method")
    p.add_argument("--k", type=int, default=5, help="neighbours per search")
    p.add_argument("--queries-metric", type=int, default=10_000, help="queries of part 2 (0: skip)")
    p.add_argument("--run", type=Path, help="a run directory whose encoders to export (part 3)")
    p.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
    a = p.parse_args()
    import faiss

    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    rows = search_latency(a.bank, a.dim, a.queries, a.k)
    if a.queries_metric:
        rows.append(retrieval_cost(a.bank, a.dim, a.queries_metric))
    if a.run is not None:
        rows += export_parity(a.run)
    for r in rows:
        print(json.dumps({**r, "threads": a.threads}))
    print(table(rows))


if __name__ == "__main__":
    main()
