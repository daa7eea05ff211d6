"""Tiled losses ≡ dense ≡ reference, on values and gradients; gradcheck of every custom Function.

Self-contained (no shared conftest). Float64 comparisons use rtol 1e-10; sizes are kept small so
that the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from contrastkit.losses import info_nce, nt_xent, reference, supcon, tiled
from contrastkit.losses._rows import row_log_probs
from contrastkit.losses.tiled import (
    _PositiveSums,
    _RectangularLSE,
    _SymmetricLSE,
    row_log_probs_tiled,
    self_row_log_probs_tiled,
    tiled_log_sum_exp,
)

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grads(value: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    weights = torch.randn(value.shape, generator=_gen(99), dtype=value.dtype)
    return torch.autograd.grad((value * weights).sum(), inputs)


def _assert_close_all(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], **tol) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, **(tol or TOL))


# --- the rectangular and symmetric cores against the dense core ------------------------------


@pytest.mark.parametrize(
    ("a", "c", "tile", "self_kind", "classes", "scale"),
    [
        (10, 10, 3, "diagonal", 4, 1.0),  # square, N not divisible by T
        (7, 23, 5, "prefix", 3, 1.0),  # contrast_mode="one": anchors are the first rows
        (6, 9, 64, "none", 2, 1.0),  # N smaller than one tile, no self (InfoNCE-like)
        (12, 30, 4, "scattered", 30, 1.0),  # singleton classes: most anchors have no positive
        (9, 17, 4, "scattered", 3, 6.0),  # unnormalised rows (normalize=False): large logits
        (5, 1, 2, "prefix", 2, 1.0),  # one contrast, which is anchor 0 itself: no terms
    ],
)
def test_rectangular_matches_dense(a, c, tile, self_kind, classes, scale):
    anchors = (scale * torch.randn(a, 5, generator=_gen(1), dtype=F64)).requires_grad_()
    contrasts = (scale * torch.randn(c, 5, generator=_gen(2), dtype=F64)).requires_grad_()
    tau = torch.tensor(0.3, dtype=F64, requires_grad=True)
    contrast_classes = torch.randint(0, classes, (c,), generator=_gen(3))
    self_index = {
        "diagonal": torch.arange(a),
        "prefix": torch.where(torch.arange(a) < c, torch.arange(a), -1),
        "none": torch.full((a,), -1),
        "scattered": torch.randperm(c, generator=_gen(4))[:a],
    }[self_kind]
    anchor_classes = torch.randint(0, classes, (a,), generator=_gen(5))
    anchor_classes = torch.where(self_index >= 0, contrast_classes[self_index], anchor_classes)
    args = (anchors, contrasts, anchor_classes, contrast_classes, self_index, tau)
    r0, n0 = row_log_probs(*args)
    r1, n1 = row_log_probs_tiled(*args, tile_size=tile)
    assert torch.equal(n0, n1)
    torch.testing.assert_close(r1, r0, **TOL)
    inputs = [anchors, contrasts, tau]
    _assert_close_all(_grads(r1, inputs), _grads(r0, inputs))


@pytest.mark.parametrize(
    ("n", "tile", "classes", "scale"),
    [(10, 3, 4, 1.0), (1, 4, 1, 1.0), (2, 1, 1, 1.0), (8, 64, 8, 1.0), (33, 8, 5, 3.0)],
)
def test_symmetric_matches_dense(n, tile, classes, scale):
    z = (scale * torch.randn(n, 6, generator=_gen(6), dtype=F64)).requires_grad_()
    tau = torch.tensor(0.2, dtype=F64, requires_grad=True)
    cls = torch.randint(0, classes, (n,), generator=_gen(7))
    r0, n0 = row_log_probs(z, z, cls, cls, torch.arange(n), tau)
    r1, n1 = self_row_log_probs_tiled(z, cls, tau, tile_size=tile)
    assert torch.equal(n0, n1)
    torch.testing.assert_close(r1, r0, **TOL)
    _assert_close_all(_grads(r1, [z, tau]), _grads(r0, [z, tau]))


# --- gradcheck of every custom autograd.Function ---------------------------------------------


@pytest.mark.parametrize("tile", [2, 3, 16])
def test_gradcheck_rectangular(tile):
    q = torch.randn(7, 4, generator=_gen(8), dtype=F64, requires_grad=True)
    k = torch.randn(9, 4, generator=_gen(9), dtype=F64, requires_grad=True)
    tau = torch.tensor(0.7, dtype=F64, requires_grad=True)
    self_index = torch.tensor([0, 3, -1, 8, 4, -1, 2])
    assert torch.autograd.gradcheck(
        lambda x, y, t: _RectangularLSE.apply(x, y, t, self_index, tile), (q, k, tau)
    )


@pytest.mark.parametrize("tile", [2, 3, 16])
def test_gradcheck_symmetric(tile):
    y = torch.randn(9, 4, generator=_gen(10), dtype=F64, requires_grad=True)
    tau = torch.tensor(0.7, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: _SymmetricLSE.apply(x, t, tile), (y, tau))


def test_gradcheck_positive_sums():
    a = torch.randn(6, 3, generator=_gen(34), dtype=F64, requires_grad=True)
    c = torch.randn(8, 3, generator=_gen(35), dtype=F64, requires_grad=True)
    anchor_cls = torch.tensor([0, 1, 2, 1, 0, 3])
    contrast_cls = torch.tensor([1, 0, 0, 2, 1, 3, 3, 0])
    self_col = torch.tensor([1, 0, 3, 4, 2, 7])
    weight = (contrast_cls[self_col] == anchor_cls).to(F64)
    assert torch.autograd.gradcheck(
        lambda x, y: _PositiveSums.apply(x, y, anchor_cls, contrast_cls, self_col, weight, 4),
        (a, c),
    )


def test_gradcheck_fallback_paths():
    # tiny τ in float64 (the fixed shift underflows for every row) and unequal norms: the
    # rectangular online forward and the rectangular backward of the symmetric Function
    y = torch.randn(6, 3, generator=_gen(33), dtype=F64)
    y = (y * torch.tensor([1.0, 1.0, 30.0, 1.0, 0.1, 2.0], dtype=F64)[:, None]).requires_grad_()
    tau = torch.tensor(0.05, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: _SymmetricLSE.apply(x, t, 4), (y, tau))
    assert torch.autograd.gradcheck(
        lambda x, t: _RectangularLSE.apply(x, x * 0.5, t, torch.arange(6), 4), (y, tau)
    )


def test_gradcheck_public_losses_with_learnable_temperature():
    z1 = torch.randn(5, 4, generator=_gen(11), dtype=F64, requires_grad=True)
    z2 = torch.randn(5, 4, generator=_gen(12), dtype=F64, requires_grad=True)
    tau = torch.tensor(0.4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, t: nt_xent(a, b, t, impl="tiled", tile_size=3), (z1, z2, tau)
    )
    feats = torch.randn(4, 3, 4, generator=_gen(13), dtype=F64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2])
    for mode in ("all", "one"):
        assert torch.autograd.gradcheck(
            lambda f, t, m=mode: supcon(
                f, labels, t, base_temperature=0.5, contrast_mode=m, impl="tiled", tile_size=5
            ),
            (feats, tau),
        )
    neg = torch.randn(6, 4, generator=_gen(14), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, n, t: info_nce(q, k, n, t, impl="tiled", tile_size=4), (z1, z2, neg, tau)
    )


# --- public losses: tiled ≡ reference (loops) ≡ dense -----------------------------------------


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize(("n", "tile", "normalize"), [(6, 4, True), (3, 64, True), (9, 5, False)])
def test_nt_xent_tiled_equals_reference(n, tile, normalize):
    z1, z2 = (torch.randn(n, 5, generator=_gen(s), dtype=F64) for s in (15, 16))
    tau = torch.tensor(0.5, dtype=F64)
    results = []
    for impl in ("reference", "dense", "tiled"):
        a, b, t = _leaves(z1, z2, tau)
        loss = nt_xent(a, b, t, normalize=normalize, impl=impl, tile_size=tile)
        results.append((loss, *torch.autograd.grad(loss, [a, b, t])))
    _assert_close_all(results[2], results[0])
    _assert_close_all(results[2], results[1])


SUPCON_GRID = [
    # (n, v, labels, mode, base_temperature, tile)
    (4, 2, None, "all", None, 3),
    (5, 3, "few", "all", 0.07, 4),  # V = 3, τ_b
    (5, 3, "few", "one", None, 4),
    (6, 1, "singletons", "all", None, 4),  # V = 1: only the repeated label has positives
    (3, 2, "few", "all", None, 64),  # N·V smaller than a tile
    (7, 2, None, "one", 0.1, 5),
]


@pytest.mark.parametrize(("n", "v", "labels", "mode", "base", "tile"), SUPCON_GRID)
def test_supcon_tiled_equals_reference(n, v, labels, mode, base, tile):
    feats = torch.randn(n, v, 5, generator=_gen(17), dtype=F64)
    y = {
        None: None,
        "few": torch.randint(0, 2, (n,), generator=_gen(18)),
        "singletons": torch.tensor([0, 1, 2, 3, 0, 4])[:n],
    }[labels]
    tau = torch.tensor(0.3, dtype=F64)
    results = []
    for impl in ("reference", "dense", "tiled"):
        f, t = _leaves(feats, tau)
        loss = supcon(f, y, t, base_temperature=base, contrast_mode=mode, impl=impl, tile_size=tile)
        results.append((loss, *torch.autograd.grad(loss, [f, t])))
    _assert_close_all(results[2], results[0])
    _assert_close_all(results[2], results[1])


def test_supcon_tiled_no_positive_is_zero_with_warning():
    feats = torch.randn(4, 1, 3, dtype=F64, requires_grad=True)
    with pytest.warns(UserWarning, match="no anchor"):
        loss = supcon(feats, torch.arange(4), impl="tiled", tile_size=2)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(feats.grad, torch.zeros_like(feats))


@pytest.mark.parametrize(
    ("negatives", "mode", "reduction"),
    [(None, "unpaired", "mean"), ("shared", "unpaired", "none"), ("own", "paired", "sum")],
)
def test_info_nce_tiled_equals_reference(negatives, mode, reduction):
    q, k = (torch.randn(7, 5, generator=_gen(s), dtype=F64) for s in (19, 20))
    neg = {
        None: None,
        "shared": torch.randn(11, 5, generator=_gen(21), dtype=F64),
        "own": torch.randn(7, 4, 5, generator=_gen(22), dtype=F64),
    }[negatives]
    tau = torch.tensor(0.2, dtype=F64)
    results = []
    for impl in ("reference", "dense", "tiled"):
        leaves = _leaves(q, k, tau) + ([] if neg is None else _leaves(neg))
        qq, kk, t = leaves[:3]
        nn_ = leaves[3] if neg is not None else None
        loss = info_nce(
            qq, kk, nn_, t, negative_mode=mode, reduction=reduction, impl=impl, tile_size=3
        )
        results.append((loss, *_grads(loss, leaves)))
    _assert_close_all(results[2], results[0])
    _assert_close_all(results[2], results[1])


# --- precision, robustness, memory, dispatch ---------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype):
    z1, z2 = (torch.randn(40, 16, generator=_gen(s)).to(dtype) for s in (23, 24))
    loss = nt_xent(z1, z2, 0.1, impl="tiled", tile_size=16)
    assert loss.dtype == torch.float32
    exact = nt_xent(z1.double(), z2.double(), 0.1, impl="dense")
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tau", [0.005, 0.002])
def test_tiny_temperature_float32_stays_exact(tau):
    # s_ij − 1/τ < −87 for most pairs: a fixed 1/τ shift underflows to log(0) (HobbitLong #100);
    # the symmetric path detects those rows and redoes them with a running max.
    z1, z2 = (torch.randn(64, 32, generator=_gen(s)) for s in (25, 26))
    loss = nt_xent(z1, z2, tau, impl="tiled", tile_size=16)
    exact = nt_xent(z1.double(), z2.double(), tau, impl="dense")
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=1e-4)
    a, b = _leaves(z1, z2)
    nt_xent(a, b, tau, impl="tiled", tile_size=16).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_unequal_norms_take_the_exact_path():
    # normalize=False with rows of very different norms: the shared shift would overflow
    z = torch.randn(30, 8, generator=_gen(27), dtype=F64)
    z = z * torch.logspace(-1, 1.5, 30, dtype=F64)[:, None]
    z.requires_grad_()
    cls = torch.arange(30) % 6
    r0, _ = row_log_probs(z, z, cls, cls, torch.arange(30), 0.05)
    r1, _ = self_row_log_probs_tiled(z, cls, 0.05, tile_size=7)
    torch.testing.assert_close(r1, r0, **TOL)
    _assert_close_all(_grads(r1, [z]), _grads(r0, [z]), rtol=1e-9, atol=1e-9)


def test_nothing_quadratic_is_saved_for_backward():
    n, d, tile = 1024, 8, 64
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    z1, z2 = (torch.randn(n, d, generator=_gen(s), requires_grad=True) for s in (28, 29))
    feats = torch.randn(n, 2, d, generator=_gen(30), requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nt_xent(z1, z2, impl="tiled", tile_size=tile).backward()
        supcon(feats, torch.arange(n) % 10, contrast_mode="one", impl="tiled").backward()
        info_nce(z1, z2, impl="tiled", tile_size=tile).backward()
    assert sizes and max(sizes) <= 4 * n * (d + 2)  # O(N·D); an (N, N) matrix has 1,048,576


def _backward_nodes(loss: torch.Tensor) -> set[str]:
    """Names of every autograd node behind ``loss``: which code computed it."""
    names, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(child for child, _ in node.next_functions)
    return names


def _path(loss: torch.Tensor) -> str:
    """The path that computed ``loss``: the tiled Function in its graph, or "dense"."""
    nodes = _backward_nodes(loss)
    tiled_nodes = {"_SymmetricLSEBackward": "symmetric", "_RectangularLSEBackward": "rectangular"}
    found = [path for node, path in tiled_nodes.items() if node in nodes]
    assert len(found) <= 1, found
    return found[0] if found else "dense"


def _auto_case(loss: str, n: int) -> torch.Tensor:
    """The loss of ``loss`` at batch size n with impl="auto", on D = 2 inputs that need a grad."""
    gen = _gen(40)
    if loss == "info_nce_unpaired":  # 768 queries against n shared negatives
        q, k = torch.randn(2, 768, 2, generator=gen, requires_grad=True)
        return info_nce(q, k, torch.randn(n, 2, generator=gen), impl="auto")
    if loss == "info_nce":
        q, k = torch.randn(2, n, 2, generator=gen, requires_grad=True)
        return info_nce(q, k, impl="auto")
    if loss == "nt_xent":
        z1, z2 = torch.randn(2, n, 2, generator=gen, requires_grad=True)
        return nt_xent(z1, z2, impl="auto")
    mode = "one" if loss == "supcon_one" else "all"
    feats = torch.randn(n, 2, 2, generator=gen, requires_grad=True)
    return supcon(feats, torch.arange(n) % 3, contrast_mode=mode, impl="auto")


@pytest.mark.parametrize(
    ("loss", "below", "at", "tiled_path"),
    [
        # the first batch size whose anchors × contrasts reaches AUTO_MIN_PAIRS, and the one before
        ("nt_xent", 191, 192, "symmetric"),  # 2N × 2N ≥ 384²
        ("supcon_all", 191, 192, "symmetric"),  # NV × NV ≥ 384², V = 2
        ("supcon_one", 543, 544, "rectangular"),  # N × NV ≥ 768², V = 2
        ("info_nce", 767, 768, "rectangular"),  # N × N ≥ 768²
        ("info_nce_unpaired", 767, 768, "rectangular"),  # 768 queries × M negatives ≥ 768²
    ],
)
def test_auto_switches_on_size(loss, below, at, tiled_path):
    # the path that ran, read from the autograd graph; values alone hold whichever path ran
    assert _path(_auto_case(loss, below)) == "dense"
    assert _path(_auto_case(loss, at)) == tiled_path


def test_auto_follows_the_crossover_table(monkeypatch):
    z1, z2 = torch.randn(2, 6, 4, dtype=F64, requires_grad=True)
    assert _path(nt_xent(z1, z2, impl="auto")) == "dense"
    monkeypatch.setattr(tiled, "AUTO_MIN_PAIRS", {"symmetric": 1, "rectangular": 1})
    loss = nt_xent(z1, z2, impl="auto")
    assert _path(loss) == "symmetric"
    torch.testing.assert_close(loss, reference.nt_xent(z1, z2), **TOL)


# --- a denominator of one term, which is the positive: exactly 0, exactly zero gradients ------


def _one_term_cases() -> dict[str, tuple[str, ...]]:
    """Batches where every anchor with a positive has |A(i)| = 1 (so A(i) = P(i) = {p})."""
    return {
        "nt_xent N=1": ("nt_xent", "1"),
        "supcon no labels N=1 V=2 all": ("supcon", "1x2", "none", "all"),
        "supcon no labels N=1 V=2 one": ("supcon", "1x2", "none", "one"),
        "supcon labels N=1 V=2 all": ("supcon", "1x2", "labels", "all"),
        "supcon labels N=1 V=2 one": ("supcon", "1x2", "labels", "one"),
        "supcon labels N=2 V=1 all": ("supcon", "2x1", "labels", "all"),
        "supcon labels N=2 V=1 one": ("supcon", "2x1", "labels", "one"),
        "supcon base_temperature N=1 V=2": ("supcon", "1x2", "none", "all", "tau_b"),
        "info_nce in-batch N=1 mean": ("info_nce", "mean"),
        "info_nce in-batch N=1 none": ("info_nce", "none"),
    }


def _one_term_loss(case: tuple[str, ...], impl: str, dtype: torch.dtype):
    gen = _gen(41)
    tau = torch.tensor(0.07, dtype=dtype, requires_grad=True)
    options = {"impl": impl, "tile_size": 1} if impl == "tiled" else {"impl": impl}
    if case[0] == "nt_xent":
        z1, z2 = torch.randn(2, 1, 5, generator=gen, dtype=dtype, requires_grad=True)
        return nt_xent(z1, z2, tau, **options), [z1, z2, tau]
    if case[0] == "info_nce":
        q, k = torch.randn(2, 1, 5, generator=gen, dtype=dtype, requires_grad=True)
        return info_nce(q, k, None, tau, reduction=case[1], **options), [q, k, tau]
    n, v = (int(x) for x in case[1].split("x"))
    feats = torch.randn(n, v, 5, generator=gen, dtype=dtype, requires_grad=True)
    labels = None if case[2] == "none" else torch.full((n,), 3)
    base = 0.5 if case[-1] == "tau_b" else None
    loss = supcon(feats, labels, tau, base_temperature=base, contrast_mode=case[3], **options)
    return loss, [feats, tau]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("impl", ["reference", "dense", "tiled"])
@pytest.mark.parametrize("case", list(_one_term_cases().values()), ids=list(_one_term_cases()))
def test_one_term_denominator_is_exactly_zero(case, impl, dtype):
    # ℓ_i = −log(e^{l}/e^{l}) = 0 and so is every gradient, learnable τ included: the tiled code
    # must not return the rounding difference of two separately computed numbers (up to 1e-4)
    loss, leaves = _one_term_loss(case, impl, dtype)
    grads = torch.autograd.grad(loss.sum(), leaves)
    assert torch.equal(loss, torch.zeros_like(loss)), loss
    for leaf, grad in zip(leaves, grads, strict=True):
        assert torch.equal(grad, torch.zeros_like(leaf)), grad


def test_rectangular_one_term_rows_beside_longer_rows():
    # one contrast (anchor 0 itself): anchor 0 has no term, the others one, which is their positive
    anchors = torch.randn(4, 3, generator=_gen(42), dtype=F64, requires_grad=True)
    contrasts = anchors[:1]
    classes = torch.zeros(4, dtype=torch.long)
    self_index = torch.tensor([0, -1, -1, -1])
    r, num_positives = row_log_probs_tiled(
        anchors, contrasts, classes, classes[:1], self_index, 0.1, tile_size=2
    )
    assert num_positives.tolist() == [0, 1, 1, 1]
    assert torch.equal(r, torch.zeros(4, dtype=F64))
    (grad,) = torch.autograd.grad(r.sum(), [anchors])
    assert torch.equal(grad, torch.zeros_like(grad))


def test_tile_size_must_be_positive():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="tile_size"):
        tiled_log_sum_exp(z, z, None, 0.1, tile_size=0)


def test_tiled_module_makes_no_cpu_only_calls():
    source = inspect.getsource(tiled)
    for call in (".cpu(", ".numpy(", ".item(", ".tolist(", "import numpy"):
        assert call not in source, call
