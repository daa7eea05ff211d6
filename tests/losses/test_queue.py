"""Queues of keys: MoCo's ``info_nce(q, k, queue)`` and SupCon with a (labelled) queue.

Every fast impl against the loop oracles of ``reference`` (float64, values and gradients, a
learnable τ), hand-computed cases, gradcheck; the queue never receives a gradient.
"""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.losses import SupConLoss, info_nce, reference, supcon

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
FAST = [("dense", None), ("tiled", None), ("tiled", 5), ("auto", None)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- MoCo: info_nce(q, k, queue) ----------------------------------------------------------------


def _moco_step(impl: str, tile: int | None, dtype: torch.dtype = F64):
    """One MoCo v2 loss: q from a learnable encoder, k from its copy under no_grad, a queue of K
    L2-normalised keys that requires no grad, a learnable τ (MoCo v2: 0.2)."""
    torch.manual_seed(0)
    encoder = torch.nn.Linear(12, 8, dtype=F64).to(dtype)  # float64 draws, then the dtype
    momentum = torch.nn.Linear(12, 8, dtype=dtype)
    momentum.load_state_dict(encoder.state_dict())
    x_q, x_k = torch.randn(2, 6, 12, generator=_gen(1), dtype=F64).to(dtype)
    keys = torch.randn(37, 8, generator=_gen(2), dtype=F64).to(dtype)
    queue = torch.nn.functional.normalize(keys, dim=1)
    tau = torch.nn.Parameter(torch.tensor(0.2, dtype=dtype))
    q = encoder(x_q)
    with torch.no_grad():
        k = momentum(x_k)
    loss = info_nce(q, k, queue, tau, impl=impl, tile_size=tile)
    loss.backward()
    assert not k.requires_grad and not queue.requires_grad and queue.grad is None
    return loss.detach(), [encoder.weight.grad, encoder.bias.grad, tau.grad]


@pytest.mark.parametrize(("impl", "tile"), FAST)
def test_moco_loss_equals_the_loop_oracle_with_a_learnable_temperature(impl, tile):
    ref, ref_grads = _moco_step("reference", None)
    value, grads = _moco_step(impl, tile)
    torch.testing.assert_close(value, ref, **TOL)
    for got, want in zip(grads, ref_grads, strict=True):
        assert want is not None and float(want.abs().max()) > 1e-6  # not a vacuous comparison
        torch.testing.assert_close(got, want, **TOL)


def test_moco_loss_float32_is_close_to_float64():
    ref, _ = _moco_step("reference", None)
    for impl in ("dense", "tiled"):
        value, grads = _moco_step(impl, 5, torch.float32)
        torch.testing.assert_close(value.double(), ref, rtol=1e-5, atol=1e-5)
        assert all(torch.isfinite(g).all() for g in grads)


def test_moco_by_hand():
    # q = k = e0, queue e1 and −e0: ℓ = −log(e^{1/τ} / (e^{1/τ} + e^0 + e^{−1/τ}))
    tau = 0.2
    q = torch.tensor([[1.0, 0.0]], dtype=F64)
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    e = math.exp(1 / tau)
    expected = torch.tensor(-math.log(e / (e + 1 + 1 / e)), dtype=F64)
    for impl, tile in FAST:
        torch.testing.assert_close(
            info_nce(q, q.clone(), queue, tau, impl=impl, tile_size=tile), expected
        )


# --- SupCon with a queue --------------------------------------------------------------------------


def _labels(kind: str | None, n: int) -> torch.Tensor | None:
    return {
        None: None,
        "few": torch.arange(n) % 3,
        "singletons": torch.arange(n) + 10,  # no positive inside the batch with V = 1
    }[kind]


def _queue(kind: str, k: int, d: int):
    keys = torch.randn(k, d, generator=_gen(50), dtype=F64)
    if kind == "unlabelled":
        return keys
    if kind == "labelled":  # classes of the batch ("few": 0-2; "singletons": 10-15) and others
        return keys, torch.tensor([0, 1, 2, 10, 11, 12, 13, 7, 8] * 4)[:k]
    return keys, torch.full((k,), 99)  # "no-match": labelled, but no anchor has its class


QUEUE_GRID = [
    # (n, v, labels, contrast_mode, base_temperature, queue kind, K, tile)
    (6, 2, "few", "all", None, "labelled", 9, 4),
    (5, 3, "few", "one", 0.07, "labelled", 7, 3),
    (6, 1, "singletons", "all", None, "labelled", 5, 4),  # every positive is in the queue
    (6, 1, "few", "one", None, "labelled", 11, 64),  # V = 1, N·V + K smaller than a tile
    (3, 2, "few", "all", None, "no-match", 4, 2),  # the queue holds negatives only
    (4, 2, None, "all", None, "unlabelled", 10, 3),  # MoCo-style: no labels anywhere
    (4, 3, None, "one", 0.1, "unlabelled", 6, 5),
]


def _supcon_queue_results(n, v, labels, mode, base, kind, k, tile, impl):
    features = torch.randn(n, v, 5, generator=_gen(40), dtype=F64).requires_grad_()
    tau = torch.tensor(0.3, dtype=F64, requires_grad=True)
    queue = _queue(kind, k, 5)
    keys = queue if isinstance(queue, torch.Tensor) else queue[0]
    keys.requires_grad_()  # a queue handed over with a graph still gets no gradient
    loss = supcon(
        features,
        _labels(labels, n),
        tau,
        base_temperature=base,
        contrast_mode=mode,
        impl=impl,
        tile_size=tile,
        queue=queue,
    )
    grads = torch.autograd.grad(loss, [features, tau, keys], allow_unused=True)
    assert grads[2] is None, "the queue must get no gradient"
    return loss.detach(), grads[:2]


@pytest.mark.parametrize(("n", "v", "labels", "mode", "base", "kind", "k", "tile"), QUEUE_GRID)
def test_supcon_with_a_queue_equals_the_loop_oracle(n, v, labels, mode, base, kind, k, tile):
    ref, ref_grads = _supcon_queue_results(n, v, labels, mode, base, kind, k, tile, "reference")
    assert float(ref_grads[0].abs().max()) > 1e-6 and float(ref_grads[1].abs()) > 1e-6
    for impl in ("dense", "tiled", "auto"):
        value, grads = _supcon_queue_results(n, v, labels, mode, base, kind, k, tile, impl)
        torch.testing.assert_close(value, ref, **TOL)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, **TOL)


def test_queue_changes_the_loss_as_the_formula_says():
    # the queue adds contrasts (no-match keys raise every denominator) and, labelled, positives
    features = torch.randn(4, 2, 5, generator=_gen(41), dtype=F64)
    labels = torch.tensor([0, 1, 0, 1])
    keys = torch.randn(3, 5, generator=_gen(42), dtype=F64)
    plain = supcon(features, labels, 0.3)
    negatives_only = supcon(features, labels, 0.3, queue=(keys, torch.full((3,), 5)))
    with_positives = supcon(features, labels, 0.3, queue=(keys, torch.tensor([0, 1, 5])))
    assert negatives_only > plain
    assert not torch.isclose(with_positives, negatives_only)


@pytest.mark.parametrize(("impl", "tile"), [("reference", None), *FAST])
def test_supcon_queue_by_hand(impl, tile):
    tau = 0.5
    e = math.exp(1 / tau)
    # one sample, one view, label 0 (no positive in the batch); queue: e0 of class 0 (its only
    # positive) and e1 of class 1: ℓ = −log(e^{1/τ} / (e^{1/τ} + e^0))
    anchor = torch.tensor([[[1.0, 0.0]]], dtype=F64)
    queue = (torch.eye(2, dtype=F64), torch.tensor([0, 1]))
    loss = supcon(anchor, torch.tensor([0]), tau, impl=impl, tile_size=tile, queue=queue)
    torch.testing.assert_close(loss, torch.tensor(-math.log(e / (e + 1)), dtype=F64))
    # labels=None: one sample with two views e0, e0 and an unlabelled queue (e1, −e0): for
    # either anchor, P = {the other view} (s = 1), A = {it, e1 (s = 0), −e0 (s = −1)}
    views = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=F64)
    keys = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    loss = supcon(views, None, tau, impl=impl, tile_size=tile, queue=keys)
    expected = -math.log(e / (e + 1 + 1 / e))
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("impl", ["dense", "tiled"])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_supcon_queue_gradcheck(impl, mode):
    features = torch.randn(4, 2, 3, generator=_gen(43), dtype=F64, requires_grad=True)
    tau = torch.tensor(0.4, dtype=F64, requires_grad=True)
    keys = torch.randn(5, 3, generator=_gen(44), dtype=F64)
    labels, queue_labels = torch.tensor([0, 1, 0, 2]), torch.tensor([1, 0, 3, 2, 1])
    for queue, y in (((keys, queue_labels), labels), (keys, None)):
        assert torch.autograd.gradcheck(
            lambda f, t, q=queue, y=y: supcon(
                f, y, t, base_temperature=0.5, contrast_mode=mode, impl=impl, tile_size=3, queue=q
            ),
            (features, tau),
        )


def test_supcon_queue_in_half_precision_computes_in_float32():
    features = torch.randn(6, 2, 8, generator=_gen(45))
    keys = torch.randn(7, 8, generator=_gen(46))
    labels, queue_labels = torch.arange(6) % 3, torch.arange(7) % 4
    half = supcon(features.half(), labels, 0.1, queue=(keys.half(), queue_labels))
    assert half.dtype == torch.float32
    exact = supcon(features.half().float(), labels, 0.1, queue=(keys.half().float(), queue_labels))
    torch.testing.assert_close(half, exact)


def test_supcon_module_passes_the_queue():
    features = torch.randn(6, 2, 4, generator=_gen(47))
    queue = (torch.randn(5, 4, generator=_gen(48)), torch.arange(5) % 2)
    labels = torch.arange(6) % 2
    module = SupConLoss(temperature=0.2, contrast_mode="one")
    torch.testing.assert_close(
        module(features, labels, queue),
        supcon(features, labels, 0.2, contrast_mode="one", queue=queue),
    )


def test_reference_queue_is_the_loop_of_the_formula():
    # the oracle itself against the formula written out for one anchor-set by hand
    features = torch.randn(2, 1, 3, generator=_gen(49), dtype=F64)
    keys = torch.randn(2, 3, generator=_gen(51), dtype=F64)
    labels, queue_labels = torch.tensor([0, 1]), torch.tensor([0, 0])
    z = torch.nn.functional.normalize(features[:, 0], dim=1)
    c = torch.nn.functional.normalize(keys, dim=1)
    tau = 0.3
    # anchor 0 (class 0): A = {z1, c0, c1}, P = {c0, c1}; anchor 1 (class 1): no positive
    logits = torch.stack([z[0] @ z[1], z[0] @ c[0], z[0] @ c[1]]) / tau
    expected = -(logits[1:] - torch.logsumexp(logits, 0)).mean()
    torch.testing.assert_close(
        reference.supcon(features, labels, tau, queue=(keys, queue_labels)), expected
    )
