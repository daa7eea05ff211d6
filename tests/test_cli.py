import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contrastkit.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--limit", "64", "--batch-size", "32", "--epochs", "1", "--quiet", "--device", "cpu"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "contrastkit", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_run_report_embed_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = run_cli(
        "run",
        "--data",
        "digits",
        "--method",
        "simclr,ce",
        "--out",
        str(out),
        "--probe-epochs",
        "3",
        "--knn-k",
        "10",
        *TINY,
    )
    assert r.returncode == 0, r.stderr
    assert (
        "| simclr | small_cnn | 1 |" in r.stdout and "raw pixels: logistic regression" in r.stdout
    )
    # the raw-pixel logistic regression of the run's baselines.json, in the linear-probe column
    # (test_pretrain checks that number against scikit-learn computed independently)
    logreg = json.loads((out / "baselines.json").read_text())["logreg"]
    row = next(line for line in r.stdout.splitlines() if "logistic regression" in line)
    assert row.split("|")[8].strip() == f"{100 * logreg:.1f}"
    for m in ["simclr", "ce"]:
        for f in [
            "probe.json",
            "knn.json",
            "plots/loss_lr.png",
            "plots/tsne.png",
            "plots/similarity.png",
            "plots/confusion.png",
        ]:
            assert (out / m / f).is_file(), f"{m}/{f}"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 11 and "linear-probe acc" in html
    (out / "report.html").unlink()
    r = run_cli("report", str(out))
    assert r.returncode == 0 and (out / "report.html").is_file() and "| ce |" in r.stdout
    r = run_cli("embed", str(out / "ce"), "--split", "test", "--out", str(tmp_path / "emb.npz"))
    assert r.returncode == 0, r.stderr
    emb = np.load(tmp_path / "emb.npz")
    assert emb["features"].shape == (360, 128) and emb["features"].dtype == np.float32
    assert emb["labels"].dtype == np.int64 and emb["labels"].shape == (360,)
    r = run_cli("knn", str(out / "ce"), "--k", "5")
    assert r.returncode == 0 and "kNN (k=5" in r.stdout


@pytest.mark.slow
def test_bad_input_in_a_subprocess_prints_error_without_traceback(tmp_path):
    r = run_cli("pretrain", "--data", "nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert r.stderr.startswith("error: unknown data set 'nope'") and "Traceback" not in r.stderr


def test_pretrain_probe_and_config_file(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: simclr\nepochs: 3\nlimit: 64\nbatch_size: 32\nknn_k: 10\n")
    assert (
        main(
            [
                "pretrain",
                "--config",
                str(cfg),
                "--epochs",
                "1",
                "--out",
                str(out),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    saved = (out / "config.yaml").read_text()
    assert "method: simclr" in saved and "epochs: 1" in saved  # the flag overrode the file
    assert main(["linear-probe", str(out), "--epochs", "2"]) == 0
    assert "linear probe: train" in capsys.readouterr().out
    # a saved config reproduces the run (provenance is ignored) given a new --out
    assert (
        main(
            [
                "pretrain",
                "--config",
                str(out / "config.yaml"),
                "--out",
                str(tmp_path / "again"),
                "--quiet",
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pretrain", "--data", "imagenet"], "unknown data set 'imagenet'"),
        (["pretrain", "--model", "vit", *TINY], "unknown model 'vit'"),
        (["pretrain", "--method", "byol"], "unknown method 'byol'"),
        (["pretrain", "--batch-size", "1"], "--batch-size (batch_size) must be an integer >= 2"),
        (
            ["pretrain", "--data", "fashion-mnist", "--data-root", "{tmp}"],
            "Fashion-MNIST IDX files not found",
        ),
        (["pretrain", "--data", "stl10", "--data-root", "{tmp}"], "stl10_binary not found"),
        (["pretrain", "--data", "folder:{tmp}/none"], "does not exist"),
        (["linear-probe", "{tmp}/none"], "does not exist"),
        (["knn", "{tmp}"], "not found"),
        (["run", "--method", "simclr,byol"], "unknown method"),
        (["run", "--probe-epochs", "0"], "--probe-epochs (probe_epochs) must be an integer >= 1"),
        (["report", "{tmp}"], "holds no pretraining run"),
        (["pretrain", "--config", "{tmp}/missing.yaml"], "config file"),
        (["pretrain", "--device", "tpu", *TINY[:-2]], "unknown device"),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args and args[0] in ("pretrain", "run"):
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_unknown_config_key_and_existing_run(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epoch: 3\n")
    assert main(["pretrain", "--config", str(cfg)]) == 2
    assert "unknown option(s) 'epoch'" in capsys.readouterr().err
    out = tmp_path / "done"
    out.mkdir()
    (out / "probe.json").write_text("{}")
    assert main(["pretrain", "--out", str(out), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "probe.json").read_text() == "{}"


def test_a_config_file_of_another_command_names_the_keys_and_their_commands(tmp_path, capsys):
    # the repository's run file, given to pretrain: its evaluation key belongs to run and sweep
    run_file = Path(__file__).resolve().parents[1] / "configs" / "fashion-mnist.yaml"
    out = tmp_path / "out"
    assert main(["pretrain", "--config", str(run_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --config {run_file}: "), err
    assert "'probe_epochs' (of `contrastkit run`, `contrastkit sweep`)" in err
    assert "not for `contrastkit pretrain`" in err and not out.exists()
    # a knn file with a probe's key: named with linear-probe; a key no command has is not
    cfg = tmp_path / "k.yaml"
    cfg.write_text("k: 5\nweight_decay: 0.01\nepoch: 3\n")
    assert main(["knn", str(tmp_path), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "'weight_decay' (of `contrastkit pretrain`, `contrastkit linear-probe`" in err
    assert "'epoch'" not in err and "not for `contrastkit knn`" in err


def test_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"\x00" * 10)
    assert main(["linear-probe", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_supcon_on_unlabelled_split_is_refused(tmp_path, capsys):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    np.zeros((4, 3, 96, 96), np.uint8).tofile(d / "unlabeled_X.bin")
    args = [
        "pretrain",
        "--data",
        "stl10",
        "--data-root",
        str(tmp_path),
        "--train-split",
        "unlabeled",
    ]
    assert main([*args, "--method", "supcon", "--out", str(tmp_path / "o")]) == 2
    assert "needs labels" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pretrain", "--epochs", "ten"], "error: argument --epochs: invalid int value: 'ten'"),
        (["pretrain", "--temperature"], "error: argument --temperature: expected one argument"),
        (["knn"], "error: the following arguments are required: run_dir"),
        (["train"], "error: argument command: invalid choice: 'train'"),
    ],
)
def test_a_flag_the_parser_rejects_is_one_line_too(capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert err.rstrip().endswith("--help`)")


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_run_takes_every_pretrain_flag_and_help_shows_the_defaults(capsys):
    from contrastkit.train.config import PretrainConfig, options

    text = _help("run", capsys)
    flags = set(re.findall(r"--[a-z-]+", text))
    for o in options(PretrainConfig):  # run's recipe is a PretrainConfig: every flag of it
        assert "--" + o.name.replace("_", "-") in flags, o.name
    assert {"--momentum", "--sync-bn", "--train-split", "--download", "--probe-lr"} <= flags
    assert {"--method", "--resume", "--config"} <= flags and "--methods" not in flags
    assert "--out OUT directory of the whole run, one sub-directory per method" in text
    assert "--probe-epochs PROBE_EPOCHS probe training epochs (default: 100)" in text
    text = _help("pretrain", capsys)
    assert "pretrain an encoder (simclr, supcon, ce, moco, mocov3, supcon-moco)" in text
    assert "--seed SEED random seed (model init, data order, augmentation) (default: 0)" in text
