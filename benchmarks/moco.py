"""MoCo's training step beside SimCLR's at equal batch, and the memory of a large queue.

Variants take turns, round by round (simclr, moco, ..., simclr, moco, ...), so load on a shared
machine hits all alike; the table reports the median step and its ratio to SimCLR's (issue 23's
target: a MoCo step ≤ 1.5× a SimCLR step). The step is ``loop.train_step`` (forward, loss,
backward, SGD, then MoCo's EMA update and enqueue; augmentation excluded) on synthetic uint8
images of the Fashion-MNIST shape with the default encoder (small_cnn), float32, channels-last.

Memory: each variant also runs in a fresh subprocess: after building the state (and one
warm-up step) it resets the peak RSS (``/proc/self/clear_refs``, Linux), runs three steps and
reports the peak (``VmHWM``) minus the RSS before them: the steps' working memory beyond the
state. The queue's own size is given beside it: the bytes of its tensors (K·D float32 keys, K
int64 labels, the pointer).

    nice python benchmarks/moco.py --batch 256 --rounds 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contrastkit.data import MultiViewAugment
from contrastkit.train import recipes
from contrastkit.train.config import PretrainConfig
from contrastkit.train.loop import train_step
from contrastkit.train.networks import DataShape
from contrastkit.train.state import TrainingState, build_training_state
from stepbench import add_arguments

VARIANTS: dict[str, dict[str, Any]] = {
    "simclr": {"method": "simclr"},
    "moco": {"method": "moco", "queue_size": 4096},
    "moco-symmetric": {"method": "moco", "queue_size": 4096, "symmetric": True},
    "moco-65536": {"method": "moco", "queue_size": 65536},
    "mocov3": {"method": "mocov3"},
}


def _setup(
    args: argparse.Namespace, name: str
) -> tuple[PretrainConfig, TrainingState, torch.Tensor, torch.Tensor]:
    c, s = args.channels, args.size
    shape = DataShape(c, s, 10, [0.5] * c, [0.25] * c, [str(i) for i in range(10)])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, c, s, s), dtype=torch.uint8, generator=g)
    labels = torch.arange(args.batch) % 10
    views = MultiViewAugment("fashion-mnist", 2, shape.mean, shape.std)(images, g)
    options = dict(VARIANTS[name])
    if options.get("queue_size", 0) < args.batch * (2 if options.get("symmetric") else 1):
        options.pop("queue_size", None)  # a tiny --batch run keeps the default queue
    cfg = recipes.resolve(
        PretrainConfig(
            data="fashion-mnist",
            model="small_cnn",
            precision="fp32",
            device="cpu",
            batch_size=args.batch,
            epochs=10,
            warmup_epochs=1,
            out="unused",
            **options,
        )
    )
    state = build_training_state(cfg, shape, 10 * args.batch, torch.device("cpu"))
    return cfg, state, views, labels


def _queue_bytes(state: TrainingState) -> int:
    """Bytes of the MoCo queue's tensors in ``state`` (keys, labels, pointer); 0 without one."""
    queue = state.momentum.queue if state.momentum is not None else None
    if queue is None:
        return 0
    return sum(b.numel() * b.element_size() for b in queue.buffers())


def _status_mib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process from ``/proc/self/status``, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args: argparse.Namespace, name: str) -> None:
    """RSS with the state built, and the peak over three steps after it (one JSON line)."""
    torch.set_num_threads(args.threads)
    cfg, state, views, labels = _setup(args, name)
    train_step(cfg, state, views, labels)  # warm-up: kernels, allocator
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    built = _status_mib("VmRSS")
    for _ in range(3):
        train_step(cfg, state, views, labels)
    print(json.dumps({"built_mib": built, "peak_mib": _status_mib("VmHWM")}))


def memory(args: argparse.Namespace, name: str) -> dict[str, float]:
    """Run :func:`child` for ``name`` in a fresh process."""
    command = [sys.executable, __file__, "--child", name, "--batch", str(args.batch)]
    command += ["--threads", str(args.threads), "--size", str(args.size)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    row: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args, args.child)
    torch.set_num_threads(args.threads)
    setups = {name: _setup(args, name) for name in VARIANTS}
    for cfg, state, views, labels in setups.values():
        train_step(cfg, state, views, labels)  # warm-up: kernels, allocator
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (cfg, state, views, labels) in setups.items():
            t = time.perf_counter()
            train_step(cfg, state, views, labels)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["simclr"])
    rows = []
    for name, (cfg, state, _, _) in setups.items():
        step = statistics.median(times[name])
        mem = memory(args, name)
        k = cfg.queue_size or 0
        rows.append(
            {
                "variant": name,
                "batch": args.batch,
                "queue_size": k,
                "proj_dim": cfg.proj_dim,
                "step_s": round(step, 4),
                "vs_simclr": round(step / base, 2),
                "state_rss_mib": round(mem["built_mib"], 1),
                "step_rss_mib": round(mem["peak_mib"] - mem["built_mib"], 1),
                "queue_mib": round(_queue_bytes(state) / 2**20, 1),
                "rounds": args.rounds,
                "threads": torch.get_num_threads(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "machine": platform.machine(),
            }
        )
        print(json.dumps(rows[-1]))
    print("\n| variant | K | step (s) | ÷ simclr | state RSS (MiB) | + steps (MiB) | queue (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['queue_size']:,} | {r['step_s']:.4f} | {r['vs_simclr']:.2f} "
            f"| {r['state_rss_mib']:.0f} | {r['step_rss_mib']:.0f} | {r['queue_mib']:.1f} |"
        )


if __name__ == "__main__":
    main()
