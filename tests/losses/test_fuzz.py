"""Seeded fuzz: float32 losses and gradients against the float64 loop oracles, inside an envelope.

Each case (a pure function of its seed) draws a loss, an impl, shapes, τ log-uniform in
[1e-3, 10], inputs scaled log-uniformly in [1e-6, 1e6] (in 30 % of cases every row rescaled again
by 10^±3), duplicate and zero rows, and ``normalize``; it computes the loss and its gradients
(embeddings and a learnable τ) in float32 with the fast impl and in float64 with
:mod:`contrastkit.losses.reference` on the same (float32) numbers, and checks that nothing raises,
that everything is finite and that every error lies inside the envelope of the README, with
ε = 2⁻²³ (float32 machine epsilon) and ``C_ENVELOPE`` = 2:

* contrastive losses, with R the largest row norm of the compared embeddings (after
  normalisation: 1) and L = R²/τ ≥ every |logit|:
  |Δℓ| ≤ C ε (L + |ℓ|); every entry of row i of ∂ℓ/∂x: |Δ| ≤ C ε (1 + L) R/τ (divided by ‖x_i‖
  with ``normalize=True``); |Δ ∂ℓ/∂τ| ≤ C ε (1 + L) L/τ.
* ``margin_pair``, with S = max(max_i d_i, margin): |Δℓ| ≤ C ε S²/2, |Δ ∂ℓ/∂x| ≤ C ε S/N.

The scales are those of the quantities themselves (ℓ is a log-sum-exp of logits of size ≤ L,
∂ℓ/∂z a weighted mean of rows z/τ, ∂ℓ/∂τ = −(1/τ) Σ l·∂ℓ/∂l), not the size of the exact result,
which can be 0 (D = 1 with ``normalize=True``: every row is ±1 and the gradient vanishes). With
L = max |s_ij|/τ instead of R²/τ, 5,000 cases reached 132× the bound: a dot product's rounding is
ε·‖a‖·‖c‖, not ε·|a·c|. Over seeds 0–9,999 the worst error is 1.59 ε·scale (loss value; ∂ℓ/∂x
0.77, margin_pair 1.24; ∂ℓ/∂τ 1.36), 0.79 of the envelope.

``make test`` runs ``CASES`` (``CONTRASTKIT_FUZZ_CASES``, default 5,000); ``make fuzz`` 10,000.
The worst ratio per loss and quantity: ``.venv/bin/python tests/losses/test_fuzz.py --cases 10000``
(in a worktree, with ``PYTHONPATH=src``).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from multiprocessing import Pool

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.losses import info_nce, margin_pair, nt_xent, supcon

EPS = torch.finfo(torch.float32).eps  # 2⁻²³
C_ENVELOPE = 2.0
CASES = int(os.environ.get("CONTRASTKIT_FUZZ_CASES", "5000"))
CHUNK = 40
LOSSES = (
    "nt_xent",
    "supcon",
    "supcon_no_labels",
    "supcon_one",
    "info_nce",
    "info_nce_unpaired",
    "info_nce_paired",
    "margin_pair",
)


@dataclass
class Case:
    """One fuzz case: everything the loss call needs, in float32."""

    seed: int
    loss: str
    impl: str
    normalize: bool
    tau: float
    tile_size: int | None
    tensors: dict[str, Tensor]
    labels: list[int] | None = None
    same: list[bool] = field(default_factory=list)
    margin: float = 0.0
    patterns: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        shapes = {k: tuple(x.shape) for k, x in self.tensors.items()}
        return (
            f"seed {self.seed}: {self.loss} impl={self.impl} tile_size={self.tile_size} "
            f"normalize={self.normalize} τ={self.tau:.4g} {shapes} {self.patterns}"
        )


def _shapes(loss: str, n: int, d: int, rng: random.Random) -> dict[str, tuple[int, ...]]:
    if loss.startswith("supcon"):
        return {"features": (n, rng.randint(2 if loss == "supcon_no_labels" else 1, 3), d)}
    if loss == "margin_pair":
        return {"x1": (n, d), "x2": (n, d)}
    if loss == "nt_xent":
        return {"z1": (n, d), "z2": (n, d)}
    shapes = {"query": (n, d), "positive_key": (n, d)}
    if loss == "info_nce_unpaired":
        shapes["negative_keys"] = (rng.randint(1, 6), d)
    elif loss == "info_nce_paired":
        shapes["negative_keys"] = (n, rng.randint(1, 4), d)
    return shapes


def _perturb(rows: list[Tensor], rng: random.Random) -> list[str]:
    """Rescale rows, copy rows onto others (± sign) and zero rows, in place; name what was done."""
    pool = [(t, i) for t in rows for i in range(t.shape[0])]
    patterns = []
    if rng.random() < 0.3:
        patterns.append("row scales 10^±3")
        for t, i in pool:
            t[i] *= 10 ** rng.uniform(-3, 3)
    if rng.random() < 0.35:
        patterns.append("duplicates")
        for _ in range(rng.randint(1, len(pool))):
            (t, i), (u, j) = rng.choice(pool), rng.choice(pool)
            t[i] = u[j] * rng.choice((1.0, 1.0, -1.0))
    if rng.random() < 0.25:
        patterns.append("zero rows")
        for _ in range(rng.randint(1, max(1, len(pool) // 2))):
            t, i = rng.choice(pool)
            t[i] = 0.0
    return patterns


def make_case(seed: int) -> Case:
    """The case of ``seed``: the loss cycles with the seed, everything else is drawn from it."""
    rng = random.Random(seed)
    loss = LOSSES[seed % len(LOSSES)]
    impls = ("dense", "auto") if loss == "margin_pair" else ("dense", "tiled", "auto")
    impl, tile_size = rng.choice(impls), rng.choice((1, 2, 3, 5, None))
    n, d = rng.randint(1, 8), rng.choice((1, 2, 3, 16, 64))
    tau, scale = 10 ** rng.uniform(-3, 1), 10 ** rng.uniform(-6, 6)
    normalize = rng.random() < 0.5
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        k: torch.randn(s, generator=gen, dtype=torch.float64)
        for k, s in _shapes(loss, n, d, rng).items()
    }
    patterns = _perturb([x.view(-1, d) for x in tensors.values()], rng)
    case = Case(seed, loss, impl, normalize, tau, tile_size, tensors, patterns=patterns)
    case.tensors = {k: (x * scale).float() for k, x in tensors.items()}
    if loss in ("supcon", "supcon_one"):
        classes = rng.choice((1, 2, n))
        case.labels = [rng.randrange(classes) for _ in range(n)]
        if loss == "supcon_one" and tensors["features"].shape[1] > 1 and rng.random() < 0.5:
            case.labels = None
    if loss == "margin_pair":
        case.same = [rng.random() < 0.5 for _ in range(n)]
        case.margin = scale * math.sqrt(d) * 10 ** rng.uniform(-1, 1)
    return case


def _loss(case: Case, x: dict[str, Tensor], tau: Tensor, impl: str) -> Tensor:
    """The case's loss on ``x`` (float32 or float64 leaves) with ``impl``."""
    opts = {"impl": impl} if impl == "reference" else {"impl": impl, "tile_size": case.tile_size}
    if case.loss == "margin_pair":
        return margin_pair(x["x1"], x["x2"], torch.tensor(case.same), case.margin, impl=impl)
    if case.loss == "nt_xent":
        return nt_xent(x["z1"], x["z2"], tau, normalize=case.normalize, **opts)
    if case.loss.startswith("supcon"):
        labels = None if case.labels is None else torch.tensor(case.labels)
        mode = "one" if case.loss == "supcon_one" else "all"
        return supcon(
            x["features"], labels, tau, contrast_mode=mode, normalize=case.normalize, **opts
        )
    mode = "paired" if case.loss == "info_nce_paired" else "unpaired"
    neg = x.get("negative_keys")
    return info_nce(
        x["query"],
        x["positive_key"],
        neg,
        tau,
        negative_mode=mode,
        normalize=case.normalize,
        **opts,
    )


def value_and_grads(case: Case, dtype: torch.dtype, impl: str) -> tuple[float, dict[str, Tensor]]:
    """The loss and its gradient with respect to every embedding tensor and τ ("tau")."""
    x = {k: t.to(dtype, copy=True).requires_grad_() for k, t in case.tensors.items()}
    tau = torch.tensor(case.tau, dtype=torch.float32).to(dtype).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SupCon batches with no positive: loss 0
        value = _loss(case, x, tau, impl)
    leaves = {**x, "tau": tau} if case.loss != "margin_pair" else x
    grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    out = {
        k: torch.zeros_like(v) if g is None else g
        for (k, v), g in zip(leaves.items(), grads, strict=True)
    }
    return float(value.detach()), out


def _row_norms(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x.double().reshape(-1, x.shape[-1]), dim=1)


def _contrastive_scales(case: Case, value: float) -> dict[str, Tensor | float]:
    """ε-free scales of the envelope: the loss, each gradient row, and dℓ/dτ."""
    x = {k: t.double() for k, t in case.tensors.items()}
    compared = [F.normalize(t, dim=-1) if case.normalize else t for t in x.values()]
    r = max(float(_row_norms(t).max()) for t in compared)
    tau = float(torch.tensor(case.tau, dtype=torch.float32))
    big = r * r / tau  # L
    scales: dict[str, Tensor | float] = {"loss": big + abs(value), "tau": (1 + big) * big / tau}
    for k, t in x.items():
        rho = _row_norms(t).clamp(min=1e-12) if case.normalize else torch.ones(1, dtype=t.dtype)
        scales[k] = (1 + big) * r / tau / rho  # (rows,)
    return scales


def _margin_scales(case: Case) -> dict[str, Tensor | float]:
    d = _row_norms(case.tensors["x1"].double() - case.tensors["x2"].double())
    s = max(float(d.max()), case.margin)
    n = len(case.same)
    return {"loss": s * s / 2, "x1": torch.tensor(s / n), "x2": torch.tensor(s / n)}


def ratios(case: Case) -> dict[str, float]:
    """Error / (ε · scale) of the loss, of every gradient and of dℓ/dτ; fails on NaN/inf."""
    fast, fast_grads = value_and_grads(case, torch.float32, case.impl)
    exact, exact_grads = value_and_grads(case, torch.float64, "reference")
    finite = math.isfinite(fast) and all(bool(g.isfinite().all()) for g in fast_grads.values())
    assert finite, f"{case}: non-finite float32 result {fast}"
    if case.loss == "margin_pair":
        scales = _margin_scales(case)
    else:
        scales = _contrastive_scales(case, exact)
    errors = {"loss": torch.tensor(abs(fast - exact), dtype=torch.float64)}
    for k, g in fast_grads.items():
        err = (g.double() - exact_grads[k]).abs()
        errors[k] = err.reshape(-1, g.shape[-1]).amax(1) if g.ndim else err  # per row
    out = {}
    for k, err in errors.items():
        allowed = EPS * torch.as_tensor(scales[k], dtype=torch.float64)
        # a zero scale admits only a zero error (all rows zero: every logit and gradient is 0)
        ratio = torch.where(err == 0, 0.0, err / allowed)
        out[k] = float(ratio.max())
    return out


def _check(seed: int) -> None:
    """No exception, nothing non-finite, every error inside the envelope."""
    case = make_case(seed)
    try:
        found = ratios(case)
    except AssertionError:
        raise
    except Exception as exc:  # name the case that raised
        raise AssertionError(f"{case}: raised {exc!r}") from exc
    worst = max(found, key=found.__getitem__)
    assert found[worst] <= C_ENVELOPE, f"{case}: {worst} error {found[worst]:.3g} ε·scale"


@pytest.mark.parametrize("chunk", range(math.ceil(CASES / CHUNK)))
def test_float32_within_envelope_of_float64_oracle(chunk):
    for seed in range(chunk * CHUNK, min(CASES, (chunk + 1) * CHUNK)):
        _check(seed)


# --- the cases that failed before: float32 logits beyond 1e9 in the tiled path -----------------


def _huge_logit_case(loss: str, impl: str, d: int, scale: float, tau: float) -> Case:
    gen = torch.Generator().manual_seed(0)
    shapes = _shapes(loss, 6, d, random.Random(0))
    tensors = {k: scale * torch.randn(s, generator=gen) for k, s in shapes.items()}
    labels = [0, 1, 0, 1, 2, 2] if loss.startswith("supcon") else None
    return Case(0, loss, impl, False, tau, 2, tensors, labels=labels)


@pytest.mark.parametrize(
    ("d", "scale", "tau"),
    [
        # logits ~1e11 (float32 rounding ε·|logit| ~ 1e4): a tile exponent, ≤ 0 exactly, carried
        # that rounding and overflowed exp2 in the backward (P = 2^{+1e4})
        (16, 1e4, 0.02),
        # D = 1: every logit is ±its Cauchy-Schwarz bound, the forward's shift, and the shifted
        # row sums overflowed (each term ≤ 1 exactly)
        (1, 1e5, 1.0),
    ],
    ids=["backward", "forward"],
)
@pytest.mark.parametrize("impl", ["dense", "tiled"])
@pytest.mark.parametrize(
    "loss", ["nt_xent", "supcon", "supcon_one", "info_nce", "info_nce_unpaired"]
)
def test_huge_float32_logits_stay_finite_and_inside_envelope(loss, impl, d, scale, tau):
    case = _huge_logit_case(loss, impl, d, scale, tau)
    found = ratios(case)
    assert max(found.values()) <= C_ENVELOPE, (case, found)


def _summary(cases: int, processes: int) -> None:
    """Print the worst ratio per loss and quantity over seeds 0..cases−1."""
    start = time.perf_counter()
    with Pool(processes) as pool:
        results = pool.map(ratios_of_seed, range(cases), chunksize=CHUNK)
    worst: dict[tuple[str, str], tuple[float, int]] = {}
    for seed, found in enumerate(results):
        loss = LOSSES[seed % len(LOSSES)]
        for quantity, ratio in found.items():
            key = (loss, "grad" if quantity not in ("loss", "tau") else quantity)
            worst[key] = max(worst.get(key, (0.0, -1)), (ratio, seed))
    print(f"{cases} cases in {time.perf_counter() - start:.0f} s; error / (ε·scale), worst:")
    for (loss, quantity), (ratio, seed) in sorted(worst.items()):
        print(f"  {loss:<18} {quantity:<5} {ratio:6.3f}  (seed {seed}; envelope {C_ENVELOPE})")


def ratios_of_seed(seed: int) -> dict[str, float]:
    """:func:`ratios` of the case of ``seed`` (a top-level function for multiprocessing)."""
    return ratios(make_case(seed))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=CASES)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _summary(args.cases, args.processes)
