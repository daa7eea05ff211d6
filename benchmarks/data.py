"""Data beyond memory (issue 22): peak memory, speed and scale of ``--data shards:DIR``.

Three measurements, each run in fresh child processes whose whole process tree (the training
process and its DataLoader workers) the parent polls in ``/proc`` every 0.1 s: the peak of the
summed RSS (``VmRSS``; a worker's pages shared with its parent count twice) and of the summed
PSS (``smaps_rollup``; shared pages split between the processes that map them). Figures are
side by side in one run, on a shared machine: compare ratios, not seconds across runs.

1. memory: ``pretrain --max-steps STEPS`` on a synthetic set (Fashion-MNIST upscaled to
   ``--image`` px and coloured per image) of each ``--sizes``, from prepared shards and in memory
   (a ``Dataset`` object, materialised as the in-memory path does).
2. speed: one small_cnn epoch of Fashion-MNIST from shards and in memory (the same seed and
   recipe, ``--reps`` alternating turns, training time from the epoch's ``images_per_s``), and
   the shard loader alone (images/s over one epoch of batches, ``--workers`` processes).
3. scale: ``--scale`` synthetic images at ``--scale-image`` px prepared, then
   ``pretrain --max-steps SCALE_STEPS`` streamed from them.

    PYTHONPATH=src nice python benchmarks/data.py --work /tmp/ckdata [--only memory,speed,scale]

Prints one JSON line per measurement, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# --- the synthetic set --------------------------------------------------------------------------


class Synthetic:
    """``n`` colour images of ``size`` px: Fashion-MNIST image i % 60000 upscaled, tinted per image.

    A ``Dataset`` of (uint8 (3, size, size), label). The 60,000 grey images are upscaled once
    (bilinear, uint8: 553 MB at 96 px, held by the process that builds the set); the tint of
    image i is drawn from a generator seeded with i, so the set is the same on every run.
    """

    def __init__(self, n: int, size: int, offset: int = 0) -> None:
        import torch
        import torch.nn.functional as F

        from contrastkit.data import load_dataset

        fm = load_dataset("fashion-mnist", "train")
        chunks = [
            F.interpolate(c.float(), size=(size, size), mode="bilinear", align_corners=False)
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
            for c in fm.images.split(2000)
        ]
        self.base, self.labels = torch.cat(chunks), fm.labels  # (60000, 1, S, S)
        self.classes = fm.classes
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        j = (i + self.offset) % len(self.base)
        g = torch.Generator().manual_seed(i + self.offset)
        tint = 0.3 + 0.7 * torch.rand(3, 1, 1, generator=g)
        img = (self.base[j].float() * tint).round().clamp(0, 255).to(torch.uint8)  # (3, S, S)
        return img, int(self.labels[j])


# --- process-tree memory ------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str]) -> tuple[dict[str, Any], float, float]:
    """Run ``cmd``; return its last JSON line and the peak summed RSS and PSS of its tree (MB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        pids = _tree(proc.pid)
        peak_rss = max(peak_rss, sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids))
        peak_pss = max(peak_pss, sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
        time.sleep(0.1)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(cmd)}")
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return (lines[-1] if lines else {}), peak_rss / 1024, peak_pss / 1024


# --- children -----------------------------------------------------------------------------------


def child_pretrain(a: argparse.Namespace) -> None:
    """``pretrain`` on shards or a synthetic in-memory set; prints its training images/s."""
    from contrastkit.train.config import PretrainConfig
    from contrastkit.train.metrics import read_metrics
    from contrastkit.train.pretrain import pretrain

    kw: dict[str, Any] = {
        "batch_size": a.batch,
        "knn_every": 0,
        "device": "cpu",
        "quiet": True,
        "workers": a.workers,
        "seed": 0,
        "out": a.out,
    }
    if a.model:
        kw["model"] = a.model
    if a.steps:
        kw["max_steps"] = a.steps
    if a.epochs:
        kw["epochs"] = a.epochs
    data = None
    if a.data.startswith("synthetic:"):
        _, n, size = a.data.split(":")
        data = Synthetic(int(n), int(size))
        cfg = PretrainConfig(**kw, augment="simclr")
    else:
        cfg = PretrainConfig(data=a.data, **kw)
    t0 = time.perf_counter()
    pretrain(cfg, data=data, final_knn=False)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    steps = [r for r in read_metrics(Path(a.out)) if r["kind"] == "step"]
    epochs = [r for r in read_metrics(Path(a.out)) if r["kind"] == "epoch"]
    from contrastkit.train.checkpoint import load_checkpoint

    train_s = load_checkpoint(Path(a.out) / "checkpoints" / "last.pt")["elapsed"]
    row = {"wall_s": wall, "steps": len(steps), "train_s": train_s}
    row["train_images_per_s"] = len(steps) * a.batch / train_s  # training time, no start-up
    if epochs:
        row["epoch_images_per_s"] = epochs[-1]["images_per_s"]
    print(json.dumps(row), flush=True)


def child_loader(a: argparse.Namespace) -> None:
    """The shard loader alone: images/s over one epoch of training batches."""
    import torch

    from contrastkit.data.shards import ShardSplit
    from contrastkit.train.rundata import TrainBatches, epoch_batches

    split = ShardSplit(a.data, "train")
    batches = epoch_batches(len(split), a.batch, seed=0, epoch=0)[: a.steps or None]
    data = TrainBatches(split, torch.device("cpu"), a.workers)
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in data(batches))
    print(json.dumps({"images": n, "images_per_s": n / (time.perf_counter() - t0)}), flush=True)


# --- the parent ---------------------------------------------------------------------------------


def _child(kind: str, **kw: Any) -> list[str]:
    cmd = [sys.executable, __file__, "_child", kind]
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k}", str(v)]
    return cmd


def _prepare(work: Path, name: str, n: int, size: int) -> Path:
    from contrastkit.data.prepare import prepare

    out = work / name
    if not (out / "index.json").is_file():
        t0 = time.perf_counter()
        prepare(Synthetic(n, size), out, test_data=Synthetic(1000, size, offset=n), quiet=True)
        mb = sum(p.stat().st_size for p in out.rglob("*.tar")) / 2**20
        row = {"prepare": name, "images": n, "seconds": time.perf_counter() - t0, "tar_mb": mb}
        print(json.dumps(row), flush=True)
    return out


def memory(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    for n in (int(s) for s in a.sizes.split(",")):
        shards = _prepare(a.work, f"syn{n}-{a.image}", n, a.image)
        for path, data in (("shards", f"shards:{shards}"), ("memory", f"synthetic:{n}:{a.image}")):
            out = a.work / f"run-mem-{path}-{n}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            cmd = _child(
                "pretrain", data=data, steps=a.steps, batch=a.batch, model="small_cnn",
                workers=a.workers, out=out,
            )  # fmt: skip
            res, rss, pss = run_measured(cmd)
            row = {"bench": "memory", "path": path, "images": n, "px": a.image, **res}
            rows.append({**row, "peak_rss_mb": rss, "peak_pss_mb": pss})
            print(json.dumps(rows[-1]), flush=True)


def speed(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    from contrastkit.data.prepare import prepare

    shards = a.work / "fmnist"
    if not (shards / "index.json").is_file():
        prepare("fashion-mnist", shards, quiet=True)
    for turn in range(a.reps):
        for path, data in (("memory", "fashion-mnist"), ("shards", f"shards:{shards}")):
            out = a.work / f"run-speed-{path}-{turn}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            cmd = _child("pretrain", data=data, epochs=1, batch=256, workers=a.workers, out=out)
            res, rss, pss = run_measured(cmd)
            row = {"bench": "speed", "path": path, "turn": turn, **res}
            rows.append({**row, "peak_rss_mb": rss, "peak_pss_mb": pss})
            print(json.dumps(rows[-1]), flush=True)
    res, rss, _ = run_measured(_child("loader", data=shards, batch=256, workers=a.workers))
    rows.append({"bench": "loader", "path": "shards", **res, "peak_rss_mb": rss})
    print(json.dumps(rows[-1]), flush=True)


def scale(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    shards = _prepare(a.work, f"syn{a.scale}-{a.scale_image}", a.scale, a.scale_image)
    out = a.work / "run-scale"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = _child(
        "pretrain", data=f"shards:{shards}", steps=a.scale_steps, batch=a.batch,
        model="small_cnn", workers=a.workers, out=out,
    )  # fmt: skip
    res, rss, pss = run_measured(cmd)
    row = {"bench": "scale", "images": a.scale, "px": a.scale_image, **res}
    rows.append({**row, "peak_rss_mb": rss, "peak_pss_mb": pss})
    print(json.dumps(rows[-1]), flush=True)
    res, rss, _ = run_measured(
        _child("loader", data=shards, batch=256, workers=a.workers, steps=a.scale_steps)
    )
    rows.append({"bench": "loader", "path": f"scale {a.scale}", **res, "peak_rss_mb": rss})
    print(json.dumps(rows[-1]), flush=True)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| bench | path | images | steps | train img/s | wall s | peak RSS MB | peak PSS MB |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ips = r.get("epoch_images_per_s") or r.get("train_images_per_s") or r.get("images_per_s")
        lines.append(
            f"| {r['bench']} | {r.get('path', '')} | {r.get('images', '')} | {r.get('steps', '')} "
            f"| {ips or 0:.0f} | {r.get('wall_s', 0):.1f} | {r.get('peak_rss_mb', 0):.0f} "
            f"| {r.get('peak_pss_mb', 0):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        p = argparse.ArgumentParser()
        for flag in ("data", "out", "model"):
            p.add_argument(f"--{flag}")
        for flag in ("steps", "batch", "workers", "epochs"):
            p.add_argument(f"--{flag}", type=int)
        a = p.parse_args(sys.argv[3:])
        {"pretrain": child_pretrain, "loader": child_loader}[sys.argv[2]](a)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/ckdata"))
    p.add_argument("--only", default="memory,speed,scale")
    p.add_argument("--sizes", default="6000,60000")
    p.add_argument("--image", type=int, default=96)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--scale", type=int, default=200_000)
    p.add_argument("--scale-image", type=int, default=28)
    p.add_argument("--scale-steps", type=int, default=200)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for part in a.only.split(","):
        {"memory": memory, "speed": speed, "scale": scale}[part](a, rows)
    print(table(rows))


if __name__ == "__main__":
    main()
