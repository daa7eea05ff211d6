"""Encoders side by side: multiply-adds, parameters and the time of contrastkit's training step.

Each round runs every model once, interleaved (A, B, A, B, ...), so load on a shared machine hits
all alike; the ratio of medians is the result. Measures (1) one SupCon training step
(``loop.train_step``: forward of 2 views, loss, backward, SGD; augmentation excluded) and
(2) feature extraction (``extract_features``, eval mode, no gradient), in the chosen precision,
channels-last. Multiply-adds are counted per image from the convolutions' and linear layers'
output sizes. Synthetic uint8 images; timing does not depend on pixel values. Prints JSON
lines, then a table.

    PYTHONPATH=src python benchmarks/encoders.py                         # small_cnn vs small_cnn_s2
    PYTHONPATH=src python benchmarks/encoders.py --models small_cnn,small_cnn_s2 --precision bf16
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from stepbench import add_arguments, time_variants, timing_fields


def multiply_adds(model: nn.Module, channels: int, size: int) -> int:
    """Multiply-adds of one image through ``model``'s ``Conv2d`` and ``Linear`` layers.

    Batch norm, pooling and bias additions are not counted (the usual convention).
    """
    total = 0

    def count(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += out.numel() * module.in_channels // module.groups * k
        else:
            total += out.numel() * module.in_features

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small_cnn,small_cnn_s2")
    parser.add_argument("--precision", default="fp32")
    add_arguments(parser)
    args = parser.parse_args()
    models = args.models.split(",")
    timings, states = time_variants(args, {m: (m, args.precision) for m in models})
    first = models[0]
    base = timings[first]
    rows = []
    for m in models:
        t, encoder = timings[m], states[m].encoder
        row = {
            "model": m,
            "precision": args.precision,
            "size": args.size,
            "multiply_adds": multiply_adds(encoder, args.channels, args.size),
            "parameters": sum(p.numel() for p in encoder.parameters()),
            **timing_fields(args, t, base),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        f"\n| encoder | multiply-adds / image | parameters | s/step (batch {args.batch}, 2 views) "
        f"| × vs {first} | extraction images/s | × vs {first} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['multiply_adds'] / 1e6:.1f}M | {r['parameters']:,} | "
            f"{r['step_s']:.3f} | {r['step_speedup']:.2f} | {r['extract_images_per_s']:.0f} | "
            f"{r['extract_speedup']:.2f} |"
        )


if __name__ == "__main__":
    main()
