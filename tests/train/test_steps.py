"""``--max-steps`` and ``--save-every`` on ``shards:DIR``: a capped run is the prefix of the full
run, and a kill -9 mid-epoch resumes bit-equal from the last step checkpoint."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_resume import cli, env, step_losses

from bit_equal import assert_bit_equal
from contrastkit.data.prepare import prepare
from contrastkit.train.checkpoint import load_checkpoint
from contrastkit.train.config import PretrainConfig
from contrastkit.train.pretrain import pretrain
from contrastkit.train.resume import resume

PER_EPOCH = 1437 // 64  # digits' training split in batches of 64


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps") / "digits"
    prepare("digits", out, shard_size=500, quiet=True)
    return out


def test_max_steps_stops_mid_epoch_and_is_the_prefix_of_the_full_run(shards, tmp_path):
    kw = {"data": f"shards:{shards}", "batch_size": 64, "epochs": 2, "warmup_epochs": 0.5}
    kw |= {"knn_every": 0, "device": "cpu", "quiet": True, "seed": 2, "workers": 1}
    full = pretrain(PretrainConfig(out=str(tmp_path / "full"), **kw), final_knn=False)
    capped = pretrain(PretrainConfig(out=str(tmp_path / "cap"), max_steps=30, **kw))
    ckpt = load_checkpoint(tmp_path / "cap" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 30 and ckpt["epoch"] == 1 and ckpt["finished"]
    assert step_losses(tmp_path / "cap") == step_losses(tmp_path / "full")[:30]
    assert capped.epochs == 1 and full.epochs == 2 and capped.knn_acc is not None
    r = resume(tmp_path / "cap")  # a capped run is finished: resuming trains nothing
    assert (
        r.already_finished and step_losses(tmp_path / "cap") == step_losses(tmp_path / "full")[:30]
    )


def _mid_epoch_checkpoint(run: Path) -> bool:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return False
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    return bool(steps) and steps[-1] > PER_EPOCH + 3 and steps[-1] % PER_EPOCH != 0


@pytest.mark.slow
def test_kill_9_mid_epoch_on_shards_resumes_bit_equal(shards, tmp_path):
    args = ["--data", f"shards:{shards}", "--batch-size", "64", "--epochs", "2", "--seed", "4"]
    args += ["--knn-every", "0", "--device", "cpu", "--quiet", "--save-every", "3"]
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen(cli("pretrain", *args, "--out", str(killed)), env=env())
    reference = subprocess.Popen(cli("pretrain", *args, "--out", str(ref)), env=env())
    deadline = time.monotonic() + 300
    while not _mid_epoch_checkpoint(killed) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert interrupted["step"] % PER_EPOCH != 0 and not interrupted["finished"]  # mid-epoch
    resumed = subprocess.run(
        cli("pretrain", "--out", str(killed), "--resume"), env=env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait() == 0
    a = load_checkpoint(killed / "checkpoints" / "last.pt")
    b = load_checkpoint(ref / "checkpoints" / "last.pt")
    assert a["finished"] and a["step"] == b["step"] == 2 * PER_EPOCH
    for part in ["encoder", "head", "optimizer", "scheduler", "scaler", "rng", "epoch"]:
        assert_bit_equal(a[part], b[part], part)
    assert step_losses(killed) == step_losses(ref)
    epochs = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    ref_epochs = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in epochs if r["kind"] == "epoch"]
    assert loss == [r["loss"] for r in ref_epochs if r["kind"] == "epoch"]
