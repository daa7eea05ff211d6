"""MoCo's training side: the key queue, the EMA, split batch norm, and one step against lightly.

Oracles: a ``collections.deque(maxlen=K)`` for the FIFO queue, hand computations for the EMA and
its cosine schedule, per-sub-batch ``nn.BatchNorm`` layers for split batch norm, the MoCo v3
paper's ``ctr`` written with ``F.cross_entropy``, and lightly 1.6 (``NTXentLoss`` with a memory
bank, ``update_momentum``) for a whole MoCo step.
"""

from __future__ import annotations

import copy
import math
from collections import deque

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.train import recipes
from contrastkit.train.config import PretrainConfig
from contrastkit.train.loop import compute_loss, train_step
from contrastkit.train.methods import METHODS, MomentumMethod
from contrastkit.train.momentum import KeyQueue, ema_momentum, ema_update
from contrastkit.train.networks import DataShape
from contrastkit.train.rules import MOMENTUM_METHODS, QUEUE_METHODS
from contrastkit.train.state import build_training_state

SHAPE = DataShape(1, 8, 10, [0.5], [0.25], [str(c) for c in range(10)])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the queue ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "batches"), [(10, [4, 4, 4, 4, 4]), (12, [4] * 5), (7, [7, 3, 5])]
)
def test_queue_is_fifo_with_a_wrapping_pointer_as_a_deque(size, batches):
    """The queue read from its pointer (oldest) round to pointer − 1 (newest) is a deque of K."""
    queue = KeyQueue(size, 3, generator=_gen(0))
    oracle = deque(zip(queue.keys.clone(), queue.labels.clone(), strict=True), maxlen=size)
    ptr = 0
    for step, n in enumerate(batches):
        keys = torch.randn(n, 3, generator=_gen(10 + step))
        labels = torch.arange(n) + 100 * step
        queue.enqueue(keys, labels)
        oracle.extend(zip(F.normalize(keys, dim=1), labels, strict=True))
        ptr = (ptr + n) % size
        assert int(queue.ptr) == ptr
        order = torch.roll(torch.arange(size), -ptr)  # oldest first
        torch.testing.assert_close(queue.keys[order], torch.stack([k for k, _ in oracle]))
        assert queue.labels[order].tolist() == [int(lab) for _, lab in oracle]


def test_queue_starts_with_unit_keys_without_labels_and_stores_unit_keys():
    queue = KeyQueue(6, 4, generator=_gen(1))
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(6))
    assert queue.labels.tolist() == [-1] * 6 and int(queue.ptr) == 0
    queue.enqueue(3 * torch.ones(2, 4))
    torch.testing.assert_close(queue.keys[:2], torch.full((2, 4), 0.5))
    assert queue.labels[:2].tolist() == [-1, -1]


def test_enqueue_takes_no_gradient():
    queue = KeyQueue(4, 2, generator=_gen(2))
    keys = torch.randn(2, 2, requires_grad=True)
    queue.enqueue(keys * 2)
    assert not queue.keys.requires_grad and queue.keys.grad_fn is None


@pytest.mark.parametrize(
    ("keys", "labels", "message"),
    [
        (torch.zeros(2, 5), None, r"keys must have shape \(N, 4\) with 1 <= N <= 6 .*got \(2, 5\)"),
        (torch.zeros(7, 4), None, r"1 <= N <= 6 \(the queue's size\), got \(7, 4\)"),
        (torch.zeros(4), None, r"got \(4,\)"),
        (torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), r"labels must have shape \(2,\)"),
    ],
)
def test_enqueue_refuses_bad_shapes(keys, labels, message):
    with pytest.raises(ValueError, match=message):
        KeyQueue(6, 4).enqueue(keys, labels)


@pytest.mark.parametrize(("size", "dim"), [(0, 4), (4, 0), (2.5, 4), (True, 4)])
def test_queue_refuses_bad_sizes(size, dim):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        KeyQueue(size, dim)


# --- the EMA --------------------------------------------------------------------------------


def test_ema_update_is_the_hand_computed_average_of_parameters_only():
    source, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        source.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        target.weight.copy_(torch.tensor([11.0, 12.0, 13.0]))
        source.running_mean.fill_(5.0)
    ema_update(target, source, 0.9)
    torch.testing.assert_close(target.weight.data, torch.tensor([10.0, 11.0, 12.0]))  # .9t+.1s
    torch.testing.assert_close(target.bias.data, torch.zeros(3))  # 0.9·0 + 0.1·0
    assert target.running_mean.tolist() == [0.0, 0.0, 0.0]  # buffers are the key network's own
    ema_update(target, source, 1.0)
    torch.testing.assert_close(target.weight.data, torch.tensor([10.0, 11.0, 12.0]))
    ema_update(target, source, 0.0)
    torch.testing.assert_close(target.weight.data, source.weight.data)


def test_ema_momentum_schedules_by_hand():
    assert ema_momentum(0.99, 7, 10, "constant") == 0.99
    assert ema_momentum(0.99, 0, 10, "cosine") == pytest.approx(0.99)
    assert ema_momentum(0.99, 5, 10, "cosine") == pytest.approx(0.995)
    assert ema_momentum(0.99, 10, 10, "cosine") == pytest.approx(1.0)
    third = 1 - 0.01 * (math.cos(math.pi / 3) + 1) / 2  # 0.9925
    assert ema_momentum(0.99, 4, 12, "cosine") == pytest.approx(third) == pytest.approx(0.9925)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1.5, 0, 1, "constant"), r"momentum must be in \[0, 1\], got 1.5"),
        ((-0.1, 0, 1, "constant"), r"momentum must be in \[0, 1\], got -0.1"),
        ((0.9, 0, 1, "linear"), "unknown EMA schedule 'linear'; choose one of constant, cosine"),
        ((0.9, -1, 1, "cosine"), "need step >= 0 and total_steps >= 1"),
    ],
)
def test_ema_momentum_refuses_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        ema_momentum(*args)


def test_ema_update_refuses_other_networks_and_bad_momentum():
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(nn.Linear(2, 3), nn.Linear(3, 2), 0.9)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 2"):
        ema_update(nn.Linear(2, 3), nn.Linear(2, 3), 2)


# --- methods in the training state ----------------------------------------------------------


def _state(method: str, **options):
    cfg = recipes.resolve(
        PretrainConfig(
            method=method,
            batch_size=16,
            epochs=2,
            warmup_epochs=0,
            model="small_cnn",
            norm=options.pop("norm", "group"),
            device="cpu",
            precision="fp32",
            out="unused",
            **options,
        )
    )
    return cfg, build_training_state(cfg, SHAPE, n_train=64, device=torch.device("cpu"))


def _views(seed: int, n: int = 16) -> torch.Tensor:
    return torch.randn(n, 2, 1, 8, 8, generator=_gen(seed))


def test_the_rules_name_the_momentum_methods_methods_has():
    momentum = {name for name, m in METHODS.items() if isinstance(m, MomentumMethod)}
    queued = {name for name in momentum if METHODS[name].queued}  # type: ignore[attr-defined]
    assert momentum == set(MOMENTUM_METHODS) and queued == set(QUEUE_METHODS)


@pytest.mark.parametrize("method", ["moco", "supcon-moco"])
def test_no_gradient_reaches_the_key_network_or_the_queue(method):
    cfg, state = _state(method, queue_size=40)
    assert state.momentum is not None and state.momentum.queue is not None
    loss = compute_loss(cfg, state, _views(0), torch.arange(16) % 4)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in state.momentum.parameters())
    assert state.momentum.queue.keys.grad is None and not state.momentum.queue.keys.requires_grad
    assert all(p.grad is not None for p in state.encoder.parameters())


def test_moco_v3_loss_is_the_papers_ctr_times_two_tau():
    cfg, state = _state("mocov3")
    assert state.momentum is not None and state.momentum.queue is None
    views = _views(3)
    tau = cfg.temperature
    with torch.no_grad():
        q1, q2 = (state.network(views[:, v]) for v in (0, 1))  # encoder, projector, predictor
        k1, k2 = (state.momentum.head(state.momentum.encoder(views[:, v])) for v in (0, 1))
    labels = torch.arange(16)

    def ctr(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # Algorithm 1, normalised
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T
        return F.cross_entropy(logits / tau, labels) * 2 * tau

    with torch.no_grad():
        ours = compute_loss(cfg, state, views, labels)
    # GroupNorm: a view's output does not depend on the other view being in the same forward
    torch.testing.assert_close(ours, ctr(q1, k2) + ctr(q2, k1), rtol=1e-5, atol=1e-6)


def test_symmetric_moco_enqueues_both_key_sets_and_averages_both_directions():
    cfg, state = _state("moco", queue_size=64, symmetric=True)
    assert state.momentum is not None and state.momentum.queue is not None
    queue = state.momentum.queue.keys.clone()
    views = _views(4)
    with torch.no_grad():
        q1, q2 = (state.network(views[:, v]) for v in (0, 1))
        k1, k2 = (state.momentum.head(state.momentum.encoder(views[:, v])) for v in (0, 1))

    def moco(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # MoCo's Algorithm 1
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1)
        return F.cross_entropy(logits / cfg.temperature, torch.zeros(16, dtype=torch.long))

    train_step(cfg, state, views, torch.zeros(16, dtype=torch.long))
    assert state.step == 0  # train_epoch counts steps
    records = state.momentum.queue.keys
    torch.testing.assert_close(records[:16], F.normalize(k2, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(records[16:32], F.normalize(k1, dim=1), rtol=1e-5, atol=1e-6)
    assert int(state.momentum.queue.ptr) == 32
    cfg_b, state_b = _state("moco", queue_size=64, symmetric=True)
    with torch.no_grad():
        loss = compute_loss(cfg_b, state_b, views, torch.zeros(16, dtype=torch.long))
    torch.testing.assert_close(loss, (moco(q1, k2) + moco(q2, k1)) / 2, rtol=1e-5, atol=1e-6)


def test_moco_steps_equal_lightly_memory_bank_and_update_momentum():
    """Three MoCo steps: the loss, its gradient, the EMA'd key network and the queue as lightly's.

    lightly's bank drops the keys past its end when K is not a multiple of the batch (its pointer
    resets to 0); with K = 3 batches both queues wrap at the same step.
    """
    lightly_loss = pytest.importorskip("lightly.loss", reason="dev extra: lightly==1.6.0")
    lightly_utils = pytest.importorskip("lightly.models.utils")
    cfg, state = _state("moco", queue_size=48, momentum_ema=0.9)
    assert state.momentum is not None and state.momentum.queue is not None
    theirs_fn = lightly_loss.NTXentLoss(temperature=cfg.temperature, memory_bank_size=(48, 128))
    theirs_fn.memory_bank.bank = state.momentum.queue.keys.clone()
    params = list(state.encoder.parameters()) + list(state.head.parameters())
    for step in range(3):
        views, labels = _views(10 + step), torch.arange(16)
        key_encoder, key_head = (
            copy.deepcopy(m) for m in (state.momentum.encoder, state.momentum.head)
        )
        # lightly's MoCo step: the query network, keys from the momentum network, bank loss
        q = state.network(views[:, 0])
        with torch.no_grad():
            k = key_head(key_encoder(views[:, 1]))
        theirs = theirs_fn(q, k)  # reads the bank, then enqueues normalize(k)
        g_theirs = torch.autograd.grad(theirs, params)
        ours = compute_loss(cfg, state, views, labels)
        g_ours = torch.autograd.grad(ours, params)
        state.momentum.pending.clear()  # that loss was for the comparison; train_step holds again
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        for a, b in zip(g_ours, g_theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        train_step(cfg, state, views, labels)
        state.step += 1
        lightly_utils.update_momentum(state.encoder, key_encoder, m=0.9)
        lightly_utils.update_momentum(state.head, key_head, m=0.9)
        for a, b in zip(
            state.momentum.parameters(),
            [*key_encoder.parameters(), *key_head.parameters()],
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
        torch.testing.assert_close(state.momentum.queue.keys, theirs_fn.memory_bank.bank)
        assert int(state.momentum.queue.ptr) == int(theirs_fn.memory_bank.bank_ptr)


def test_supcon_moco_is_supcons_loop_oracle_with_the_labelled_queue():
    from contrastkit.losses import reference

    cfg, state = _state("supcon-moco", queue_size=48)
    assert state.momentum is not None and state.momentum.queue is not None
    queue = state.momentum.queue
    labels = torch.arange(16) % 4
    queue.enqueue(torch.randn(20, 128, generator=_gen(5)), torch.arange(20) % 6)  # some labelled
    views = _views(6)
    with torch.no_grad():
        z = torch.stack([state.network(views[:, v]) for v in (0, 1)], dim=1)  # (B, 2, D)
        expected = reference.supcon(
            z.double(), labels, cfg.temperature, queue=(queue.keys.double(), queue.labels)
        )
        ours = compute_loss(cfg, state, views, labels)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-6)
    k = state.momentum.pending.pop()[0]  # that step's keys: train_step holds them again
    train_step(cfg, state, views, labels)  # enqueues the second view's keys with their labels
    torch.testing.assert_close(queue.keys[20:36], F.normalize(k, dim=1))
    assert queue.labels[20:36].tolist() == labels.tolist() and int(queue.ptr) == 36
