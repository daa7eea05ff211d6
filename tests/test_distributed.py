"""Distributed helpers and gathered losses: unlaunched behaviour, then W = 2 on gloo against one process.

The W = 2 checks start two processes once (``torch.multiprocessing.spawn``, gloo, rendezvous
through a file store); every process computes its share with ``gather=True`` and, from the same
seed, the single-process loss on the concatenated batch. Every quantity comes back once per rank,
and the parent asserts on each case and each rank separately.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contrastkit import distributed
from contrastkit.losses import info_nce, nt_xent, supcon
from contrastkit.losses._gathered import ROW_IMPLS
from contrastkit.train import launch

WORLD = 2
# the gathered loss in each rows core; the single process it is compared with is always dense.
# A small tile makes the tiled core walk several tiles even at these batch sizes.
IMPL_OPTIONS: dict[str, dict[str, Any]] = {
    "dense": {"impl": "dense"},
    "tiled": {"impl": "tiled", "tile_size": 3},
}
assert set(IMPL_OPTIONS) == set(ROW_IMPLS)

# --- unlaunched: rank 0 of 1 -------------------------------------------------------------------


def test_unlaunched_is_rank_0_of_1() -> None:
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)


def test_unlaunched_gathers_are_identity() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert torch.equal(distributed.all_gather(x), x) and not distributed.all_gather(x).requires_grad
    assert distributed.row_counts(x) == [3]
    s = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.all_reduce(s), s)
    assert torch.equal(distributed.all_reduce(s, "mean"), s)
    with pytest.raises(ValueError, match="op must be"):
        distributed.all_reduce(s, "max")


def test_unlaunched_gather_changes_no_loss() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    f, y = torch.randn(6, 3, 4, generator=g), torch.tensor([0, 1, 0, 2, 1, 3])
    assert torch.equal(nt_xent(z1, z2, gather=True), nt_xent(z1, z2))
    for mode in ("all", "one"):
        torch.testing.assert_close(
            supcon(f, y, contrast_mode=mode, gather=True), supcon(f, y, contrast_mode=mode)
        )
    torch.testing.assert_close(supcon(f, gather=True), supcon(f))
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            info_nce(z1, z2, reduction=reduction, gather=True),
            info_nce(z1, z2, reduction=reduction),
        )


def test_gather_argument_errors() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="impl='reference' is single-process"):
        nt_xent(z, z, impl="reference", gather=True)
    with pytest.raises(ValueError, match="impl='reference' is single-process"):
        supcon(z[:, None], torch.zeros(4, dtype=torch.long), impl="reference", gather=True)
    with pytest.raises(ValueError, match="nothing to gather"):
        info_nce(z, z, torch.randn(7, 3), gather=True)
    with pytest.raises(ValueError, match="gather must be True or False"):
        nt_xent(z, z, gather=1)  # type: ignore[arg-type]


def test_init_from_env_unlaunched_resolves_the_device_only() -> None:
    assert launch.init_from_env("cpu", environ={}) == torch.device("cpu")
    assert not distributed.is_distributed()
    assert launch.local_batch_size(7) == 7


def test_init_from_env_rejects_a_partial_launch() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2"}
    with pytest.raises(ValueError, match=r"LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing.*torchrun"):
        launch.init_from_env("cpu", environ=env)
    full = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "x",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1",
    }
    with pytest.raises(ValueError, match="must be integers"):
        launch.init_from_env("cpu", environ=full)
    with pytest.raises(ValueError, match="inconsistent launch"):
        launch.init_from_env("cpu", environ={**full, "WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="device must be"):
        launch.init_from_env("tpu", environ={})
    assert not distributed.is_distributed()


def test_launched_wrap_and_main_first_unlaunched() -> None:
    assert not launch.launched({}) and launch.launched({"RANK": "0"})
    model = torch.nn.Linear(2, 2)
    assert launch.wrap_model(model, torch.device("cpu")) is model
    with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
        launch.wrap_model(model, torch.device("cpu"), sync_bn=True)
    assert launch.main_first(lambda: 7) == 7
    with pytest.raises(KeyError, match="boom"):
        launch.main_first(lambda: {}["boom"])
    distributed.barrier()


# --- W = 2 on gloo: the worker side ------------------------------------------------------------

LossFn = Callable[[list[torch.Tensor], torch.Tensor | None, torch.Tensor, bool], torch.Tensor]


def _every_rank(values: dict[str, float]) -> dict[str, list[float]]:
    """Each quantity of every rank, in rank order: a flag must hold on each rank, not on one."""
    keys = sorted(values)
    local = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return {k: [float(p[i]) for p in parts] for i, k in enumerate(keys)}


def _compare(
    loss: LossFn,
    tensors: list[torch.Tensor],
    labels: torch.Tensor | None,
    sizes: list[int],
    tau0: float = 0.3,
) -> dict[str, list[float]]:
    """Gathered loss on this rank's slice vs one process on the whole batch (same on all ranks).

    DDP averages parameter gradients over W processes, so the quantities that must equal the
    full-batch ones are: the mean over ranks of the loss, 1/W × each rank's gradient of its
    local embeddings (which flow into its local parameters), and the mean over ranks of the
    temperature's gradient.
    """
    r, w = dist.get_rank(), dist.get_world_size()
    start = sum(sizes[:r])
    stop = start + sizes[r]
    dtype = tensors[0].dtype
    full = [t.clone().requires_grad_() for t in tensors]
    tau_full = torch.tensor(tau0, dtype=dtype, requires_grad=True)
    expected = loss(full, labels, tau_full, False)
    expected.backward()
    local = [t[start:stop].clone().requires_grad_() for t in tensors]
    tau = torch.tensor(tau0, dtype=dtype, requires_grad=True)
    got = loss(local, None if labels is None else labels[start:stop], tau, True)
    got.backward()
    assert tau.grad is not None and tau_full.grad is not None
    loss_mean = distributed.all_reduce(got, "mean")
    tau_grad_mean = distributed.all_reduce(tau.grad, "mean")
    grad_error = max(
        float((lo.grad / w - fu.grad[start:stop]).abs().max())  # type: ignore[operator,index]
        for lo, fu in zip(local, full, strict=True)
    )
    return _every_rank(
        {
            "loss": float((loss_mean - expected.detach()).abs()),
            "grad": grad_error,
            "temperature": float((tau_grad_mean - tau_full.grad).abs()),
            "temperature_grad_size": float(tau_full.grad.abs()),
            "grad_size": min(float(fu.grad.abs().max()) for fu in full),  # type: ignore[union-attr]
        }
    )


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _options(gather: bool, impl: str) -> dict[str, Any]:
    return {**IMPL_OPTIONS[impl], "gather": True} if gather else {"impl": "dense"}


def _ntxent_case(
    sizes: list[int], impl: str = "dense", dtype: torch.dtype = torch.float64
) -> dict[str, list[float]]:
    n = sum(sizes)
    z1, z2 = _randn(n, 8, seed=1, dtype=dtype), _randn(n, 8, seed=2, dtype=dtype)
    return _compare(
        lambda t, _, tau, g: nt_xent(t[0], t[1], tau, **_options(g, impl)), [z1, z2], None, sizes
    )


def _supcon_case(
    sizes: list[int], views: int, mode: str, labelled: bool, impl: str, **kw: Any
) -> dict[str, list[float]]:
    n = sum(sizes)
    features = _randn(n, views, 8, seed=3)
    # few classes, so that most positives of a rank's anchors live on the other rank
    labels = torch.arange(n) % 3 if labelled else None
    if labelled and views == 1:
        labels = torch.tensor([0, 1, 2, 0, 1, 2, 5, 3][:n])  # class 5: an anchor without positive
    return _compare(
        lambda t, y, tau, g: supcon(t[0], y, tau, contrast_mode=mode, **kw, **_options(g, impl)),
        [features],
        labels,
        sizes,
    )


def _info_nce_case(sizes: list[int], reduction: str, impl: str) -> dict[str, list[float]]:
    n = sum(sizes)
    q, k = _randn(n, 8, seed=4), _randn(n, 8, seed=5)
    return _compare(
        lambda t, _, tau, g: info_nce(
            t[0], t[1], temperature=tau, reduction=reduction, **_options(g, impl)
        ),
        [q, k],
        None,
        sizes,
    )


def _info_nce_none_case(sizes: list[int]) -> dict[str, list[float]]:
    r = dist.get_rank()
    start = sum(sizes[:r])
    q, k = _randn(sum(sizes), 8, seed=6), _randn(sum(sizes), 8, seed=7)
    expected = info_nce(q, k, reduction="none")[start : start + sizes[r]]
    got = info_nce(
        q[start : start + sizes[r]], k[start : start + sizes[r]], reduction="none", gather=True
    )
    return _every_rank(
        {
            "loss": float((got - expected).abs().max()),
            "shape_ok": float(got.shape == expected.shape),
        }
    )


class _SliceOnlyGather(torch.autograd.Function):
    """The broken pattern (lightly #1528): all-gather forward, backward slices without summing."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.detach().contiguous())
        ctx.n, ctx.r = x.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.r * ctx.n : (ctx.r + 1) * ctx.n]


def _slice_only(x: torch.Tensor, *, counts: list[int] | None = None) -> torch.Tensor:
    out: torch.Tensor = _SliceOnlyGather.apply(x)
    return out


def _gather_gradient_case() -> dict[str, list[float]]:
    """f_r = Σ w_r ⊙ gather(x): x_r's exact gradient is Σ_s w_s[slice r] (uneven sizes 2, 3)."""
    r, w = dist.get_rank(), dist.get_world_size()
    sizes = [2, 3]
    start = sum(sizes[:r])
    weights = [_randn(sum(sizes), 4, seed=10 + s) for s in range(w)]
    x = _randn(sizes[r], 4, seed=20 + r).requires_grad_()
    gathered = distributed.gather_with_grad(x)
    every_x = [_randn(sizes[s], 4, seed=20 + s) for s in range(w)]
    forward_error = float((gathered.detach() - torch.cat(every_x)).abs().max())
    (weights[r] * gathered).sum().backward()
    expected = sum(ws[start : start + sizes[r]] for ws in weights)
    assert x.grad is not None
    # all-ones weights: the exact gradient is W, the slice-only one 1 (W times too small)
    ones = torch.ones(2, 3, requires_grad=True)
    distributed.gather_with_grad(ones).sum().backward()
    ones_plain = torch.ones(2, 3, requires_grad=True)
    _slice_only(ones_plain).sum().backward()
    assert ones.grad is not None and ones_plain.grad is not None
    # torch.distributed.all_gather itself gives no gradient at all
    parts = [torch.empty(2, 3) for _ in range(w)]
    dist.all_gather(parts, torch.ones(2, 3, requires_grad=True).detach())
    return _every_rank(
        {
            "forward": forward_error,
            "grad": float((x.grad - expected).abs().max()),  # type: ignore[operator]
            "ones_grad_exact": float(ones.grad.max()),
            "ones_grad_slice_only": float(ones_plain.grad.max()),
            "all_gather_has_graph": float(torch.cat(parts).requires_grad),
        }
    )


def _plain_gather_loss_case() -> dict[str, list[float]]:
    """The same NT-Xent comparison with the slice-only gather patched in: it must fail."""
    with mock.patch.object(distributed, "gather_with_grad", _slice_only):
        return _ntxent_case([4, 4])


class _Tiny(torch.nn.Module):
    """A linear projection and a learnable log-temperature, both DDP parameters."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 4, dtype=torch.float64)
        self.log_tau = torch.nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), self.log_tau.exp()


def _ddp_case() -> dict[str, list[float]]:
    """Through DDP's own gradient averaging: every parameter gets the full-batch gradient."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    r, sizes = dist.get_rank(), [3, 5]
    n, start = sum(sizes), sum(sizes[:r])
    x = _randn(n, 2, 8, seed=30)  # (N, V, D) inputs, two views
    labels = torch.arange(n) % 3
    single = _Tiny()
    z, tau = single(x.reshape(2 * n, 8))
    supcon(z.reshape(n, 2, 4), labels, tau).backward()
    ddp = DDP(_Tiny())
    local = x[start : start + sizes[r]]
    z, tau = ddp(local.reshape(-1, 8))
    supcon(z.reshape(-1, 2, 4), labels[start : start + sizes[r]], tau, gather=True).backward()
    errors = [
        float((a.grad - b.grad).abs().max())  # type: ignore[operator]
        for a, b in zip(ddp.module.parameters(), single.parameters(), strict=True)
    ]
    assert single.log_tau.grad is not None
    return _every_rank(
        {
            "grad": max(errors),
            "temperature_grad_size": float(single.log_tau.grad.abs()),
        }
    )


def _batch_case() -> dict[str, list[float]]:
    try:
        launch.local_batch_size(7)
        raised = 0.0
    except ValueError as e:
        raised = float("not divisible by the 2 processes" in str(e) and "such as 6 or 8" in str(e))
    return _every_rank({"local": float(launch.local_batch_size(8)), "raised": raised})


def _main_first_case() -> dict[str, list[float]]:
    """rank 0's failure is raised on every rank (instead of rank 1 waiting in a collective)."""
    ran = []

    def fails() -> int:
        ran.append(dist.get_rank())
        raise FileExistsError("run directory exists")

    try:
        launch.main_first(fails)
        raised = 0.0
    except FileExistsError as e:
        raised = float(str(e) == "run directory exists")
    value = launch.main_first(lambda: 5)
    return _every_rank(
        {
            "raised": raised,
            "ran_here": float(ran == [dist.get_rank()]),
            "returned_5": float(value == 5),
            "returned_none": float(value is None),
        }
    )


def _mismatch_case() -> dict[str, list[float]]:
    x = torch.zeros(2, 3 + dist.get_rank())
    try:
        distributed.gather_with_grad(x)
    except ValueError as e:
        ok = "rank 0: torch.float32 (2, 3), rank 1: torch.float32 (2, 4)" in str(e)
        return _every_rank({"raised": 1.0, "message_ok": float(ok)})
    return _every_rank({"raised": 0.0, "message_ok": 0.0})


def _loss_cases(impl: str) -> dict[str, Callable[[], dict[str, list[float]]]]:
    return {
        "nt_xent/even": lambda: _ntxent_case([4, 4], impl),
        "nt_xent/uneven": lambda: _ntxent_case([3, 5], impl),
        "nt_xent/float32": lambda: _ntxent_case([4, 4], impl, torch.float32),
        "supcon/labels-V3-all": lambda: _supcon_case([4, 4], 3, "all", True, impl),
        "supcon/labels-V3-one": lambda: _supcon_case([4, 4], 3, "one", True, impl),
        "supcon/labels-V3-all-uneven": lambda: _supcon_case([5, 3], 3, "all", True, impl),
        "supcon/labels-V3-one-uneven": lambda: _supcon_case([5, 3], 3, "one", True, impl),
        "supcon/labels-V1-across-ranks": lambda: _supcon_case([4, 4], 1, "all", True, impl),
        "supcon/unlabelled-V2": lambda: _supcon_case([4, 4], 2, "all", False, impl),
        "supcon/base-temperature": lambda: _supcon_case(
            [4, 4], 2, "all", True, impl, base_temperature=0.07
        ),
        # a queue: the same on every rank, never gathered; keys of the batch's classes and others
        "supcon/queue-labels-V2-all": lambda: _supcon_case(
            [4, 4],
            2,
            "all",
            True,
            impl,
            queue=(_randn(6, 8, seed=40), torch.tensor([0, 1, 2, 7, 0, 9])),
        ),
        "supcon/queue-labels-V3-one-uneven": lambda: _supcon_case(
            [5, 3],
            3,
            "one",
            True,
            impl,
            queue=(_randn(5, 8, seed=41), torch.tensor([2, 2, 1, 0, 4])),
        ),
        "supcon/queue-labels-V1-positives-in-queue": lambda: _supcon_case(
            [4, 4], 1, "all", True, impl, queue=(_randn(4, 8, seed=42), torch.tensor([5, 3, 8, 5]))
        ),
        "supcon/queue-unlabelled-V2": lambda: _supcon_case(
            [3, 5], 2, "all", False, impl, queue=_randn(7, 8, seed=43)
        ),
        "info_nce/mean": lambda: _info_nce_case([4, 4], "mean", impl),
        "info_nce/mean-uneven": lambda: _info_nce_case([2, 6], "mean", impl),
        "info_nce/sum": lambda: _info_nce_case([4, 4], "sum", impl),
    }


CASES = {
    f"{impl}/{name}": case for impl in IMPL_OPTIONS for name, case in _loss_cases(impl).items()
}
OTHER_CASES: dict[str, Callable[[], dict[str, list[float]]]] = {
    "info_nce/none": lambda: _info_nce_none_case([3, 5]),
    "gather_gradient": _gather_gradient_case,
    "plain_gather_loss": _plain_gather_loss_case,
    "mismatch": _mismatch_case,
    "ddp": _ddp_case,
    "batch": _batch_case,
    "main_first": _main_first_case,
}


def _gloo_threads() -> list[str] | None:
    """Names of this process's gloo threads, from Linux's /proc/self/task; None elsewhere."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # a thread that ended while we listed
            continue
    return sorted(name for name in names if "gloo" in name)


def _worker(rank: int, world: int, directory: str) -> None:
    torch.set_num_threads(1)
    # a file store, not a TCP port: a port picked free here can be taken by the other test
    # worker's processes before rank 0 binds it
    dist.init_process_group(
        "gloo",
        init_method=f"file://{Path(directory, 'store')}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        results = {name: case() for name, case in {**CASES, **OTHER_CASES}.items()}
        live = _gloo_threads()
    finally:
        launch.shutdown()
    threads = {"live": live, "after_shutdown": _gloo_threads()}
    Path(directory, f"threads-{rank}.json").write_text(json.dumps(threads))
    if rank == 0:
        Path(directory, "results.json").write_text(json.dumps(results))


# --- W = 2 on gloo: the parent side ------------------------------------------------------------

Results = dict[str, dict[str, list[float]]]


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory where the two processes left their results (rank 0) and thread lists."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    directory = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(WORLD, str(directory)), nprocs=WORLD, join=True)
    return directory


@pytest.fixture(scope="module")
def results(spawned: Path) -> Results:
    loaded: Results = json.loads((spawned / "results.json").read_text())
    return loaded


@pytest.mark.distributed
@pytest.mark.parametrize("case", sorted(CASES))
def test_gathered_loss_equals_one_process_on_the_concatenated_batch(
    results: Results, case: str
) -> None:
    got = results[case]
    tol = 2e-6 if "float32" in case else 1e-9
    assert max(got["loss"]) < tol, got
    assert max(got["grad"]) < tol, got
    assert max(got["temperature"]) < tol, got
    # the comparison is not vacuous: every gradient is non-zero, on every rank
    assert min(got["grad_size"]) > 1e-3 and min(got["temperature_grad_size"]) > 1e-3, got


@pytest.mark.distributed
def test_gathered_info_nce_none_returns_the_local_rows(results: Results) -> None:
    assert results["info_nce/none"]["shape_ok"] == [1.0] * WORLD
    assert max(results["info_nce/none"]["loss"]) < 1e-9


@pytest.mark.distributed
def test_gather_with_grad_sums_the_gradient_over_ranks(results: Results) -> None:
    got = results["gather_gradient"]
    assert got["forward"] == [0.0] * WORLD  # uneven sizes 2 and 3, rows in rank order
    assert max(got["grad"]) < 1e-12
    assert got["ones_grad_exact"] == [WORLD] * WORLD


@pytest.mark.distributed
def test_plain_all_gather_gradient_would_be_wrong(results: Results) -> None:
    got = results["gather_gradient"]
    # a gather that only slices its gradient gives 1 where the exact gradient is W
    assert got["ones_grad_slice_only"] == [1.0] * WORLD
    assert got["all_gather_has_graph"] == [0.0] * WORLD  # torch's all_gather: no gradient at all
    # and it makes the loss-level comparison fail: same value, wrong gradient on every rank
    plain = results["plain_gather_loss"]
    assert max(plain["loss"]) < 1e-9
    assert min(plain["grad"]) > 1e-3, plain


@pytest.mark.distributed
def test_ddp_parameters_get_the_full_batch_gradient(results: Results) -> None:
    got = results["ddp"]
    assert max(got["grad"]) < 1e-9, got
    assert min(got["temperature_grad_size"]) > 1e-3, got


@pytest.mark.distributed
def test_local_batch_size_splits_or_says_why_not(results: Results) -> None:
    assert results["batch"] == {"local": [4.0, 4.0], "raised": [1.0, 1.0]}


@pytest.mark.distributed
def test_main_first_raises_rank_0_error_on_every_rank(results: Results) -> None:
    assert results["main_first"] == {  # per rank: [rank 0, rank 1]
        "raised": [1.0, 1.0],  # the same error on both ranks
        "ran_here": [1.0, 0.0],  # the work ran on rank 0 only
        "returned_5": [1.0, 0.0],  # its value on rank 0, None elsewhere
        "returned_none": [0.0, 1.0],
    }


@pytest.mark.distributed
def test_mismatched_shapes_raise_on_every_rank(results: Results) -> None:
    assert results["mismatch"] == {"message_ok": [1.0, 1.0], "raised": [1.0, 1.0]}


@pytest.mark.distributed
def test_shutdown_frees_the_group_and_ends_its_threads(spawned: Path) -> None:
    """After ``launch.shutdown()`` no gloo thread is left, though the processes used DDP.

    A group that outlives it keeps gloo's worker threads running into interpreter shutdown,
    where one that releases its last collective aborts the process ("terminate called without
    an active exception"). DDP's constructor pinned the group that way (see distributed.py).
    """
    for rank in range(WORLD):
        threads = json.loads((spawned / f"threads-{rank}.json").read_text())
        if threads["live"] is None:
            pytest.skip("threads are listed from /proc/self/task, which this system lacks")
        assert threads["live"], threads  # the listing sees the group's threads while it is live
        assert threads["after_shutdown"] == [], threads
