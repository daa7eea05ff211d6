"""One dispatch: every fast loss reaches dense or tiled code through ``ROW_IMPLS`` only.

Each function of the table is wrapped by a recorder that calls the real function, so the losses
compute as usual while the test sees which implementation and which entry ran. A loss that chose
or called dense/tiled code on its own would record nothing, or the wrong entry.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from contrastkit.losses import _gathered, info_nce, nt_xent, reference, supcon

F64 = torch.float64


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    record: list[tuple[str, str]] = []

    def recorder(fn: Callable, key: tuple[str, str]) -> Callable:
        def recorded(*args, **kwargs):
            record.append(key)
            return fn(*args, **kwargs)

        return recorded

    for impl, core in list(_gathered.ROW_IMPLS.items()):
        wrapped = {f: recorder(getattr(core, f), (impl, f)) for f in core._fields}
        monkeypatch.setitem(_gathered.ROW_IMPLS, impl, _gathered.RowsCore(**wrapped))
    return record


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


Z1, Z2 = _randn(5, 4, seed=1), _randn(5, 4, seed=2)
FEATS, LABELS = _randn(5, 2, 4, seed=3), torch.tensor([0, 1, 0, 1, 2])
QUEUE = (_randn(6, 4, seed=4), torch.tensor([0, 1, 2, 3, 0, 1]))
NEG = _randn(7, 4, seed=5)

LOSSES = {
    # name: (loss of impl, its oracle, the table entry it must use)
    "nt_xent": (lambda impl: nt_xent(Z1, Z2, impl=impl), reference.nt_xent(Z1, Z2), "self_rows"),
    "supcon all": (
        lambda impl: supcon(FEATS, LABELS, impl=impl),
        reference.supcon(FEATS, LABELS),
        "self_rows",
    ),
    "supcon one": (
        lambda impl: supcon(FEATS, LABELS, contrast_mode="one", impl=impl),
        reference.supcon(FEATS, LABELS, contrast_mode="one"),
        "rows",
    ),
    "supcon queue": (
        lambda impl: supcon(FEATS, LABELS, impl=impl, queue=QUEUE),
        reference.supcon(FEATS, LABELS, queue=QUEUE),
        "rows",  # a queue makes the block rectangular, even with contrast_mode="all"
    ),
    "supcon gather": (
        lambda impl: supcon(FEATS, None, impl=impl, gather=True),
        reference.supcon(FEATS),
        "self_rows",  # unlaunched: nothing is gathered
    ),
    "info_nce in-batch": (
        lambda impl: info_nce(Z1, Z2, impl=impl),
        reference.info_nce(Z1, Z2),
        "log_sum_exp",
    ),
    "info_nce gather": (
        lambda impl: info_nce(Z1, Z2, impl=impl, gather=True),
        reference.info_nce(Z1, Z2),
        "log_sum_exp",
    ),
    "info_nce shared negatives": (
        lambda impl: info_nce(Z1, Z2, NEG, impl=impl),
        reference.info_nce(Z1, Z2, NEG),
        "log_sum_exp",
    ),
}


@pytest.mark.parametrize("impl", ["dense", "tiled", "auto"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_goes_through_the_table(loss, impl, calls):
    fn, oracle, entry = LOSSES[loss]
    value = fn(impl)
    expected_impl = "dense" if impl == "auto" else impl  # these batches are far below the crossover
    assert calls == [(expected_impl, entry)]
    torch.testing.assert_close(value, oracle, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["dense", "tiled", "auto"])
def test_paired_negatives_stay_dense_outside_the_table(impl, calls):
    # the (N, M) logits are D times smaller than the (N, M, D) negatives: nothing to tile
    neg = _randn(5, 3, 4, seed=6)
    value = info_nce(Z1, Z2, neg, negative_mode="paired", impl=impl)
    assert calls == []
    expected = reference.info_nce(Z1, Z2, neg, negative_mode="paired")
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("queries", "keys", "expected"),
    [(16, 36_863, "dense"), (16, 36_864, "tiled")],  # 16 × 36,864 = 768², the crossover (MoCo)
)
def test_many_shared_negatives_go_tiled_through_the_table(queries, keys, expected, calls):
    q, k = _randn(queries, 4, seed=7), _randn(queries, 4, seed=8)
    queue = _randn(keys, 4, seed=9)
    value = info_nce(q, k, queue, 0.2, impl="auto")
    assert calls == [(expected, "log_sum_exp")]
    other = "dense" if expected == "tiled" else "tiled"
    torch.testing.assert_close(
        value, info_nce(q, k, queue, 0.2, impl=other), rtol=1e-10, atol=1e-10
    )


def test_a_large_supcon_queue_goes_tiled_through_the_table(calls):
    # 32 anchors (N = 16, V = 2) against 32 views + 18,400 keys ≥ 768² pairs
    feats, labels = _randn(16, 2, 4, seed=10), torch.arange(16) % 5
    queue = (_randn(18_400, 4, seed=11), torch.arange(18_400) % 7)
    value = supcon(feats, labels, 0.1, queue=queue)
    assert calls == [("tiled", "rows")]
    dense = supcon(feats, labels, 0.1, queue=queue, impl="dense")
    torch.testing.assert_close(value, dense, rtol=1e-10, atol=1e-10)
