"""Gathered loss cost per process: forward + backward time and peak memory at W = 1, 2, ...

For a fixed global batch (``--batch`` samples, two views, ``--dim``-d embeddings), each of the W
processes holds ``batch / W`` samples and computes its share of the loss with ``gather=True``
(W = 1 is the plain single-process loss). Processes are started here with
``torch.multiprocessing`` on gloo (CPU), each limited to ``--threads`` threads, as if each had a
device of its own. Time is the median over ``--repeats`` runs after one warm-up, the slowest
process counted (the step waits for it); peak memory is the largest running total of the
allocations made during one forward + backward, from the PyTorch profiler's memory timeline
(inputs excluded). Prints one JSON line per (loss, impl, W, rank), then a table.

    python benchmarks/distributed.py --batch 2048 --world-sizes 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from contrastkit import distributed
from contrastkit.losses import nt_xent, supcon
from contrastkit.losses._gathered import ROW_IMPLS
from contrastkit.train import launch


def loss_fn(name: str, impl: str, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor):
    if name == "nt_xent":
        return nt_xent(z1, z2, 0.5, impl=impl, gather=True)
    return supcon(torch.stack([z1, z2], 1), labels, 0.1, impl=impl, gather=True)  # (N, 2, D)


def peak_allocated(run: Any) -> int:
    """Largest running total (bytes) of the CPU allocations made while ``run()`` executes."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    assert prof.profiler is not None
    events = list(prof.profiler.kineto_results.experimental_event_tree())
    allocations = []
    while events:  # walk the event tree; allocation events carry +size / -size
        event = events.pop()
        events.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size))
    current = peak = 0
    for _, size in sorted(allocations):
        current += size
        peak = max(peak, current)
    return peak


def measure(args: argparse.Namespace, loss: str, impl: str) -> dict[str, Any]:
    r, w = distributed.rank(), distributed.world_size()
    n = args.batch // w
    g = torch.Generator().manual_seed(r)
    z1 = torch.randn(n, args.dim, generator=g).requires_grad_()
    z2 = torch.randn(n, args.dim, generator=g).requires_grad_()
    labels = torch.randint(0, 10, (n,), generator=g)

    def step() -> None:
        z1.grad = z2.grad = None
        loss_fn(loss, impl, z1, z2, labels).backward()

    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        if w > 1:
            dist.barrier()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    if w > 1:
        dist.barrier()
    peak = peak_allocated(step)
    slowest = seconds
    if w > 1:
        every = [torch.zeros((), dtype=torch.float64) for _ in range(w)]
        dist.all_gather(every, torch.tensor(seconds, dtype=torch.float64))
        slowest = max(float(t) for t in every)
    return {
        "loss": loss,
        "impl": impl,
        "world_size": w,
        "rank": r,
        "global_batch": args.batch,
        "local_batch": n,
        "dim": args.dim,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 5),
        "step_seconds": round(slowest, 5),
        "peak_mib": round(peak / 2**20, 2),
    }


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(args.threads)
    if world > 1:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=timedelta(minutes=10),
        )
    records = [measure(args, loss, impl) for loss in args.losses for impl in args.impls]
    with open(f"{out}.{rank}", "w") as f:
        f.writelines(json.dumps(rec) + "\n" for rec in records)
    launch.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2048, help="global batch N (samples)")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension D")
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--losses", nargs="+", default=["nt_xent", "supcon"])
    parser.add_argument("--impls", nargs="+", default=sorted(ROW_IMPLS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.world_sizes:
            if args.batch % world:
                sys.exit(f"--batch {args.batch} is not divisible by world size {world}")
            out = os.path.join(tmp, f"w{world}")
            mp.spawn(worker, args=(world, free_port(), args, out), nprocs=world, join=True)
            for r in range(world):
                records += [
                    json.loads(line) for line in Path(f"{out}.{r}").read_text().splitlines()
                ]
    for rec in records:
        print(json.dumps(rec))
    print()
    print("| loss | impl | W | local batch | fwd+bwd s (slowest rank) | peak MiB per rank |")
    print("|---|---|---|---|---|---|")
    for rec in records:
        if rec["rank"] == 0:
            peaks = [x["peak_mib"] for x in records if _same_run(x, rec)]
            print(
                f"| {rec['loss']} | {rec['impl']} | {rec['world_size']} | {rec['local_batch']} "
                f"| {rec['step_seconds']:.3f} | {max(peaks):.1f} |"
            )


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("loss", "impl", "world_size"))


if __name__ == "__main__":
    main()
