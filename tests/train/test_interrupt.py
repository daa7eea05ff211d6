"""Run directories survive every interruption: real CLI processes, real signals, real mounts.

A ``kill -9`` at any moment, a full disk or a read-only file system leaves a directory that
``--resume`` or a plain rerun continues; two processes never train one run at once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.train.checkpoint import load_checkpoint
from contrastkit.train.metrics import read_metrics
from contrastkit.train.rundir import CHECKPOINT

SRC = str(Path(__file__).resolve().parents[2] / "src")
COMMON = ["--data", "digits", "--device", "cpu", "--quiet", "--knn-every", "0"]
# a first epoch of ~3 s on one core (1,437 images in 22 steps of 64 x 8 views): the moment
# between config.yaml and the first checkpoint is long enough to kill the process inside it
LONG_FIRST_EPOCH = [*COMMON, "--method", "simclr", "--batch-size", "64", "--views", "8"]
LONG_FIRST_EPOCH += ["--epochs", "1", "--warmup-epochs", "0", "--seed", "5"]
# 2 epochs of 22 steps: a run of a few seconds whose first epoch is a good part of its life
SHORT = [*COMMON, "--method", "supcon", "--batch-size", "64", "--epochs", "2"]
SHORT += ["--warmup-epochs", "1", "--seed", "1"]
# 30 epochs of 8 steps: still training when killed after its first checkpoint
LONG = [*COMMON, "--method", "ce", "--limit", "256", "--batch-size", "32", "--epochs", "30"]
LONG += ["--warmup-epochs", "2", "--seed", "2"]


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "contrastkit", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(cli(*args), env=env(), stderr=subprocess.PIPE, text=True)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=env(), capture_output=True, text=True, timeout=600)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    """Poll ``condition`` while ``proc`` runs (a deadline only guards against a hang)."""
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None, f"ended before the moment looked for: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the moment looked for never came"
        time.sleep(0.005)


def kill_9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def lock_pid(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def assert_same_weights(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / CHECKPOINT), load_checkpoint(b / CHECKPOINT)
    assert ca["finished"] and cb["finished"] and ca["step"] == cb["step"]
    for part in ["encoder", "head"]:
        for k in cb[part]:
            assert torch.equal(ca[part][k], cb[part][k]), f"{part}.{k}"


def steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if r["kind"] == "step"]


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return errors[0]


def kill_after_config_then_recover(
    tmp_path: Path, command: str, args: list[str]
) -> tuple[Path, Path, int | None, int]:
    """Kill ``contrastkit COMMAND ARGS`` (-9) once its config.yaml exists, before any
    checkpoint; then ``--resume`` the directory and, at the same time, rerun on a copy of it.

    Returns:
        The resumed directory, the rerun one, the pid the lock file named after the kill
        and the killed pid.
    """
    killed = tmp_path / "killed"
    proc = start(command, *args, "--out", killed)
    wait_until(lambda: (killed / "config.yaml").is_file(), proc)
    kill_9(proc)
    assert not list(killed.glob("**/checkpoints/last.pt")), "a checkpoint came before the kill"
    holder = lock_pid(killed)
    copy = tmp_path / "copy"
    shutil.copytree(killed, copy)  # the same leftovers for each way out
    resumed = start(command, "--out", killed, "--resume")
    rerun = start(command, *args, "--out", copy)
    assert resumed.wait() == 0, resumed.stderr.read()
    assert rerun.wait() == 0, rerun.stderr.read()
    return killed, copy, holder, proc.pid


@pytest.mark.slow
def test_kill_9_between_config_and_first_checkpoint_then_resume_or_rerun(tmp_path):
    # --resume starts from step 0 with the saved options; a plain rerun reuses the directory
    resumed, rerun, holder, pid = kill_after_config_then_recover(
        tmp_path, "pretrain", LONG_FIRST_EPOCH
    )
    assert_same_weights(resumed, rerun)
    assert steps(resumed) == steps(rerun) == list(range(1, 1437 // 64 + 1))
    assert holder == pid  # it held the lock when it died; the resume took it after


def recover(run_dir: Path) -> subprocess.CompletedProcess[str]:
    """What a user does after a crash: ``--resume`` a run that wrote its config, else rerun."""
    if (run_dir / "config.yaml").is_file():
        return run("pretrain", "--out", run_dir, "--resume")
    return run("pretrain", *SHORT, "--out", run_dir)


def moment(run_dir: Path) -> str:
    """How far a killed run got."""
    if not run_dir.exists():
        return "no directory"
    if not (run_dir / "config.yaml").is_file():
        return "directory without config.yaml"
    if not (run_dir / CHECKPOINT).is_file():
        return "config.yaml, no checkpoint"
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    return "finished" if ckpt["finished"] else f"checkpoint of epoch {ckpt['epoch']}"


RUN = ["--data", "digits", "--device", "cpu", "--quiet", "--method", "ce", "--limit", "64"]
RUN += ["--batch-size", "32", "--epochs", "2", "--warmup-epochs", "0", "--probe-epochs", "2"]


@pytest.mark.slow
def test_kill_9_of_a_run_before_its_first_method_then_resume_or_rerun(tmp_path):
    # config.yaml is written, then the raw-pixel baselines (about a second), then the method
    killed, copy, holder, pid = kill_after_config_then_recover(tmp_path, "run", RUN)
    assert holder == pid
    assert_same_weights(killed / "ce", copy / "ce")
    a, b = (json.loads((d / "results.json").read_text())["rows"] for d in (killed, copy))
    timing = ("seconds", "cpu_seconds", "eval_seconds")
    assert [{k: v for k, v in r.items() if k not in timing} for r in a] == [
        {k: v for k, v in r.items() if k not in timing} for r in b
    ]


KILL_AFTER = [  # (what to wait for, the longest random delay after it, in seconds)
    (None, 4.0),  # the start: mostly before the directory exists (torch still importing)
    ("config.yaml", 0.6),  # in or after the first epoch (0.5-1 s)
    (CHECKPOINT, 0.6),  # in or after the second epoch
]


@pytest.mark.slow
def test_a_kill_at_a_random_moment_always_leaves_a_recoverable_run(tmp_path):
    reference = tmp_path / "reference"
    done = run("pretrain", *SHORT, "--out", reference)
    assert done.returncode == 0, done.stderr
    rng = random.Random(20)
    seen = []
    for i, (event, longest) in enumerate(KILL_AFTER):
        killed = tmp_path / f"killed{i}"
        proc = start("pretrain", *SHORT, "--out", killed)
        if event is not None:
            wait_until(lambda k=killed, e=event: (k / e).is_file(), proc)
        time.sleep(rng.uniform(0.0, longest))
        if proc.poll() is None:
            kill_9(proc)
        seen.append(moment(killed))
        recovered = recover(killed)
        assert recovered.returncode == 0, (seen[-1], recovered.stderr)
        assert_same_weights(killed, reference)
        assert steps(killed) == steps(reference), seen[-1]  # each step once
    print("killed at:", seen)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run killed (-9) right after its first checkpoint, 29 epochs before its end."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    proc = start("pretrain", *LONG, "--out", out)
    wait_until(lambda: (out / CHECKPOINT).is_file(), proc)
    kill_9(proc)
    assert not load_checkpoint(out / CHECKPOINT)["finished"]
    return out


@pytest.mark.slow
def test_two_resumes_at_once_the_second_is_refused_naming_the_first(interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    first = start("pretrain", "--out", out, "--resume")  # the lock of a killed holder is free
    wait_until(lambda: lock_pid(out) == first.pid, first)  # it holds the lock now
    os.kill(first.pid, signal.SIGSTOP)  # and keeps it, without finishing, while we look
    try:
        second = run("pretrain", "--out", out, "--resume")
        rerun = run("pretrain", *LONG, "--out", out)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2
    line = one_error_line(second.stderr)
    assert f"run directory {out} is in use by pid {first.pid} on " in line
    assert "contrastkit pretrain --out" in line and "--resume" in line  # the holder's command
    assert rerun.returncode == 2 and "already exists" in one_error_line(rerun.stderr)
    assert first.wait() == 0, first.stderr.read()
    assert steps(out) == list(range(1, 30 * 8 + 1))  # each step once
    assert load_checkpoint(out / CHECKPOINT)["finished"]


@pytest.mark.slow
def test_evaluating_an_unfinished_run_warns_and_records_it(interrupted, tmp_path):
    epoch = load_checkpoint(interrupted / CHECKPOINT)["epoch"]
    probe = run("linear-probe", interrupted, "--epochs", "2", "--device", "cpu")
    knn = run("knn", interrupted, "--device", "cpu")
    emb = run("embed", interrupted, "--out", tmp_path / "e.npz", "--device", "cpu")
    warning = f"warning: {interrupted} is unfinished: its checkpoint holds epoch {epoch} of 30"
    for r in (probe, knn, emb):
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines()[0].startswith(warning), r.stderr
    for name in ("probe.json", "knn.json"):
        result = json.loads((interrupted / name).read_text())
        assert result["checkpoint_epoch"] == epoch and result["checkpoint_finished"] is False
    npz = np.load(tmp_path / "e.npz")
    assert int(npz["checkpoint_epoch"]) == epoch and not bool(npz["checkpoint_finished"])


def _can_mount() -> bool:
    """Whether this process may mount a tmpfs in a private mount namespace (root, unshare)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as target:
        probe = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "none",
            target,
        ]
        return subprocess.run(probe, capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(
    not _can_mount(), reason="needs unshare -m and mount (root in a private mount namespace)"
)


def in_mount_namespace(script: str) -> subprocess.CompletedProcess[str]:
    """Run the shell ``script`` in a private mount namespace: its mounts vanish with it."""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env={**env(), "CK": " ".join(cli())},
        capture_output=True,
        text=True,
        timeout=600,
    )


TINY = [*COMMON, "--limit", "64", "--batch-size", "32", "--epochs", "2", "--warmup-epochs", "0"]


@needs_mount
@pytest.mark.slow
def test_a_read_only_file_system_is_one_line_naming_the_path(tmp_path):
    done = tmp_path / "done"
    assert run("pretrain", *TINY, "--out", done).returncode == 0
    mnt, ro = tmp_path / "mnt", tmp_path / "ro"
    mnt.mkdir()
    ro.mkdir()
    args = " ".join(TINY)
    r = in_mount_namespace(
        f"mount -t tmpfs -o ro none {mnt} && mount --bind {done} {ro} && "
        f"mount -o remount,ro,bind {ro} || exit 99\n"
        f'$CK pretrain {args} --out {mnt}/run; echo "exit $?" >&2\n'
        f'$CK run --method ce {args} --out {mnt}/all; echo "exit $?" >&2\n'
        f'$CK linear-probe {ro} --epochs 1; echo "exit $?" >&2\n'
        f'$CK knn {ro}; echo "exit $?" >&2\n'
        f'$CK report {ro}; echo "exit $?" >&2\n'
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        f"error: cannot create run directory {mnt}/run: Read-only file system",
        "exit 1",
        f"error: cannot create run directory {mnt}/all: Read-only file system",
        "exit 1",
        f"error: cannot write {ro}/probe.json: Read-only file system",
        "exit 1",
        f"error: cannot write {ro}/knn.json: Read-only file system",
        "exit 1",
        f"error: cannot write {ro}/table.md: Read-only file system",
        "exit 1",
    ]


@needs_mount
@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = " ".join(TINY)
    # 8 KiB: two pages, taken by the lock file and config.yaml; then metrics.jsonl finds none
    r = in_mount_namespace(
        f"mount -t tmpfs -o size=8k none {mnt} || exit 99\n"
        f'$CK pretrain {args} --out {mnt}/run; echo "exit $?" >&2\n'
        f"ls -A {mnt}/run >&2\n"
        f"mount -o remount,size=64m {mnt}\n"
        f'$CK pretrain --out {mnt}/run --resume >/dev/null; echo "exit $?" >&2\n'
        f"ls -A {mnt}/run {mnt}/run/checkpoints >&2\n"
    )
    assert r.returncode == 0, r.stderr
    out = r.stderr.splitlines()
    assert out[:6] == [
        f"error: cannot append to {mnt}/run/metrics.jsonl: No space left on device",
        "exit 1",
        ".lock",
        "config.yaml",
        "metrics.jsonl",
        "exit 0",
    ], r.stderr
    assert "last.pt" in out
