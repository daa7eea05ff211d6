"""Pretraining under torchrun: DDP equals one process, resume, the CLI, and bad launches.

The equality runs start two processes with ``torch.multiprocessing.spawn`` and give each the
environment torchrun would (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT on 127.0.0.1),
so ``pretrain`` goes through its real launch path; the CLI tests run ``torch.distributed.run``
(torchrun) itself in a subprocess.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contrastkit.train.checkpoint import load_checkpoint
from contrastkit.train.config import PretrainConfig
from contrastkit.train.metrics import read_metrics
from contrastkit.train.rundir import CHECKPOINT

pretrain_module = importlib.import_module("contrastkit.train.pretrain")  # not the function
resume_module = importlib.import_module("contrastkit.train.resume")
loop_module = importlib.import_module("contrastkit.train.loop")
rundata_module = importlib.import_module("contrastkit.train.rundata")
ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
# small and BatchNorm-free: GroupNorm makes the result independent of how the batch is split
OPTIONS: dict[str, Any] = {
    "data": "digits",
    "limit": 64,
    "batch_size": 16,  # 4 steps per epoch; 8 samples per process
    "epochs": 2,
    "model": "small_cnn",
    "norm": "group",
    "augment": "none",  # identical views in both runs: the only difference is the split
    # a small step: at the recipe's lr 0.5 this short run amplifies float32 rounding (even
    # 1 vs 2 threads of one process end 3e-4 apart after 8 steps); at 0.1 they agree to 1e-7
    "lr": 0.1,
    "knn_every": 0,
    "device": "cpu",
    "precision": "fp32",
    "quiet": True,
}

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch_env(rank: int, world: int, ports: Any) -> None:
    """Set what torchrun would for ``rank`` of ``world``, rank 0 choosing the port for all.

    ``ports`` is a queue shared by the processes: rank 0 puts a free port once per other rank.
    """
    if rank == 0:
        port = _free_port()
        for _ in range(world - 1):
            ports.put(port)
    else:
        port = ports.get()
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )


def _require_gloo() -> None:
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this build")


class _Interrupt(KeyboardInterrupt):
    pass


def _worker(rank: int, ports: Any, jobs: list[dict[str, Any]]) -> None:
    """Run each job's ``pretrain`` as rank ``rank`` of 2, with torchrun's environment.

    Rank 0 picks each job's port just before the job and hands it to the others through the
    queue ``ports`` (a port picked for every job up front could be taken by then).
    """
    torch.set_num_threads(1)
    for job in jobs:
        _launch_env(rank, WORLD, ports)
        stop_after = job.pop("interrupt_after_steps", None)
        if stop_after is None:
            _pretrain_or_resume(job)
        else:
            _interrupted(job, stop_after)


def _pretrain_or_resume(job: dict[str, Any]) -> None:
    """``pretrain`` with the job's options, or ``resume`` the job's ``out`` if it says so."""
    if job.pop("resume", False):
        resume_module.resume(job["out"])
    else:
        pretrain_module.pretrain(PretrainConfig(**job))


def _interrupted(job: dict[str, Any], stop_after: int) -> None:
    """Run ``pretrain`` and stop it before step ``stop_after + 1`` on every rank, as on Ctrl-C."""
    real_step = loop_module.train_step
    calls = [0]

    def interrupted_step(*args: Any, **kw: Any) -> float:
        if calls[0] == stop_after:
            raise _Interrupt
        calls[0] += 1
        return real_step(*args, **kw)

    loop_module.train_step = interrupted_step
    try:
        _pretrain_or_resume(job)
        raise AssertionError("the run was not interrupted")
    except _Interrupt:
        pass
    finally:
        loop_module.train_step = real_step


def _spawn(jobs: list[dict[str, Any]]) -> None:
    ports = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_worker, args=(ports, jobs), nprocs=WORLD, join=True)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """Encoder and head; for MoCo also the key network, the queue, its labels and pointer."""
    ckpt = load_checkpoint(run / CHECKPOINT)
    parts = [p for p in ("encoder", "head", "momentum") if p in ckpt]
    return {f"{part}.{k}": v for part in parts for k, v in ckpt[part].items()}


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process and two processes on the same global batches, plus an interrupted DDP run."""
    _require_gloo()
    tmp = tmp_path_factory.mktemp("ddp")
    names = ("single", "ddp", "single_simclr", "ddp_simclr", "resumed")
    names += ("single_moco", "ddp_moco", "single_mocov3", "ddp_mocov3")
    paths = {name: tmp / name for name in names}
    supcon = {**OPTIONS, "method": "supcon"}
    simclr = {**OPTIONS, "method": "simclr"}
    # 16 keys a step into 40 slots: the pointer wraps mid-batch at step 3 (48 % 40 = 8)
    moco = {**OPTIONS, "method": "moco", "queue_size": 40}
    mocov3 = {**OPTIONS, "method": "mocov3"}  # in-batch keys gathered inside the loss
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each of the two processes
    try:
        for name, opts in (
            ("single", supcon),
            ("single_simclr", simclr),
            ("single_moco", moco),
            ("single_mocov3", mocov3),
        ):
            pretrain_module.pretrain(PretrainConfig(**opts, out=str(paths[name])))
    finally:
        torch.set_num_threads(threads)
    _spawn(
        [
            {**supcon, "out": str(paths["ddp"])},
            {**simclr, "out": str(paths["ddp_simclr"])},
            {**moco, "out": str(paths["ddp_moco"])},
            {**mocov3, "out": str(paths["ddp_mocov3"])},
            # stopped in epoch 2 (after 6 of 8 steps), then continued with resume
            {**supcon, "out": str(paths["resumed"]), "interrupt_after_steps": 6},
            {"out": str(paths["resumed"]), "resume": True},  # every option from the run
        ]
    )
    return paths


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ("single", "ddp"),
        ("single_simclr", "ddp_simclr"),
        ("single_moco", "ddp_moco"),
        ("single_mocov3", "ddp_mocov3"),
    ],
)
def test_ddp_pretraining_equals_one_process_on_the_same_global_batches(
    runs: dict[str, Path], one: str, two: str
) -> None:
    assert _max_difference(runs[one], runs[two]) < 1e-5
    # training moved the weights far more than that: two objectives end 1e-3 apart at least
    assert _max_difference(runs["single"], runs["single_simclr"]) > 1e-3
    single_steps = [m for m in read_metrics(runs[one]) if m["kind"] == "step"]
    ddp_steps = [m for m in read_metrics(runs[two]) if m["kind"] == "step"]
    assert len(single_steps) == len(ddp_steps) == 8
    for a, b in zip(single_steps, ddp_steps, strict=True):
        # the logged loss is the global batch's (mean over processes), not one process's share
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["lr"] == b["lr"]


def test_ddp_moco_queue_equals_one_process_in_the_global_batch_order(
    runs: dict[str, Path],
) -> None:
    """The queue of 2 processes is one process's, slot by slot: keys gathered in sampler order.

    Rank r holds the positions r, r + 2, ... of each global batch; gathered rank-major the
    queue would hold the same keys in another order (and the weights would still agree).
    """
    one, two = (
        load_checkpoint(runs[k] / CHECKPOINT)["momentum"] for k in ("single_moco", "ddp_moco")
    )
    assert int(one["queue.ptr"]) == int(two["queue.ptr"]) == 8 * 16 % 40
    torch.testing.assert_close(two["queue.keys"], one["queue.keys"], rtol=0, atol=1e-5)
    assert torch.equal(one["queue.labels"], two["queue.labels"])
    assert bool((one["queue.labels"] >= 0).all())  # 128 keys went through: every slot written


def test_ddp_run_directory_is_written_once_by_rank_0(runs: dict[str, Path]) -> None:
    run = runs["ddp"]
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock",  # rank 0's lock while it trained
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
        "similarity.npz",
    ]
    records = read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 9))  # no duplicates
    assert "world_size: 2" in (run / "config.yaml").read_text()
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert epochs[-1]["knn_acc"] is not None  # the kNN monitor ran on rank 0


def test_ddp_resume_continues_the_interrupted_run_exactly(runs: dict[str, Path]) -> None:
    assert _max_difference(runs["ddp"], runs["resumed"]) == 0.0
    steps = [r["step"] for r in read_metrics(runs["resumed"]) if r["kind"] == "step"]
    assert steps == list(range(1, 9))


def test_epoch_batches_are_the_global_batches_of_one_process() -> None:
    """Step k of every process together is batch k of one process (DistributedSampler)."""
    n, batch = 70, 8
    single = rundata_module.epoch_batches(n, batch, seed=3, epoch=5)
    with pytest.MonkeyPatch.context() as mpatch:
        shares = []
        for r in range(WORLD):
            mpatch.setattr(rundata_module.distributed, "world_size", lambda: WORLD)
            mpatch.setattr(rundata_module.launch, "world_size", lambda: WORLD)  # its batch split
            mpatch.setattr(rundata_module.distributed, "rank", lambda r=r: r)
            shares.append(rundata_module.epoch_batches(n, batch, seed=3, epoch=5))
    assert len(single) == len(shares[0]) == len(shares[1]) == n // batch
    for k, whole in enumerate(single):
        together = torch.cat([shares[r][k] for r in range(WORLD)])
        assert sorted(together.tolist()) == sorted(whole.tolist())
    next_epoch = rundata_module.epoch_batches(n, batch, seed=3, epoch=6)
    assert not torch.equal(torch.cat(single), torch.cat(next_epoch))  # set_epoch reshuffles


# --- torchrun and the CLI ----------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )


CLI_OPTIONS = ["--data", "digits", "--limit", "64", "--epochs", "1", "--norm", "group"]
CLI_OPTIONS += ["--knn-every", "0", "--device", "cpu", "--quiet"]


def test_torchrun_cli_pretraining_writes_one_run_directory(tmp_path: Path) -> None:
    _require_gloo()
    out = tmp_path / "run"
    done = _torchrun(
        "-m",
        "contrastkit",
        "pretrain",
        *CLI_OPTIONS,
        "--batch-size",
        "16",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 1  # rank 0 reports, rank 1 is silent
    assert (out / CHECKPOINT).is_file() and (out / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_torchrun_console_script_and_bad_batch_size(tmp_path: Path) -> None:
    _require_gloo()
    script = Path(sys.executable).parent / "contrastkit"
    if not script.is_file():
        pytest.skip(f"the contrastkit console script is not installed next to {sys.executable}")
    done = _torchrun(
        "--no-python",
        str(script),
        "pretrain",
        *CLI_OPTIONS,
        "--batch-size",
        "15",
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "batch size 15 is not divisible by the 2 processes" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["pretrain", "--out", "x"],
            {"RANK": "0", "WORLD_SIZE": "2"},
            "incomplete distributed launch: RANK, WORLD_SIZE set but LOCAL_RANK, MASTER_ADDR, "
            "MASTER_PORT missing",
        ),
        (
            ["knn", "runs/x"],
            {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"},
            "only `pretrain` runs under torchrun",
        ),
    ],
)
def test_bad_launch_is_a_clear_error(
    tmp_path: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "contrastkit", *argv, "--device", "cpu"]
        if argv[0] == "pretrain"
        else [sys.executable, "-m", "contrastkit", *argv],
        cwd=tmp_path,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path: Path) -> None:
    from contrastkit.errors import ContrastkitError

    with pytest.raises(ContrastkitError, match="--sync-bn needs CUDA"):
        pretrain_module.pretrain(PretrainConfig(**OPTIONS, sync_bn=True, out=str(tmp_path / "r")))


def test_metrics_json_is_valid(runs: dict[str, Path]) -> None:
    for line in (runs["ddp"] / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
