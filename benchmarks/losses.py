"""Side-by-side benchmark of contrastive losses: time and peak memory of forward + backward.

Every (method, views) configuration runs in a fresh subprocess, so that its peak resident memory
(``ru_maxrss`` of the child minus its own baseline after the inputs exist) is its own. All methods
run in one invocation, 2 threads, D = 128, float32, and report the median of repeats. Results are
JSON lines on stdout (and ``--out``), then a Markdown table.

Two losses are compared, each against the peers that compute exactly the same number:

* ``ntxent``: NT-Xent over 2N views = SupCon without labels with V = 2 (τ_b = τ): contrastkit
  ``nt_xent`` tiled and dense, PML ``SupConLoss`` and ``NTXentLoss``, and a SupContrast-style dense
  loss written here from the paper's eq. 2 (masks over the full matrix, the structure every dense
  implementation shares).
* ``infonce``: one-directional in-batch InfoNCE of N queries against N keys (2N views in all):
  contrastkit ``info_nce`` tiled and dense, and ``info-nce-pytorch``.

The compute bound of a tiled run is the GEMM FLOPs of the minimal O(N)-memory exact algorithm
divided by the GEMM throughput measured in the same process on the same tile shapes (interleaved
with the repeats, since the machine is shared):

* symmetric (NT-Xent, V = 2N rows): forward V²·D (upper triangle of V × V·D·2), backward recompute
  V²·D, the two gradient products 2·V²·D: 4·V²·D FLOPs.
* rectangular (InfoNCE, N × N): 2N²D + 2N²D + 4N²D = 8·N²·D FLOPs.

Usage::

    python benchmarks/losses.py                  # full run (about 25 minutes on 2 cores)
    python benchmarks/losses.py --quick          # up to 8,192 views, ~3 minutes
    python benchmarks/losses.py --max-views 32768 --methods ck-tiled,hl-dense
    python benchmarks/losses.py --crossover      # dense vs tiled, for impl="auto"
    python benchmarks/losses.py --tile-sweep     # tiled time per tile size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

D = 128
TAU = 0.1
THREADS = int(os.environ.get("CK_BENCH_THREADS", "2"))  # --threads sets it for the children
SIZES = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
GIB = 1024**3

# method -> (loss group, memory exponent p, a-priori bytes per views^p, is contrastkit)
METHODS: dict[str, tuple[str, int, float, bool]] = {
    "ck-tiled": ("ntxent", 1, 2_000.0, True),
    "ck-dense": ("ntxent", 2, 40.0, True),
    "hl-dense": ("ntxent", 2, 40.0, False),
    "pml-supcon": ("ntxent", 2, 60.0, False),
    "pml-ntxent": ("ntxent", 3, 40.0, False),
    "ck-infonce-tiled": ("infonce", 1, 2_000.0, True),
    "ck-infonce-dense": ("infonce", 2, 20.0, True),
    "infonce-pytorch": ("infonce", 2, 20.0, False),
}


# --- the SupContrast-style dense loss, written from Khosla et al. 2020, eq. 2 -----------------


def supcontrast_style(features, labels, temperature, base_temperature):
    """L_out of eq. 2 the way the paper's reference code is organised: full matrices and masks.

    features (N, V, D), L2-normalised; labels (N,). Every anchor i: −(τ/τ_b)·mean over positives p
    of [s_ip/τ − log Σ_{a≠i} e^{s_ia/τ}], shifted by the row max (which includes s_ii).
    """
    import torch

    n, v, d = features.shape
    views = features.transpose(0, 1).reshape(n * v, d)  # (V·N, D), view-major
    classes = labels.repeat(v)  # (V·N,)
    same = (classes[:, None] == classes[None, :]).float()  # (V·N, V·N)
    logits = views @ views.T / temperature  # (V·N, V·N)
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1.0 - torch.eye(n * v, device=features.device)  # (V·N, V·N)
    positives = same * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    mean_log_prob_pos = (positives * log_prob).sum(1) / positives.sum(1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


# --- one configuration, in the child process ---------------------------------------------------


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _build(
    method: str, views: int, tile_size: int | None, device: str = "cpu"
) -> tuple[Callable[[], object], object]:
    """Return (a closure running forward + backward and returning the loss, the input leaf).

    The inputs are drawn on the CPU from a fixed seed, then moved to ``device``: every device
    sees the same numbers, so the loss values agree across devices too.
    """
    import torch
    import torch.nn.functional as F

    n = views // 2
    x = torch.randn(views, D, generator=torch.Generator().manual_seed(0))
    x = x.to(device).requires_grad_()
    cls = torch.arange(n, device=device).repeat(2)  # (2N,): rows i and i + N are one sample

    if method in ("ck-tiled", "ck-dense"):
        from contrastkit.losses import nt_xent

        impl = method.split("-")[1]

        def loss() -> torch.Tensor:
            return nt_xent(x[:n], x[n:], TAU, impl=impl, tile_size=tile_size)

    elif method == "hl-dense":
        labels = torch.arange(n, device=device)

        def loss() -> torch.Tensor:
            z = F.normalize(x, dim=1)
            return supcontrast_style(torch.stack([z[:n], z[n:]], 1), labels, TAU, TAU)

    elif method in ("pml-supcon", "pml-ntxent"):
        from pytorch_metric_learning import losses

        module = losses.SupConLoss(TAU) if method == "pml-supcon" else losses.NTXentLoss(TAU)

        def loss() -> torch.Tensor:
            return module(x, cls)

    elif method in ("ck-infonce-tiled", "ck-infonce-dense"):
        from contrastkit.losses import info_nce

        impl = method.split("-")[2]

        def loss() -> torch.Tensor:
            return info_nce(x[:n], x[n:], None, TAU, impl=impl, tile_size=tile_size)

    elif method == "infonce-pytorch":
        import info_nce as re_info_nce

        def loss() -> torch.Tensor:
            return re_info_nce.info_nce(x[:n], x[n:], temperature=TAU)

    else:
        raise ValueError(f"unknown method {method!r}")

    def step() -> float:
        value = loss()
        value.backward()  # type: ignore[union-attr]
        x.grad = None
        return float(value.detach())  # type: ignore[union-attr]

    return step, x


def _gemm_rate(tile: int, views: int, budget: float = 0.25, device: str = "cpu") -> float:
    """GEMM FLOP/s measured now on the algorithm's tile products, on ``device``.

    Times the products a tile runs: (T, D+2)·(D+2, T) for the logits and (T, T)·(T, D) plus its
    transpose for the gradients. On CUDA the products are queued as the tiled loss queues them
    and the device is synchronised before the clock is read.
    """
    import torch

    t = min(tile, views)
    a = torch.randn(t, D + 2, device=device)
    b = torch.randn(t, D + 2, device=device)
    p = torch.rand(t, t, device=device)
    y = torch.randn(t, D, device=device)
    out_s = torch.empty(t, t, device=device)
    out_g = torch.empty(t, D, device=device)
    flops = 0.0
    on_cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if on_cuda else lambda: None
    sync()
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        for _ in range(16 if on_cuda else 1):  # CUDA: queue a burst, then synchronise
            torch.mm(a, b.T, out=out_s)
            torch.mm(p, y, out=out_g)
            torch.mm(p.T, y, out=out_g)
            flops += 2.0 * t * t * D * 3
        sync()
    return flops / (time.perf_counter() - start)


def _minimal_flops(views: int, symmetric: bool) -> float:
    """GEMM FLOPs of the minimal exact O(N)-memory algorithm (see the module docstring)."""
    if symmetric:
        return 4.0 * views * views * D
    n = views // 2
    return 8.0 * n * n * D


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(THREADS)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    step, _ = _build(args.method, args.views, args.tile_size)
    baseline = _peak_bytes()
    times, bounds = [], []
    tiled = args.method in ("ck-tiled", "ck-infonce-tiled")
    if tiled:
        from contrastkit.losses.tiled import DEFAULT_TILE_SIZE

        tile = args.tile_size or DEFAULT_TILE_SIZE
    value = step() if args.warmup else float("nan")  # untimed: first-call allocations
    for _ in range(args.repeats):
        before = _gemm_rate(tile, args.views) if tiled else 0.0
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
        if tiled:  # the load drifts: the rate is measured on both sides of the run
            rate = 0.5 * (before + _gemm_rate(tile, args.views))
            bounds.append(_minimal_flops(args.views, args.method == "ck-tiled") / rate)
    record = {
        "method": args.method,
        "group": METHODS[args.method][0],
        "views": args.views,
        "d": D,
        "threads": THREADS,
        "tile_size": args.tile_size,
        "seconds": statistics.median(times),
        "all_seconds": times,
        "peak_rss_mib": (_peak_bytes() - baseline) / 2**20,
        "loss": value,
        "load_average": os.getloadavg()[0],
    }
    if tiled:
        record["bound_seconds"] = statistics.median(bounds)
        record["x_bound"] = statistics.median(t / b for t, b in zip(times, bounds, strict=True))
    print(json.dumps(record), flush=True)


# --- the parent: schedule, watch memory, print ------------------------------------------------


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def run_one(
    method: str,
    views: int,
    repeats: int,
    tile_size: int | None,
    cap: int,
    timeout: float,
    warmup: bool = False,
) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(views), "--repeats", str(repeats)]
    if warmup:
        cmd.append("--warmup")
    if tile_size:
        cmd += ["--tile-size", str(tile_size)]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    start, peak, status = time.perf_counter(), 0, None
    while proc.poll() is None:
        peak = max(peak, _rss_bytes(proc.pid))
        if peak > cap:
            status = f"out of memory (RSS above the {cap / GIB:.0f} GiB cap, stopped)"
        elif time.perf_counter() - start > timeout:
            status = f"timeout ({timeout:.0f} s)"
        if status:
            proc.kill()
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    base = {"method": method, "group": METHODS[method][0], "views": views}
    if status:
        return {**base, "skipped": status}
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["?"])[-1]
        kind = "out of memory" if "memory" in last.lower() else "failed"
        return {**base, "skipped": f"{kind}: {last[:120]}"}
    return json.loads(out.strip().splitlines()[-1])


def _predict(
    history: list[dict],
    method: str,
    views: int,
    *,
    name: str | None = None,
    memory: str = "peak_rss_mib",
) -> tuple[float, float]:
    """Extrapolate (peak bytes, seconds) to ``views`` from the method's last measured size.

    ``name`` is the records' ``method`` field when it differs from the method (a variant, e.g.
    a tile size); ``memory`` the field holding the peak memory in MiB (None where memory was not
    measured: the a-priori estimate is used).
    """
    _, p, coef, _ = METHODS[method]
    done = [h for h in history if h["method"] == (name or method) and "seconds" in h]
    if not done:
        return coef * views**p, 0.0
    last = done[-1]
    ratio = views / last["views"]
    mib = last.get(memory)
    peak = coef * views**p if mib is None else mib * 2**20 * ratio**p
    return peak, last["seconds"] * ratio ** max(p, 2)


def _merge(rounds: list[dict]) -> dict:
    """One record from the rounds of a configuration: median time, max memory."""
    done = [r for r in rounds if "seconds" in r]
    if not done:
        return rounds[-1]
    merged = dict(done[-1])
    merged["all_seconds"] = [t for r in done for t in r["all_seconds"]]
    merged["seconds"] = statistics.median(merged["all_seconds"])
    merged["peak_rss_mib"] = max(r["peak_rss_mib"] for r in done)
    merged["load_average"] = [r["load_average"] for r in done]
    if "x_bound" in merged:
        merged["x_bound"] = statistics.median(r["x_bound"] for r in done)
        merged["bound_seconds"] = statistics.median(r["bound_seconds"] for r in done)
    return merged


def schedule(args: argparse.Namespace) -> list[dict]:
    """Run every size; at each size, the methods take turns, one fresh process per turn.

    Rounds (A B C, A B C, ...) rather than repeats in a row (A A A, B B B) put every method under
    the same drift of the shared machine's load; the median over rounds is reported.
    """
    methods = args.methods.split(",") if args.methods else list(METHODS)
    sizes = [s for s in SIZES if args.min_views <= s <= args.max_views]
    results: list[dict] = []
    for views in sizes:
        runnable, skipped = [], []
        for method in methods:
            base = {"method": method, "group": METHODS[method][0], "views": views}
            mem, sec = _predict(results, method, views)
            if any(r["method"] == method and "skipped" in r for r in results):
                skipped.append({**base, "skipped": "skipped (skipped or failed at a smaller size)"})
            elif mem > args.cap_gib * GIB:
                skipped.append({**base, "skipped": f"skipped: predicted {mem / GIB:.0f} GiB > cap"})
            elif sec > args.max_seconds:
                skipped.append({**base, "skipped": f"skipped: predicted {sec:.0f} s per run"})
            else:
                runnable.append(method)
        rounds = args.repeats if views <= 65536 else max(1, args.repeats - 1)
        turns: dict[str, list[dict]] = {m: [] for m in runnable}
        for _ in range(rounds):
            for method in runnable:
                if turns[method] and "skipped" in turns[method][-1]:
                    continue
                turns[method].append(
                    run_one(
                        method,
                        views,
                        1,
                        args.tile_size,
                        int(args.cap_gib * GIB),
                        args.timeout,
                        warmup=views <= 8192,
                    )
                )
        for rec in skipped + [_merge(turns[m]) for m in runnable]:
            results.append(rec)
            print(json.dumps(rec), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    return results


def table(results: list[dict]) -> str:
    fastest_peer: dict[tuple[str, int], float] = {}
    for r in results:
        if "seconds" in r and not METHODS[r["method"]][3]:
            key = (r["group"], r["views"])
            fastest_peer[key] = min(fastest_peer.get(key, float("inf")), r["seconds"])
    lines = [
        "| loss | method | views | time (s) | peak RSS (MiB) | fastest peer ÷ this | × bound | loss value |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["group"], r["views"], r["method"])):
        if "skipped" in r:
            lines.append(
                f"| {r['group']} | {r['method']} | {r['views']} | {r['skipped']} | | | | |"
            )
            continue
        peer = fastest_peer.get((r["group"], r["views"]))
        speedup = f"{peer / r['seconds']:.1f}" if peer and METHODS[r["method"]][3] else ""
        bound = f"{r['x_bound']:.2f}" if "x_bound" in r else ""
        lines.append(
            f"| {r['group']} | {r['method']} | {r['views']} | {r['seconds']:.3f} | "
            f"{r['peak_rss_mib']:.0f} | {speedup} | {bound} | {r['loss']:.6f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "VIEWS"), help=argparse.SUPPRESS)
    parser.add_argument("--warmup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-views", type=int, default=SIZES[-1])
    parser.add_argument("--min-views", type=int, default=SIZES[0])
    parser.add_argument("--quick", action="store_true", help="up to 8,192 views, 3 repeats")
    parser.add_argument(
        "--methods", default="", help="comma-separated subset of " + ",".join(METHODS)
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size (median)")
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads (default 2)")
    parser.add_argument("--cap-gib", type=float, default=16.0, help="memory cap per run")
    parser.add_argument(
        "--max-seconds", type=float, default=240.0, help="skip runs predicted slower"
    )
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--out", default="", help="also append the JSON lines to this file")
    parser.add_argument("--crossover", action="store_true", help="dense vs tiled, small sizes")
    parser.add_argument("--tile-sweep", action="store_true", help="tiled time per tile size")
    parser.add_argument("--table", default="", help="print the table of a saved --out file")
    args = parser.parse_args()
    if args.threads != THREADS:  # children read it from the environment
        os.environ["CK_BENCH_THREADS"] = str(args.threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if args.child:
        args.method, args.views = args.child[0], int(args.child[1])
        child(args)
        return
    if args.table:
        print(table([json.loads(line) for line in Path(args.table).read_text().splitlines()]))
        return
    if args.quick:
        args.max_views = min(args.max_views, 8192)
    if args.crossover:
        crossover(args)
        return
    if args.tile_sweep:
        tile_sweep(args)
        return
    print(table(schedule(args)))


def _interleaved(variants: dict[str, tuple[str, int | None]], views: int, rounds: int) -> dict:
    """Median seconds of each (method, tile) variant, timed round-robin in this one process.

    Round-robin timing in one process makes the comparison robust to the load of a shared
    machine drifting during the run; memory is not measured here.
    """
    import torch

    torch.set_num_threads(THREADS)
    steps = {name: _build(method, views, tile)[0] for name, (method, tile) in variants.items()}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def crossover(args: argparse.Namespace) -> None:
    """Dense vs tiled for each loss at small sizes: where ``impl="auto"`` should switch."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    for views in (128, 256, 384, 512, 768, 1024, 1536, 2048, 4096):
        variants = {
            "ntxent dense": ("ck-dense", None),
            "ntxent tiled": ("ck-tiled", args.tile_size),
            "infonce dense": ("ck-infonce-dense", None),
            "infonce tiled": ("ck-infonce-tiled", args.tile_size),
        }
        med = _interleaved(variants, views, rounds=max(args.repeats, 9))
        rec = {"views": views, **{k: round(v, 5) for k, v in med.items()}}
        rec["ntxent dense/tiled"] = med["ntxent dense"] / med["ntxent tiled"]
        rec["infonce dense/tiled"] = med["infonce dense"] / med["infonce tiled"]
        print(json.dumps(rec), flush=True)


def tile_sweep(args: argparse.Namespace) -> None:
    """Tiled fwd + bwd time per tile size, interleaved, relative to the best tile size."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    for views in (4096, 16384):
        for method in ("ck-tiled", "ck-infonce-tiled"):
            tiles = (128, 256, 384, 512, 768, 1024, 2048)
            med = _interleaved({str(t): (method, t) for t in tiles}, views, rounds=args.repeats)
            best = min(med.values())
            rec = {"method": method, "views": views, "seconds": med}
            rec["relative"] = {t: round(v / best, 3) for t, v in med.items()}
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
