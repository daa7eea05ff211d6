"""Memory and time of ``channel_stats``: the former float32 formula against the chunked histograms.

On seeded random uint8 images (default 6,000 × 3 × 96 × 96, 166 MB), each method is called
in turns (A B, A B, ...). Peak memory is the growth of the process's peak RSS during the
call above the RSS before it, the images already allocated: the peak (``VmHWM``) is reset to
the current RSS before each call by writing 5 to ``/proc/self/clear_refs`` (Linux ≥ 4.0).

* ``float32``: the formula ``channel_stats`` had before its histograms (commit ``44a67d8``):
  a float32 copy of every pixel on the 0–1 scale, then ``std`` and ``mean`` per channel.
* ``contrastkit``: :func:`contrastkit.data.channel_stats` as it is (int64 histograms over
  chunks of about 4 M values, the exact sums rounded once).

    PYTHONPATH=src python benchmarks/stats.py --threads 1

Prints one JSON line per call, then a table (median seconds, largest peak growth, the figures'
largest difference from contrastkit's).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import torch

from retrieval import timed  # benchmarks/retrieval.py: time and peak-RSS growth of one call

Stats = dict[str, list[float]]
"""Per-channel ``mean`` and ``std``, 0–1 scale."""


def former(images: torch.Tensor) -> Stats:
    """``channel_stats`` before ``44a67d8``: a float32 copy of every pixel (C, N·H·W)."""
    x = images.float().div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)  # (C, N·H·W)
    std = x.std(dim=1).clamp_min(1e-3)
    return {"mean": x.mean(dim=1).tolist(), "std": std.tolist()}


def _contrastkit(images: torch.Tensor) -> Stats:
    from contrastkit.data import channel_stats

    mean, std = channel_stats(images)
    return {"mean": mean, "std": std}


METHODS: dict[str, Callable[[torch.Tensor], Stats]] = {
    "float32": former,
    "contrastkit": _contrastkit,
}


def table(rows: list[dict[str, Any]]) -> str:
    """Median seconds and largest peak growth per method; figures against contrastkit's."""
    lines = [
        "| images | method | turns | median s | peak RSS growth MiB | max abs diff of mean, std |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ref = next(r for r in rows if r["method"] == "contrastkit")
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        diff = max(
            abs(a - b)
            for key in ("mean", "std")
            for a, b in zip(mine[-1][key], ref[key], strict=True)
        )
        lines.append(
            f"| {mine[-1]['shape']} | {name} | {len(mine)} | "
            f"{statistics.median(r['seconds'] for r in mine):.2f} | "
            f"{max(r['peak_mib'] for r in mine):,.0f} | {diff:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse the options, time the methods in turns, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="6000x3x96x96", help="N x C x H x W of the uint8 images")
    p.add_argument("--rounds", type=int, default=3, help="turns of every method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)  # (N, C, H, W)
    rows = []
    for turn in range(args.rounds):
        for name, fn in METHODS.items():
            row = {"method": name, "shape": " × ".join(f"{v:,}" for v in shape), "turn": turn}
            row.update({"threads": args.threads, **timed(fn, images)})
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
