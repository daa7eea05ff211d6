"""Files a user receives are data, never code: crafted checkpoints and CIFAR batches, through
the real CLI, stop with one error line and run nothing (each payload is checked live first)."""

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--data", "digits", "--limit", "64", "--batch-size", "32", "--epochs", "1"]
QUIET = ["--quiet", "--device", "cpu", "--knn-every", "0"]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "contrastkit", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def assert_refused(r: subprocess.CompletedProcess[str], path: Path, payload) -> None:
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert str(path) in r.stderr and "Traceback" not in r.stderr
    assert not payload.ran()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real `pretrain` directory and a real `run` directory (one method), trained once."""
    base = tmp_path_factory.mktemp("runs")
    r = cli("pretrain", *TINY, "--method", "simclr", *QUIET, "--out", base / "pretrain")
    assert r.returncode == 0, r.stderr
    evaluation = ["--probe-epochs", "1", "--knn-k", "5"]
    r = cli("run", *TINY, "--method", "ce", *evaluation, *QUIET, "--out", base / "run")
    assert r.returncode == 0, r.stderr
    for f in ["probe.json", "knn.json"]:  # as if interrupted before its evaluation
        (base / "run" / "ce" / f).unlink()
    return base


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["linear-probe", "{run}"], "pretrain"),
        (["knn", "{run}"], "pretrain"),
        (["embed", "{run}", "--out", "{tmp}/emb.npz"], "pretrain"),
        (["pretrain", "--out", "{run}", "--resume"], "pretrain"),
        (["run", "--out", "{run}", "--resume"], "run"),
    ],
)
def test_a_payload_checkpoint_runs_nothing_through_the_cli(runs, tmp_path, payload, command, kind):
    run = tmp_path / kind
    shutil.copytree(runs / kind, run)
    ckpt = run / ("ce" if kind == "run" else "") / "checkpoints" / "last.pt"
    torch.save({"format": 2, "x": payload}, ckpt)  # a last.pt received from someone else
    payload.assert_runs_under(lambda: torch.load(ckpt, weights_only=False))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    r = cli(*(a.format(run=run, tmp=tmp_path) for a in command))
    assert_refused(r, ckpt, payload)
    assert "holds objects other than tensors and plain data" in r.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written
    assert not (tmp_path / "emb.npz").exists()


@pytest.mark.slow
def test_a_payload_cifar_batch_runs_nothing_through_the_cli(tmp_path, payload):
    d = tmp_path / "data" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batch = d / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": payload, "labels": [0]}))
    payload.assert_runs_under(lambda: pickle.loads(batch.read_bytes()))
    out = tmp_path / "out"
    r = cli("pretrain", "--data", "cifar10", "--data-root", tmp_path / "data", "--out", out)
    assert_refused(r, batch, payload)
    assert "refused: it holds posix.system" in r.stderr and not out.exists()
