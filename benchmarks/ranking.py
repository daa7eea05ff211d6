"""One block of ``retrieval_metrics``' ranking: ``topk`` carrying indices vs selection then sort.

At N × M = 10,000 × 60,000 ``retrieval_metrics`` ranks the similarities of 279 queries at a
time (2**24 // 60,000 per block). This times the ranking of one such block: the first 279
queries of ``benchmarks/retrieval.py``'s seeded clustered embeddings (10 classes, 128
features, noise 0.2) against its 60,000 references, to the depth ``retrieval_metrics`` uses
(the largest R among the block's queries, ≈ 6,000), the methods in turns:

* ``topk``: ``torch.topk(sim, depth, dim=1).indices``, as the code before the new ranking
  (``045fa07``) did (``--threads`` threads);
* ``contrastkit``: ``contrastkit.train.retrieval._ranked(sim, depth)``, the selection
  (``np.partition``) then a values-only sort (numpy, one core).

    PYTHONPATH=src python benchmarks/ranking.py --threads 2

Prints one JSON line per call (with the share of rows whose ranking equals contrastkit's, and
whether both put the same similarity at every rank: equal similarities may come out in
another order), then a table of the median seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from retrieval import clustered  # benchmarks/retrieval.py: the same embeddings


def main() -> None:
    """Parse the options, time both rankings of one block in turns, print the table."""
    from contrastkit.train.retrieval import _CHUNK_ELEMENTS, _ranked

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="10000x60000", help="NxM of the embeddings drawn")
    p.add_argument("--rounds", type=int, default=5, help="turns of both methods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n, m = (int(x) for x in args.size.lower().split("x"))
    query, query_labels, reference, reference_labels = clustered(n, m, 128, 10, 0.2, args.seed)
    block = min(n, _CHUNK_ELEMENTS // m)  # queries per block, as retrieval_metrics cuts them
    sim = query[:block] @ reference.T  # (block, M), unit vectors: cosine
    counts = torch.bincount(reference_labels, minlength=10)  # (10,) references per class
    depth = min(m, max(int(counts[query_labels[:block]].max()), 10))  # max(R, k = 10)
    sim_np = sim.numpy()
    methods = {
        "topk": lambda: sim.topk(depth, dim=1).indices.numpy(),
        "contrastkit": lambda: _ranked(sim_np, depth),
    }
    rows = []
    for turn in range(args.rounds):
        orders = {}
        for name, fn in methods.items():
            t = time.perf_counter()
            orders[name] = fn()
            seconds = time.perf_counter() - t
            row = {"method": name, "block": block, "m": m, "depth": depth, "turn": turn}
            row.update({"threads": args.threads, "seconds": seconds})
            rows.append(row)
        same = float(np.mean((orders["topk"] == orders["contrastkit"]).all(axis=1)))
        values = [np.take_along_axis(sim_np, o, axis=1) for o in orders.values()]  # (block, depth)
        for row in rows[-len(methods) :]:
            row["rows_equal_to_contrastkit"] = 1.0 if row["method"] == "contrastkit" else same
            row["same_similarity_at_every_rank"] = bool((values[0] == values[1]).all())
            print(json.dumps(row), flush=True)
    print("| block × M | depth | method | turns | median s |\n|---|---:|---|---:|---:|")
    for name in methods:
        mine = [r["seconds"] for r in rows if r["method"] == name]
        median = statistics.median(mine)
        print(f"| {block:,} × {m:,} | {depth:,} | {name} | {len(mine)} | {median:.3f} |")


if __name__ == "__main__":
    main()
