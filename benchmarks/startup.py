"""Start-up time of the command line: ``--help`` and an argument error, against ``import torch``.

Neither must import torch (issue 21): the parser is built from the config dataclasses, which
import nothing heavy. Each command runs in a fresh interpreter; the three are timed in turn,
``--repeats`` times, and the medians compared as ratios measured side by side (the machine is
shared, so absolute seconds vary from run to run).

    PYTHONPATH=src python benchmarks/startup.py [--repeats 7] [--src DIR] [--out startup.jsonl]

``--src`` times another checkout's package (e.g. a worktree of an older commit) the same way.

Prints one JSON line per command (median seconds, ratio to ``import torch``) and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "contrastkit --help": [sys.executable, "-m", "contrastkit", "--help"],
    "contrastkit pretrain --help": [sys.executable, "-m", "contrastkit", "pretrain", "--help"],
    "argument error": [sys.executable, "-m", "contrastkit", "pretrain", "--epochs", "ten"],
    "build the parser (no torch?)": [
        sys.executable,
        "-c",
        "import sys, contrastkit.cli as c; c.build_parser(); assert 'torch' not in sys.modules",
    ],
}


def _time(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--src", default=SRC, help="the src/ directory whose contrastkit is timed")
    parser.add_argument("--out", help="append the JSON lines to this file")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.src}
    check = subprocess.run(COMMANDS["build the parser (no torch?)"], env=env, check=False)
    print(f"building the parser imports torch: {check.returncode != 0}")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # round-robin, so that load changes hit every command alike
        for name, argv in COMMANDS.items():
            times[name].append(_time(argv, env))
    torch_s = statistics.median(times["import torch"])
    records = []
    for name, values in times.items():
        median = statistics.median(values)
        records.append(
            {
                "benchmark": "startup",
                "command": name,
                "median_s": round(median, 4),
                "ratio_to_import_torch": round(median / torch_s, 3),
                "repeats": args.repeats,
                "src": args.src,
                "cpu": platform.processor() or platform.machine(),
            }
        )
    lines = [json.dumps(r) for r in records]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    print("\n| command | median s | / import torch |\n|---|---:|---:|")
    for r in records:
        print(f"| {r['command']} | {r['median_s']:.2f} | {r['ratio_to_import_torch']:.2f} |")


if __name__ == "__main__":
    main()
