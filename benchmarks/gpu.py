"""GPU benchmarks: the losses at 16,384-262,144 views and training images/s, on one device.

Part ``losses``: forward + backward of every method of ``losses.py`` (contrastkit tiled and
dense, and the peers installed as test extras: pytorch-metric-learning ``SupConLoss`` and
``NTXentLoss``, info-nce-pytorch, and the SupContrast-style loss), the same inputs (D = 128,
float32, τ = 0.1) and the same code as ``losses.py``. All methods run in this one process: one
warm-up call (up to 32,768 views), then ``--rounds`` rounds in turn (A B C, A B C, ...); the
time is the median between device synchronisations, the memory the peak allocated on the
device above what was allocated before the call (``torch.cuda.max_memory_allocated``; not
measured on a CPU). Tiled methods run at each of ``--tile-sizes`` (``@T`` in the name).
Beside each loss and size: the GEMM bound of ``losses.py``, the GEMM FLOPs of the minimal exact
O(N)-memory algorithm (4·V²·D for NT-Xent, 8·N²·D for InfoNCE) divided by the GEMM rate
measured on this device on the tile products (before and after the size's rounds; the best
tile size's rate). A method is skipped at a size where its memory (extrapolated from its
previous size) would pass the cap, after it ran out of memory or failed at a smaller size, or
where its predicted time does not fit the part's time budget.

Part ``steps``: ``contrastkit.pretrain`` (SupCon, 2 views, SGD, the ``simclr`` augmentation
drawn on the device) on synthetic uint8 RGB images, for every model, image size and precision:
images/s of the last of 2 epochs as the run's ``metrics.jsonl`` records it (the first epoch
warms up), and the run's peak device memory.

Prints one JSON line per measurement (and appends them to ``--out``), then a table per part.

    PYTHONPATH=src python benchmarks/gpu.py                  # CUDA, both parts, about 6 minutes
    PYTHONPATH=src python benchmarks/gpu.py --parts losses --views 16384,65536
    PYTHONPATH=src python benchmarks/gpu.py --device cpu --views 256,512 --tile-sizes 128
        --models small_cnn --sizes 32 --precisions fp32,bf16 --batch 8 --steps 2  # (one line)
    python benchmarks/gpu.py --table gpu.jsonl              # the tables of a saved run
    python benchmarks/gpu.py --summary OUT_DIR              # gpu_check.sh's summary
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import torch

from losses import METHODS, _build, _gemm_rate, _minimal_flops, _predict

TILED = ("ck-tiled", "ck-infonce-tiled")
WARMUP_MAX_VIEWS = 32768
STEP_BATCH = {32: 256, 96: 128, 224: 64}  # images per step (2 views each) by image side
Emit = Callable[[dict[str, Any]], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def environment(device: torch.device) -> dict[str, Any]:
    """The record that says what ran: device, versions, machine."""
    record: dict[str, Any] = {
        "part": "env",
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record |= {
            "device_name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "devices": torch.cuda.device_count(),
            "cudnn": torch.backends.cudnn.version(),
            "bf16": torch.cuda.is_bf16_supported(),
        }
    else:
        record["device_name"] = torch.backends.cpu.get_cpu_capability()
    return record


# --- part 1: the losses ---------------------------------------------------------------------


def _variants(methods: list[str], tiles: list[int]) -> list[tuple[str, str, int | None]]:
    """(name, method, tile size) of every method to run; tiled methods once per tile size."""
    out: list[tuple[str, str, int | None]] = []
    for method in methods:
        if method not in METHODS:
            sys.exit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        if method in TILED:
            out += [(f"{method}@{t}", method, t) for t in tiles]
        else:
            out.append((method, method, None))
    return out


def _timed(step: Callable[[], float], device: torch.device) -> tuple[float, float | None, float]:
    """(seconds, peak MiB above the memory allocated before, loss) of one call."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    value = step()
    _sync(device)
    seconds = time.perf_counter() - start
    if device.type != "cuda":
        return seconds, None, value
    return seconds, (torch.cuda.max_memory_allocated(device) - before) / 2**20, value


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _skip_reason(
    history: list[dict], name: str, method: str, views: int, args: argparse.Namespace, left: float
) -> tuple[str | None, float]:
    """Why ``name`` does not run at ``views`` (None: it runs), and its predicted seconds."""
    if any(r["method"] == name and "skipped" in r for r in history):
        return "skipped (skipped or failed at a smaller size)", 0.0
    mem, sec = _predict(history, method, views, name=name, memory="peak_mib")
    total = sec * (args.rounds + 1)
    if mem > args.cap_gib * 2**30:
        return f"skipped: predicted {mem / 2**30:.0f} GiB > cap", total
    if sec > args.max_seconds:
        return f"skipped: predicted {sec:.0f} s per run", total
    if total > left:
        return f"skipped: time budget (predicted {total:.0f} s, {left:.0f} s left)", total
    return None, total


def _gemm_rates(tiles: list[int], views: int, device: torch.device) -> dict[int, float]:
    """GEMM FLOP/s on the tile products of each tile size (``losses.py``'s measurement)."""
    return {t: _gemm_rate(t, views, budget=0.2, device=str(device)) for t in tiles}


def _run_size(
    runnable: list[tuple[str, str, int | None]], views: int, args: argparse.Namespace
) -> dict[str, list[tuple[float, float | None, float]] | str]:
    """Each variant's timed rounds at ``views``, or why it stopped (out of memory, an error)."""
    device = args.device
    steps: dict[str, Callable[[], float]] = {}
    results: dict[str, list[tuple[float, float | None, float]] | str] = {}
    for name, method, tile in runnable:
        try:
            steps[name] = _build(method, views, tile, str(device))[0]  # type: ignore[assignment]
            if views <= WARMUP_MAX_VIEWS:
                steps[name]()  # untimed: kernels, allocator
            results[name] = []
        except Exception as e:
            results[name] = _failure(e)
        _free(device)
    for _ in range(args.rounds):
        for name in list(steps):
            if isinstance(results[name], str):
                continue
            try:
                results[name].append(_timed(steps[name], device))  # type: ignore[union-attr]
            except Exception as e:
                results[name] = _failure(e)
            _free(device)
    return results


def _failure(e: Exception) -> str:
    """The reason recorded for a method that raised: out of memory, or its own error.

    A peer failing at a size is a result of the benchmark, not the end of it: the others go on.
    """
    if isinstance(e, torch.OutOfMemoryError):
        return "out of memory"
    return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"


def bench_losses(args: argparse.Namespace, emit: Emit) -> list[dict[str, Any]]:
    """Every method at every size; returns the records (also emitted one by one)."""
    device: torch.device = args.device
    variants = _variants(args.methods, args.tile_sizes)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    for views in args.views:
        left = args.loss_budget - (time.perf_counter() - start)
        runnable, records = [], []
        for name, method, tile in variants:
            reason, seconds = _skip_reason(history, name, method, views, args, left)
            if reason:
                records.append({"method": name, "group": METHODS[method][0], "skipped": reason})
            else:
                runnable.append((name, method, tile))
                left -= seconds  # what the methods admitted before it will take
        if not runnable:
            continue
        before = _gemm_rates(args.tile_sizes, views, device)
        results = _run_size(runnable, views, args)
        after = _gemm_rates(args.tile_sizes, views, device)
        rates = {t: 0.5 * (before[t] + after[t]) for t in args.tile_sizes}
        for name, method, tile in runnable:
            records.append(_loss_record(name, method, tile, results[name], rates, views))
        for record in records:
            record |= {"part": "losses", "views": views, "device": str(device)}
            record.setdefault("tile_size", None)
            history.append(record)
            emit(record)
    return history


def _loss_record(
    name: str,
    method: str,
    tile: int | None,
    result: list[tuple[float, float | None, float]] | str,
    rates: dict[int, float],
    views: int,
) -> dict[str, Any]:
    group = METHODS[method][0]
    base: dict[str, Any] = {"method": name, "group": group, "tile_size": tile}
    if isinstance(result, str):
        return {**base, "skipped": result}
    seconds = [r[0] for r in result]
    peaks = [r[1] for r in result if r[1] is not None]
    rate = max(rates.values())
    bound = _minimal_flops(views, group == "ntxent") / rate
    median = statistics.median(seconds)
    return {
        **base,
        "seconds": median,
        "all_seconds": seconds,
        "peak_mib": max(peaks) if peaks else None,
        "loss": result[-1][2],
        "bound_seconds": bound,
        "x_bound": median / bound,
        "gemm_tflops": {t: round(r / 1e12, 3) for t, r in rates.items()},
    }


# --- part 2: training steps -------------------------------------------------------------------


def _step_config(
    args: argparse.Namespace, model: str, size: int, precision: str, workdir: Path
) -> dict[str, Any]:
    """Pretrain 2 epochs on synthetic images; the last epoch's images/s and the peak memory."""
    import contrastkit
    from contrastkit.data import ImageTensorDataset
    from contrastkit.errors import ContrastkitError

    device: torch.device = args.device
    batch = args.batch or STEP_BATCH.get(size, 64)
    base = {"part": "steps", "model": model, "size": size, "precision": precision, "batch": batch}
    n = batch * args.steps
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    data = ImageTensorDataset(images, torch.arange(n) % 10, name=f"synthetic {size} px")
    run = workdir / f"{model}-{size}-{precision}"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        config = contrastkit.PretrainConfig(
            out=str(run),
            method="supcon",
            model=model,
            epochs=2,
            batch_size=batch,
            precision=precision,
            device=str(device),
            knn_every=0,
            quiet=True,
            seed=0,
        )
        contrastkit.pretrain(config, data=data, final_knn=False)
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except ContrastkitError as e:  # fp16 on a CPU, bf16 on a GPU without it
        return {**base, "skipped": str(e)}
    except Exception as e:  # out of memory, or an error of this configuration: the rest go on
        return {**base, "skipped": _failure(e)}
    finally:
        shutil.rmtree(run, ignore_errors=True)  # a ResNet-50 run holds a 200 MB checkpoint
        _free(device)
    epochs = [r for r in map(json.loads, lines) if r["kind"] == "epoch"]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        **base,
        "steps_per_epoch": args.steps,
        "images_per_s": epochs[-1]["images_per_s"],
        "first_epoch_images_per_s": epochs[0]["images_per_s"],
        "step_seconds": batch / epochs[-1]["images_per_s"],
        "peak_mib": peak,
        "wall_seconds": time.perf_counter() - start,
        "device": str(device),
    }


def bench_steps(args: argparse.Namespace, emit: Emit) -> list[dict[str, Any]]:
    """Every model × size × precision in turn, until the part's time budget is spent."""
    records = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ck-gpu-steps-") as tmp:
        for model in args.models:
            for size in args.sizes:
                for precision in args.precisions:
                    used = time.perf_counter() - start
                    if used > args.step_budget:
                        base = {"part": "steps", "model": model, "size": size}
                        record = {**base, "precision": precision, "skipped": "time budget"}
                    else:
                        record = _step_config(args, model, size, precision, Path(tmp))
                    records.append(record)
                    emit(record)
    return records


# --- tables and the check's summary ---------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def loss_table(records: list[dict[str, Any]]) -> str:
    """Markdown table of the loss records; "fastest peer ÷ this" for contrastkit's rows."""
    rows = [r for r in records if r.get("part") == "losses"]
    peer: dict[tuple[str, int], float] = {}
    for r in rows:
        if "seconds" in r and not METHODS[r["method"].split("@")[0]][3]:
            key = (r["group"], r["views"])
            peer[key] = min(peer.get(key, float("inf")), r["seconds"])
    lines = [
        "| loss | method | views | time (s) | peak memory (MiB) | GEMM bound (s) | × bound "
        "| fastest peer ÷ this | loss value |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["group"], r["views"], r["method"])):
        head = f"| {r['group']} | {r['method']} | {r['views']:,} |"
        if "skipped" in r:
            lines.append(f"{head} {r['skipped']} | | | | | |")
            continue
        fastest = peer.get((r["group"], r["views"]))
        ours = METHODS[r["method"].split("@")[0]][3]
        ratio = f"{fastest / r['seconds']:.1f}" if fastest and ours else ""
        lines.append(
            f"{head} {r['seconds']:.4g} | {_fmt(r['peak_mib'], '.0f')} | "
            f"{r['bound_seconds']:.3g} | {r['x_bound']:.2f} | {ratio} | {r['loss']:.6f} |"
        )
    return "\n".join(lines)


def step_table(records: list[dict[str, Any]]) -> str:
    """Markdown table of the training-step records, images/s relative to fp32."""
    rows = [r for r in records if r.get("part") == "steps"]
    fp32 = {
        (r["model"], r["size"]): r["images_per_s"]
        for r in rows
        if r["precision"] == "fp32" and "images_per_s" in r
    }
    lines = [
        "| model | image px | precision | batch | images/s | step (s) | peak memory (MiB) "
        "| × fp32 |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['size']} | {r['precision']} |"
        if "skipped" in r:
            lines.append(f"{head} | {r['skipped']} | | | |")
            continue
        base = fp32.get((r["model"], r["size"]))
        ratio = f"{r['images_per_s'] / base:.2f}" if base else ""
        lines.append(
            f"{head} {r['batch']} | {r['images_per_s']:,.0f} | {r['step_seconds']:.4f} | "
            f"{_fmt(r['peak_mib'], '.0f')} | {ratio} |"
        )
    return "\n".join(lines)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _test_summary(xml: Path) -> list[str]:
    """Counts of the pytest run (its JUnit XML), the reasons of skips, the failures."""
    if not xml.is_file():
        return [f"tests: no result file {xml.name} (pytest did not finish)"]
    cases = ElementTree.parse(xml).getroot().iter("testcase")
    outcome: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    failed: list[str] = []
    for case in cases:
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        kind = kinds.pop() if kinds else "passed"
        outcome[kind] += 1
        if kind == "skipped":
            skipped[case.find("skipped").get("message", "")] += 1  # type: ignore[union-attr]
        elif kind != "passed":
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    lines = [
        f"tests (pytest -m gpu): {outcome['passed']} passed, {outcome['skipped']} skipped, "
        f"{outcome['failure']} failed, {outcome['error']} errors"
    ]
    lines += [f"  skipped {n} × {reason}" for reason, n in skipped.most_common()]
    lines += [f"  FAILED {name}" for name in failed]
    return lines


def _bench_summary(records: list[dict[str, Any]]) -> list[str]:
    """The largest size each loss's fastest method reached, and images/s per training config."""
    lines = []
    losses = [r for r in records if r.get("part") == "losses"]
    done = [r for r in losses if "seconds" in r]
    lines.append(f"losses: {len(done)} measured, {len(losses) - len(done)} skipped")
    for group in sorted({r["group"] for r in done}):
        top = max(r["views"] for r in done if r["group"] == group)
        best = min((r for r in done if r["group"] == group and r["views"] == top),
                   key=lambda r: r["seconds"])  # fmt: skip
        lines.append(
            f"  {group}: {top:,} views, fastest {best['method']} {best['seconds']:.3f} s, "
            f"{_fmt(best['peak_mib'], ',.0f') or '-'} MiB, {best['x_bound']:.2f}× GEMM bound"
        )
    steps = [r for r in records if r.get("part") == "steps"]
    measured = [r for r in steps if "images_per_s" in r]
    lines.append(f"training steps: {len(measured)} measured, {len(steps) - len(measured)} skipped")
    configs = sorted({(r["model"], r["size"]) for r in measured}, key=lambda c: (c[1], c[0]))
    for model, size in configs:
        rates = ", ".join(
            f"{r['precision']} {r['images_per_s']:,.0f}"
            for r in measured
            if (r["model"], r["size"]) == (model, size)
        )
        lines.append(f"  {model} {size} px: images/s {rates}")
    return lines


def summary(out: Path) -> str:
    """What ``gpu_check.sh`` prints at the end: device, tests, benchmarks, where the files are."""
    records = _read_jsonl(out / "gpu.jsonl")
    env = next((r for r in records if r.get("part") == "env"), {})
    lines = [
        f"device: {env.get('device', '?')} ({env.get('device_name', '?')}), torch "
        f"{env.get('torch', '?')}, CUDA {env.get('cuda')}",
        *_test_summary(out / "tests.xml"),
        *_bench_summary(records),
        f"files: {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})",
    ]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--parts", default="losses,steps")
    p.add_argument("--out", default="", help="also append the JSON lines to this file")
    p.add_argument("--views", default="16384,32768,65536,131072,262144")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--tile-sizes", default="768,4096", help="of the tiled methods")
    p.add_argument("--rounds", type=int, default=3, help="timed calls per method and size")
    p.add_argument("--cap-gib", type=float, default=None, help="default 90%% of the device")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip slower calls")
    p.add_argument("--loss-budget", type=float, default=200.0, help="seconds for the losses")
    p.add_argument("--models", default="small_cnn,resnet18,resnet50")
    p.add_argument("--sizes", default="32,96,224", help="image sides in pixels")
    p.add_argument("--precisions", default="fp32,fp16,bf16")
    p.add_argument("--batch", type=int, default=0, help="images per step (default by size)")
    p.add_argument("--steps", type=int, default=5, help="steps per epoch")
    p.add_argument("--step-budget", type=float, default=150.0, help="seconds for the steps")
    p.add_argument("--table", default="", help="print the tables of a saved --out file")
    p.add_argument("--summary", default="", help="print gpu_check.sh's summary of this folder")
    return p


def main() -> None:
    args = _parser().parse_args()
    if args.summary:
        print(summary(Path(args.summary)))
        return
    if args.table:
        records = _read_jsonl(Path(args.table))
        print(loss_table(records) + "\n\n" + step_table(records))
        return
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: CUDA is not available (torch.cuda.is_available())")
    args.views, args.tile_sizes = _ints(args.views), _ints(args.tile_sizes)
    args.sizes = _ints(args.sizes)
    args.methods, args.models = _names(args.methods), _names(args.models)
    args.precisions = _names(args.precisions)
    if args.cap_gib is None:
        total = (
            torch.cuda.get_device_properties(args.device).total_memory
            if args.device.type == "cuda"
            else 8 * 2**30
        )
        args.cap_gib = 0.9 * total / 2**30

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")

    records = [environment(args.device)]
    emit(records[0])
    parts = _names(args.parts)
    if "losses" in parts:
        records += bench_losses(args, emit)
    if "steps" in parts:
        records += bench_steps(args, emit)
    print("\n" + loss_table(records) + "\n\n" + step_table(records))


if __name__ == "__main__":
    main()
