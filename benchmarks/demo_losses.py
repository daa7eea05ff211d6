"""Show the loss core on real data: every loss from every ``impl``, their agreement and time.

Run with ``make demo-losses`` (= ``python benchmarks/demo_losses.py`` with contrastkit importable).
The 1,797 handwritten digits of scikit-learn (8×8 pixels) are embedded by a fixed random
projection to D = 128; the second view of each digit is the same digit shifted one pixel to the
right. A batch of 128 digits is small enough for the loop oracles; every fast ``impl`` then runs
on all 1,797 digits (3,594 views).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from contrastkit.losses import info_nce, margin_pair, nt_xent, supcon
from contrastkit.losses.infonce import IMPLS as INFO_NCE_IMPLS
from contrastkit.losses.margin import IMPLS as MARGIN_IMPLS
from contrastkit.losses.ntxent import IMPLS as NT_XENT_IMPLS
from contrastkit.losses.supcon import IMPLS as SUPCON_IMPLS

#: Every ``impl`` of each loss: the loop oracle first (the row the others are compared with),
#: ``"auto"`` last.
IMPLS = {
    name: ("reference", *(impl for impl in impls if impl not in ("reference", "auto")), "auto")
    for name, impls in (
        ("nt_xent", NT_XENT_IMPLS),
        ("supcon", SUPCON_IMPLS),
        ("info_nce", INFO_NCE_IMPLS),
        ("margin_pair", MARGIN_IMPLS),
    )
}


def digits_views(dim: int = 128, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Return two views (N, dim) of the digits and their labels (N,), float64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float64) / 16.0  # (N, 8, 8)
    shifted = torch.nn.functional.pad(images, (1, 0))[:, :, :8]  # one pixel to the right
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(64, dim, dtype=torch.float64, generator=gen) / 8.0  # (64, dim)
    view1 = images.reshape(-1, 64) @ projection
    view2 = shifted.reshape(-1, 64) @ projection
    return view1, view2, torch.tensor(data.target)


def _timed(fn: Callable[[], Tensor], repeats: int) -> tuple[float, float]:
    """Value and median wall time (ms) of forward + backward."""
    times, value = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        loss = fn()
        if loss.requires_grad:
            loss.backward()
        times.append((time.perf_counter() - start) * 1e3)
        value = float(loss.detach())
    return value, sorted(times)[len(times) // 2]


def losses(v1: Tensor, v2: Tensor, y: Tensor) -> dict[str, Callable[[str], Tensor]]:
    """The four loss families on one batch, each as a function of ``impl``."""
    same = y == y.roll(1)
    return {
        "nt_xent": lambda impl: nt_xent(v1, v2, 0.5, impl=impl),
        "supcon": lambda impl: supcon(torch.stack([v1, v2], 1), y, 0.1, impl=impl),
        "info_nce": lambda impl: info_nce(v1, v2, None, 0.1, impl=impl),
        "margin_pair": lambda impl: margin_pair(v1, v1.roll(1, 0), same, 1.0, impl=impl),
    }


def main(argv: list[str] | None = None) -> None:
    """Print the agreement table (batch of 128) and the full-data timing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="digits in the oracle batch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    view1, view2, labels = digits_views()
    print(f"sklearn digits: {len(labels)} images, random projection 64 → {view1.shape[1]}")

    print(f"\nagreement on a batch of {args.batch} digits (float64, forward + backward):")
    print(f"{'loss':<12} {'impl':<10} {'value':>20} {'|Δ| vs reference':>18} {'ms':>10}")
    for name, impls in IMPLS.items():
        ref_value = None
        for impl in impls:
            v1, v2 = (t[: args.batch].clone().requires_grad_() for t in (view1, view2))
            fn = losses(v1, v2, labels[: args.batch])[name]
            value, ms = _timed(partial(fn, impl), 1 if impl == "reference" else 5)
            ref_value = value if ref_value is None else ref_value
            print(
                f"{name:<12} {impl:<10} {value:>20.15f} {abs(value - ref_value):>18.2e} {ms:>10.1f}"
            )

    print(f"\nall {len(labels)} digits, 2 views (float32, forward + backward, median of 5):")
    print(f"{'loss':<12} {'impl':<10} {'value':>12} {'ms':>10}")
    full = [t.float().requires_grad_() for t in (view1, view2)]
    for name, fn in losses(full[0], full[1], labels).items():
        for impl in IMPLS[name][1:]:  # every fast impl: the loops would take minutes here
            value, ms = _timed(partial(fn, impl), 5)
            print(f"{name:<12} {impl:<10} {value:>12.6f} {ms:>10.1f}")


if __name__ == "__main__":
    main()
