"""Differential test against lightly 1.6.0's ``NTXentLoss``: with a memory bank it is MoCo's loss.

``NTXentLoss(memory_bank_size=(K, D))`` (lightly 1.6 wants the feature dimension in the size)
normalises both outputs, reads its bank of K keys (the state before this step), takes
cross-entropy of [q·k, q·bank] / τ with target 0, then enqueues the keys: that is
``info_nce(q, k, bank)``. Without a bank it is NT-Xent. Needs lightly (dev extra).
"""

from __future__ import annotations

import pytest
import torch

from contrastkit.losses import info_nce, nt_xent

lightly_loss = pytest.importorskip("lightly.loss", reason="dev extra: lightly==1.6.0")

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("impl", "tile", "bank_size"),
    [("dense", None, 48), ("tiled", 5, 48), ("auto", None, 48), ("auto", None, 36_864)],
)
def test_info_nce_with_a_queue_equals_lightly_memory_bank(impl, tile, bank_size):
    # 36,864 keys × 16 queries = 768²: impl="auto" is tiled there (tests/losses/test_dispatch.py)
    n, d, tau = 16, 8, 0.2
    theirs_fn = lightly_loss.NTXentLoss(temperature=tau, memory_bank_size=(bank_size, d))
    bank = torch.randn(bank_size, d, generator=_gen(0), dtype=F64)
    theirs_fn.memory_bank.bank = torch.nn.functional.normalize(bank, dim=1)  # the bank state
    for step in range(3):  # later steps read a bank that holds the keys of the earlier ones
        q = torch.randn(n, d, generator=_gen(10 + step), dtype=F64, requires_grad=True)
        k = torch.randn(n, d, generator=_gen(20 + step), dtype=F64)  # a key encoder's output
        queue = theirs_fn.memory_bank.bank.clone()  # what lightly reads in this step
        ours = info_nce(q, k, queue, tau, impl=impl, tile_size=tile)
        (g_ours,) = torch.autograd.grad(ours, q)
        theirs = theirs_fn(q, k)  # reads the bank, then enqueues normalize(k)
        (g_theirs,) = torch.autograd.grad(theirs, q)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-9, atol=1e-12)
        assert not torch.equal(theirs_fn.memory_bank.bank, queue)  # the bank moved on


@pytest.mark.parametrize("impl", ["dense", "tiled"])
def test_nt_xent_equals_lightly_without_a_bank(impl):
    z1, z2 = torch.randn(2, 12, 8, generator=_gen(1), dtype=F64)
    theirs = lightly_loss.NTXentLoss(temperature=0.3)(z1, z2)
    torch.testing.assert_close(
        nt_xent(z1, z2, 0.3, impl=impl, tile_size=5), theirs, rtol=1e-10, atol=1e-10
    )
