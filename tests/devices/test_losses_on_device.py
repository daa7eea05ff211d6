"""Every loss and impl on each device against the float64 CPU oracle: values and gradients.

The oracle is the loop reference (``contrastkit.losses.reference``) in float64 on the CPU, or,
for the cases too large for a Python loop, the dense loss in float64 on the CPU (itself equal
to the loops, ``tests/losses``). Gradients are taken with respect to every floating input,
a learnable temperature included. Tolerances: 1e-10 for float64 on the device; 1e-5 (relative
and absolute, as everywhere in ``tests/losses``) for float32, whose rounding is the only
difference left (the CPU's float32 results are within rtol 1e-5 + atol 1.5e-7 of the oracle on
these cases); for float16/bfloat16 inputs the oracle is computed on the rounded inputs, since
the losses compute in float32 whatever the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from device_params import DEVICES
from torch import Tensor

from contrastkit.losses import info_nce, margin_pair, nt_xent, reference, supcon

pytestmark = pytest.mark.gpu

F64 = torch.float64
TOL = {F64: 1e-10, torch.float32: 1e-5}
IMPLS = ("reference", "dense", "tiled", "auto")


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _randint(high: int, n: int, seed: int) -> Tensor:
    return torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(seed))


@dataclass
class Case:
    """A loss call: its fast and oracle functions, float64 CPU inputs, and fixed options.

    ``inputs`` are passed by name; floating ones (temperature included) get gradients;
    ``tile`` is the tile edge of the fast impls (small, so that a few inputs span many tiles).
    """

    name: str
    fast: Callable[..., Tensor]
    oracle: Callable[..., Tensor]
    inputs: dict[str, Tensor]
    options: dict[str, object] = field(default_factory=dict)
    tile: int | None = None
    impls: tuple[str, ...] = IMPLS


def _tau(value: float) -> Tensor:
    return torch.tensor(value, dtype=F64)


CASES = [
    Case("nt_xent", nt_xent, reference.nt_xent,
         {"z1": _randn(6, 5, seed=1), "z2": _randn(6, 5, seed=2), "temperature": _tau(0.5)},
         tile=4),
    Case("nt_xent-unnormalised", nt_xent, reference.nt_xent,
         {"z1": _randn(9, 5, seed=3), "z2": _randn(9, 5, seed=4), "temperature": _tau(0.3)},
         {"normalize": False}, tile=5),
    Case("supcon-all-labels-base", supcon, reference.supcon,
         {"features": _randn(5, 3, 5, seed=5), "labels": _randint(2, 5, seed=6),
          "temperature": _tau(0.3)},
         {"base_temperature": 0.07}, tile=4),
    Case("supcon-one-labels", supcon, reference.supcon,
         {"features": _randn(5, 3, 5, seed=7), "labels": _randint(2, 5, seed=8),
          "temperature": _tau(0.2)},
         {"contrast_mode": "one"}, tile=4),
    Case("supcon-one-simclr", supcon, reference.supcon,
         {"features": _randn(7, 2, 5, seed=9), "temperature": _tau(0.1)},
         {"contrast_mode": "one", "base_temperature": 0.1}, tile=5),
    Case("supcon-one-view-singletons", supcon, reference.supcon,
         {"features": _randn(6, 1, 4, seed=10), "labels": torch.tensor([0, 1, 2, 3, 0, 4]),
          "temperature": _tau(0.3)},
         tile=4),
    Case("info_nce-in-batch", info_nce, reference.info_nce,
         {"query": _randn(7, 5, seed=11), "positive_key": _randn(7, 5, seed=12),
          "temperature": _tau(0.2)},
         tile=3),
    Case("info_nce-shared-negatives", info_nce, reference.info_nce,
         {"query": _randn(7, 5, seed=13), "positive_key": _randn(7, 5, seed=14),
          "negative_keys": _randn(11, 5, seed=15), "temperature": _tau(0.2)},
         {"reduction": "none"}, tile=3),
    Case("info_nce-own-negatives", info_nce, reference.info_nce,
         {"query": _randn(7, 5, seed=16), "positive_key": _randn(7, 5, seed=17),
          "negative_keys": _randn(7, 4, 5, seed=18), "temperature": _tau(0.2)},
         {"negative_mode": "paired", "reduction": "sum"}, tile=3),
    Case("margin_pair", margin_pair, reference.margin_pair,
         {"x1": _randn(8, 4, seed=19), "x2": torch.cat([_randn(7, 4, seed=20), _randn(8, 4, seed=19)[7:]]),
          "same": torch.tensor([1, 0, 1, 0, 0, 1, 0, 0])},  # the last pair: d = 0, dissimilar
         {"margin": 2.0}, impls=("reference", "dense", "auto")),
]  # fmt: skip


def _on(x: Tensor, device: str, dtype: torch.dtype) -> Tensor:
    """The input on the device: floating tensors in ``dtype`` and differentiable, others moved."""
    if not x.is_floating_point():
        return x.to(device)
    return x.to(device=device, dtype=dtype).requires_grad_()


def _value_and_grads(
    fn: Callable[..., Tensor],
    inputs: dict[str, Tensor],
    options: dict,
    device: str = "cpu",
    dtype: torch.dtype = F64,
) -> list[Tensor]:
    """[loss, d/d each floating input] with the inputs on ``device`` (floating ones in ``dtype``).

    A per-sample loss (``reduction="none"``) is weighted by fixed random weights first.
    """
    inputs = {k: _on(v, device, dtype) for k, v in inputs.items()}
    out = fn(**inputs, **options)
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(99), dtype=F64)
    total = (out * weights.to(out.device, out.dtype)).sum()
    leaves = [x for x in inputs.values() if x.is_floating_point()]
    return [out.detach(), *torch.autograd.grad(total, leaves)]


def _assert_matches(got: list[Tensor], want: list[Tensor], dtype: torch.dtype, what: str) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        part = "value" if i == 0 else f"gradient {i}"
        torch.testing.assert_close(
            g.detach().cpu().to(F64), w, rtol=TOL[dtype], atol=TOL[dtype], msg=f"{what}: {part}"
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_loss_and_impl_matches_the_float64_cpu_oracle(device, dtype, case):
    want = _value_and_grads(case.oracle, case.inputs, case.options)
    for impl in case.impls:
        opts = {**case.options, "impl": impl}
        if case.tile is not None:
            opts["tile_size"] = case.tile
        got = _value_and_grads(case.fast, case.inputs, opts, device, dtype)
        assert got[0].device.type == device
        assert got[0].dtype == (F64 if dtype == F64 else torch.float32)
        _assert_matches(got, want, dtype, f"{case.name} impl={impl} on {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tile", [64, 128])
def test_many_tiles_and_auto_match_the_dense_float64_cpu_loss(device, tile):
    # 600 views: auto picks the tiled loss (>= 384² pairs), 5-10 tiles per side, both
    # triangles of the symmetric walk; a loop oracle at this size would take minutes
    inputs = {
        "z1": _randn(300, 16, seed=31),
        "z2": _randn(300, 16, seed=32),
        "temperature": _tau(0.1),
    }
    want = _value_and_grads(nt_xent, inputs, {"impl": "dense"})
    for impl in ("tiled", "auto"):
        opts = {"impl": impl, "tile_size": tile if impl == "tiled" else None}
        got = _value_and_grads(nt_xent, inputs, opts, device)
        _assert_matches(got, want, F64, f"nt_xent impl={impl} tile={tile} on {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau", [0.005, 0.002])
def test_tiny_temperature_takes_the_exact_path_on_device(device, tau):
    # float32, s_ij − 1/τ < −87 for most pairs: the fixed shift underflows and the rows are
    # redone by the online running max (forward) and the rectangular backward
    inputs = {"z1": _randn(64, 32, seed=25), "z2": _randn(64, 32, seed=26)}
    want = _value_and_grads(nt_xent, inputs, {"temperature": tau, "impl": "dense"})
    opts = {"temperature": tau, "impl": "tiled", "tile_size": 16}
    got = _value_and_grads(nt_xent, inputs, opts, device, torch.float32)
    assert all(bool(torch.isfinite(g).all()) for g in got)
    torch.testing.assert_close(got[0].cpu().to(F64), want[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_unequal_norms_take_the_rectangular_path_on_device(device):
    # normalize=False with norms over 2.5 decades: one shared shift would overflow
    feats = _randn(30, 1, 8, seed=27) * torch.logspace(-1, 1.5, 30, dtype=F64)[:, None, None]
    inputs = {"features": feats, "labels": torch.arange(30) % 6, "temperature": _tau(0.05)}
    want = _value_and_grads(reference.supcon, inputs, {"normalize": False})
    opts = {"normalize": False, "impl": "tiled", "tile_size": 7}
    got = _value_and_grads(supcon, inputs, opts, device)
    _assert_matches(got, want, F64, f"supcon unequal norms on {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("impl", ["dense", "tiled"])
def test_half_precision_inputs_compute_in_float32_on_device(device, half, impl):
    z1, z2 = (_randn(40, 16, seed=s).to(half) for s in (23, 24))  # the rounded inputs
    want = reference.nt_xent(z1.to(F64), z2.to(F64), 0.1)
    got = nt_xent(z1.to(device), z2.to(device), 0.1, impl=impl, tile_size=16)
    assert got.dtype == torch.float32 and got.device.type == device
    torch.testing.assert_close(got.cpu().to(F64), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["dense", "tiled"])
def test_no_positive_is_zero_with_a_graph_on_device(device, impl):
    feats = _randn(4, 1, 3, seed=28).to(device).requires_grad_()
    with pytest.warns(UserWarning, match="no anchor"):
        loss = supcon(feats, torch.arange(4, device=device), impl=impl, tile_size=2)
    loss.backward()
    assert loss.item() == 0.0 and loss.device.type == device
    assert torch.equal(feats.grad, torch.zeros_like(feats))
