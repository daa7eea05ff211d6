"""float32 vs bfloat16 autocast (``--precision``), timed through contrastkit's own training step.

Each round runs every precision once, interleaved (fp32, bf16, fp32, bf16, ...), so load on a
shared machine hits both alike; the ratio of medians is the result. Measures (1) one SupCon
training step (``pretrain.train_step``: augmentation excluded, forward, loss, backward, SGD) and
(2) feature extraction (``extract_features``, eval mode, no gradient). Synthetic uint8 images;
timing does not depend on pixel values. Prints JSON lines, then a table.

    PYTHONPATH=src python benchmarks/precision.py                        # small_cnn at 28 px
    PYTHONPATH=src python benchmarks/precision.py --model resnet18 --batch 64 --rounds 3

Whether bfloat16 pays depends on the CPU: it is fast where oneDNN has native bf16 kernels
(AVX-512-BF16 or AMX); elsewhere it can be slower than float32.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from contrastkit.data import MultiViewAugment
from contrastkit.train.features import extract_features
from contrastkit.train.networks import DataShape
from contrastkit.train.pretrain import build_training_state, resolve_config, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--extract", type=int, default=10_000, help="images to extract per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    c, s = args.channels, args.size
    shape = DataShape(c, s, 10, [0.5] * c, [0.25] * c, [str(i) for i in range(10)])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, c, s, s), dtype=torch.uint8, generator=g)
    labels = torch.arange(args.batch) % 10
    bank = torch.randint(0, 256, (args.extract, c, s, s), dtype=torch.uint8, generator=g)
    views = MultiViewAugment("fashion-mnist", 2, shape.mean, shape.std)(images, g)
    precisions = args.precisions.split(",")
    states, cfgs = {}, {}
    for p in precisions:
        opts = {"data": "digits", "method": "supcon", "model": args.model, "precision": p}
        cfgs[p] = resolve_config({**opts, "batch_size": args.batch, "out": "unused"}, False)
        states[p] = build_training_state(cfgs[p], shape, 10 * args.batch, device)
        train_step(cfgs[p], states[p], views, labels)  # warm-up: kernels, allocator
        st = states[p]
        extract_features(
            st.encoder,
            bank[: args.batch],
            mean=shape.mean,
            std=shape.std,
            amp_dtype=st.amp_dtype,
            channels_last=True,
        )
    step: dict[str, list[float]] = {p: [] for p in precisions}
    extract: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(args.rounds):
        for p in precisions:
            t = time.perf_counter()
            train_step(cfgs[p], states[p], views, labels)
            step[p].append(time.perf_counter() - t)
            st = states[p]
            t = time.perf_counter()
            extract_features(
                st.encoder,
                bank,
                mean=shape.mean,
                std=shape.std,
                amp_dtype=st.amp_dtype,
                channels_last=True,
            )
            extract[p].append(time.perf_counter() - t)
    base = precisions[0]
    med_step = {p: statistics.median(step[p]) for p in precisions}
    med_extract = {p: statistics.median(extract[p]) for p in precisions}
    rows = []
    for p in precisions:
        row = {
            "model": args.model,
            "precision": p,
            "batch": args.batch,
            "step_s": round(med_step[p], 4),
            "step_speedup": round(med_step[base] / med_step[p], 2),
            "extract_images_per_s": round(args.extract / med_extract[p], 1),
            "extract_speedup": round(med_extract[base] / med_extract[p], 2),
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n| precision | s/step (batch {args.batch}, 2 views) | × vs {base} | extraction images/s | × vs {base} |"
    )
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['precision']} | {r['step_s']:.3f} | {r['step_speedup']:.2f} | "
            f"{r['extract_images_per_s']:.0f} | {r['extract_speedup']:.2f} |"
        )


if __name__ == "__main__":
    main()
