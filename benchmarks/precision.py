"""float32 vs bfloat16 autocast (``--precision``), timed through contrastkit's own training step.

Each round runs every precision once, interleaved (fp32, bf16, fp32, bf16, ...), so load on a
shared machine hits both alike; the ratio of medians is the result. Measures (1) one SupCon
training step (``loop.train_step``: augmentation excluded, forward, loss, backward, SGD) and
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

from stepbench import add_arguments, time_variants, timing_fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--precisions", default="fp32,bf16")
    add_arguments(parser)
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    timings, _ = time_variants(args, {p: (args.model, p) for p in precisions})
    first = precisions[0]
    base = timings[first]
    rows = []
    for p in precisions:
        t = timings[p]
        row = {
            "model": args.model,
            "precision": p,
            **timing_fields(args, t, base),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n| precision | s/step (batch {args.batch}, 2 views) | × vs {first} | extraction images/s | × vs {first} |"
    )
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['precision']} | {r['step_s']:.3f} | {r['step_speedup']:.2f} | "
            f"{r['extract_images_per_s']:.0f} | {r['extract_speedup']:.2f} |"
        )


if __name__ == "__main__":
    main()
