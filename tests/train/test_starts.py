"""Bad starts create nothing; odd but valid starts warn and record what they used; damaged
metrics are one line; a finished run says so when resumed."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from contrastkit.cli import main
from contrastkit.data import load_dataset
from contrastkit.errors import ContrastkitWarning
from contrastkit.train.config import KnnConfig, PretrainConfig, load_yaml
from contrastkit.train.evaluate import knn
from contrastkit.train.metrics import read_metrics
from contrastkit.train.pretrain import pretrain

TINY = ["--limit", "64", "--batch-size", "32", "--epochs", "2", "--quiet", "--device", "cpu"]

BAD_STARTS = [
    ["pretrain", "--temperature", "0"],
    ["pretrain", "--temperature", "nan"],
    ["pretrain", "--temperature=-inf"],
    ["pretrain", "--lr", "-1"],
    ["pretrain", "--lr", "nan"],
    ["pretrain", "--augment", "bogus"],
    ["pretrain", "--momentum", "1"],
    ["pretrain", "--weight-decay", "-0.1"],
    ["pretrain", "--warmup-epochs", "inf"],
    ["pretrain", "--epochs", "0"],
    ["pretrain", "--batch-size", "1"],
    ["pretrain", "--method", "simclr", "--views", "1"],
    ["pretrain", "--proj-dim", "0"],
    ["pretrain", "--knn-k", "0"],
    ["pretrain", "--knn-t", "0"],
    ["pretrain", "--knn-every", "-1"],
    ["pretrain", "--seed", "-1"],
    ["pretrain", "--limit", "1"],
    ["pretrain", "--image-size", "0"],
    ["pretrain", "--method", "byol"],
    ["pretrain", "--model", "vit"],
    ["pretrain", "--norm", "layer"],
    ["pretrain", "--optimizer", "adam"],
    ["pretrain", "--precision", "fp8"],
    ["pretrain", "--precision", "fp16"],  # a known name this CPU cannot do
    ["pretrain", "--device", "tpu"],
    ["pretrain", "--data", "imagenet"],
    ["pretrain", "--train-split", "unlabeled"],
    ["pretrain", "--data", "fashion-mnist", "--data-root", "{tmp}/nowhere"],
    ["run", "--temperature", "0"],
    ["run", "--lr", "nan"],
    ["run", "--method", "simclr,byol"],
    ["run", "--probe-epochs", "0"],
    ["run", "--probe-lr", "0"],
    ["run", "--momentum", "1"],  # run has every pretrain flag
    ["run", "--train-split", "unlabeled"],
    ["run", "--precision", "fp16"],
    ["run", "--knn-t", "inf"],
    ["run", "--augment", "bogus"],
    ["run", "--views", "1"],
    ["pretrain", "--method", "moco", "--batch-size", "64", "--queue-size", "63"],
    ["pretrain", "--method", "moco", "--momentum-ema", "1.5"],
    ["pretrain", "--method", "simclr", "--queue-size", "4096"],
    ["pretrain", "--method", "mocov3", "--queue-size", "4096"],
    ["pretrain", "--method", "supcon", "--momentum-ema", "0.9"],
    ["pretrain", "--method", "supcon-moco", "--symmetric"],
    ["pretrain", "--method", "moco", "--bn-splits", "4"],
    ["pretrain", "--method", "moco", "--norm", "split", "--batch-size", "20", "--bn-splits", "8"],
    ["run", "--method", "simclr,ce", "--ema-schedule", "cosine"],
]


@pytest.mark.parametrize("args", BAD_STARTS, ids=[" ".join(a) for a in BAD_STARTS])
def test_a_bad_start_is_one_line_and_creates_nothing(tmp_path, capsys, args):
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([*args[:1], *TINY, "--warmup-epochs", "0", *args[1:], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("text", ["temperature: .nan\n", "lr: .inf\n", "momentum: -.inf\n"])
def test_yaml_nan_and_inf_in_a_config_file_create_nothing(tmp_path, capsys, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["pretrain", "--config", str(cfg), "--out", str(out)]) == 2
    assert "must be a finite number" in capsys.readouterr().err and not out.exists()


def test_a_run_shorter_than_its_warmup_warms_up_for_a_tenth_of_it(tmp_path):
    out = tmp_path / "r"
    with pytest.warns(ContrastkitWarning, match="a warm-up of 10 epochs .* warming up for 0.2"):
        pretrain(
            PretrainConfig(
                data="digits",
                method="supcon",
                limit=256,
                batch_size=32,
                epochs=2,
                out=str(out),
                quiet=True,
                device="cpu",
                knn_every=0,
            )
        )
    assert load_yaml(str(out / "config.yaml"))["warmup_epochs"] == 0.2
    lrs = [r["lr"] for r in read_metrics(out) if r["kind"] == "step"]
    peak, total, warmup = 0.5 * 32 / 256, 16, 2  # 8 steps an epoch; round(0.2 * 8) = 2
    expected = [peak * (s + 1) / warmup for s in range(warmup)]
    expected += [peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
                 for s in range(warmup, total)]  # fmt: skip
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[-1] < 0.02 * peak  # the run ends decayed, not at its peak


def test_a_warmup_shorter_than_the_run_is_kept(tmp_path, recwarn):
    out = tmp_path / "r"
    pretrain(PretrainConfig(data="digits", method="ce", out=str(out), warmup_epochs=1.5, **_tiny()))
    assert load_yaml(str(out / "config.yaml"))["warmup_epochs"] == 1.5
    assert not [w for w in recwarn if issubclass(w.category, ContrastkitWarning)]


def _tiny() -> dict:
    return {"limit": 64, "batch_size": 32, "epochs": 2, "quiet": True, "device": "cpu"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain(
        PretrainConfig(
            data="digits", method="supcon", out=str(out), knn_k=10, warmup_epochs=0, **_tiny()
        )
    )
    return out


def test_a_knn_k_above_the_bank_size_is_clamped_with_a_warning_and_recorded(finished, tmp_path):
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    bank = train.subset(list(range(48)))
    with pytest.warns(ContrastkitWarning, match="k=200 is more than the 48 training images"):
        clamped = knn(
            KnnConfig(str(finished), k=200, device="cpu"), train_data=bank, test_data=test
        )
    assert clamped["k"] == 48 and json.loads((finished / "knn.json").read_text())["k"] == 48
    exact = knn(KnnConfig(str(finished), k=48, device="cpu"), train_data=bank, test_data=test)
    assert clamped["test_acc"] == exact["test_acc"]


def test_the_monitor_warns_when_k_exceeds_its_bank(tmp_path):
    with pytest.warns(ContrastkitWarning, match="the kNN monitor: k=20 is more than the 16"):
        pretrain(
            PretrainConfig(
                data="digits",
                method="ce",
                out=str(tmp_path / "r"),
                limit=16,
                batch_size=8,
                epochs=1,
                warmup_epochs=0,
                quiet=True,
                device="cpu",
            )
        )


def test_resuming_a_finished_run_prints_its_final_figures(finished, capsys):
    last = [r for r in read_metrics(finished) if r["kind"] == "epoch"][-1]
    before = (finished / "checkpoints" / "last.pt").read_bytes()
    assert main(["pretrain", "--out", str(finished), "--resume"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"{finished} was already finished, nothing to train; it pretrained 2 epochs in "
        f"{last['elapsed']:.1f} s: loss {last['loss']:.4f}, kNN test accuracy "
        f"{100 * last['knn_acc']:.2f} %"
    )
    assert (finished / "checkpoints" / "last.pt").read_bytes() == before


DAMAGE = [
    (b'\n{"kind": "step", "x": 1', None),  # torn: a crash mid-write
    (b"\nnot json\n", "line {n} is not JSON (Expecting value at column 1): repair or delete it"),
    (
        b'\n{"kind": "\xff"}\n',
        "line {n} is not UTF-8 text (byte 0xff at offset 10): repair or delete it",
    ),
]


@pytest.mark.parametrize(("tail", "message"), DAMAGE, ids=["torn", "not JSON", "bad UTF-8"])
@pytest.mark.parametrize("command", ["resume", "report"])
def test_damaged_metrics_through_resume_and_report(finished, tmp_path, capsys, tail, message,
                                                    command):  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    metrics = run / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good.rstrip(b"\n") + tail)
    n = good.count(b"\n") + 1  # the damaged line's number
    args = (
        ["pretrain", "--out", str(run), "--resume"] if command == "resume" else ["report", str(run)]
    )
    status = main(args)
    err = capsys.readouterr().err
    if message is None:
        assert status == 0, err
        if command == "resume":  # dropped, the file rewritten whole
            assert metrics.read_bytes() == good
    else:
        assert status == 2
        assert err == f"error: {metrics} {message.format(n=n)}\n"


MOCO_ERRORS = [
    (
        ["--method", "moco", "--batch-size", "64", "--queue-size", "63"],
        "error: --queue-size (queue_size) must be at least the 64 keys a step enqueues "
        "(--batch-size 64), got 63",
    ),
    (
        ["--method", "moco", "--batch-size", "64", "--queue-size", "100", "--symmetric"],
        "error: --queue-size (queue_size) must be at least the 128 keys a step enqueues "
        "(--batch-size 64, both views), got 100",
    ),
    (
        ["--method", "moco", "--momentum-ema", "1.5"],
        "error: --momentum-ema (momentum_ema) must be a finite number in [0, 1], got 1.5",
    ),
    (
        ["--method", "simclr", "--queue-size", "4096"],
        "error: --queue-size (queue_size) is an option of moco and supcon-moco, not of simclr; "
        "leave it out or choose --method moco",
    ),
    (
        ["--method", "moco", "--norm", "split", "--batch-size", "20", "--bn-splits", "8"],
        "error: --bn-splits (bn_splits) must divide the 20 images each process's step holds "
        "(--batch-size 20 over 1 process(es)), got 8",
    ),
    (
        ["--method", "moco", "--norm", "split", "--sync-bn"],
        "error: --sync-bn (sync_bn) and --norm split exclude each other: SyncBatchNorm takes "
        "the statistics over all processes, split batch norm over sub-batches; choose one",
    ),
    (
        ["--method", "moco", "--bn-splits", "4"],
        "error: --bn-splits (bn_splits) is for --norm split, got --norm batch",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), MOCO_ERRORS, ids=[" ".join(a) for a, _ in MOCO_ERRORS]
)
def test_bad_moco_options_name_option_value_and_rule(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["pretrain", *TINY, "--warmup-epochs", "0", *args, "--out", str(out)]) == 2
    assert capsys.readouterr().err == message + "\n"
    assert not out.exists()
