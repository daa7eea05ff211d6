"""``contrastkit run`` passes recipe knobs to every method and reports CE's own head."""

import json

import yaml

from contrastkit.cli import main
from contrastkit.train import run
from contrastkit.train.rundir import knn_curve, read_metrics

TINY = ["--limit", "64", "--batch-size", "32", "--epochs", "1", "--quiet", "--device", "cpu"]


def test_run_passes_recipe_knobs_and_reports_ce_head(tmp_path, capsys):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(
        "data: digits\nmethods: supcon,ce\nwarmup_epochs: 0.5\ntemperature: 0.2\n"
        "weight_decay: 0.001\naugment: none\nknn_every: 0\nprobe_epochs: 2\nknn_k: 10\n"
    )
    out = tmp_path / "r"
    assert main(["run", "--config", str(cfg), "--out", str(out), *TINY]) == 0
    table = capsys.readouterr().out
    assert "own head acc %" in table
    for m in ("supcon", "ce"):
        saved = yaml.safe_load((out / m / "config.yaml").read_text())
        assert saved["warmup_epochs"] == 0.5 and saved["temperature"] == 0.2
        assert saved["weight_decay"] == 0.001 and saved["augment"] == "none"
        assert saved["knn_every"] == 0 and saved["channels_last"] is True
    ce = json.loads((out / "ce" / "probe.json").read_text())
    assert 0.0 <= ce["head_test_acc"] <= 1.0
    assert "head_test_acc" not in json.loads((out / "supcon" / "probe.json").read_text())
    row = json.loads((out / "results.json").read_text())["rows"]
    assert [r["head_acc"] is None for r in row] == [False, True] or [
        r["head_acc"] is None for r in row
    ] == [True, False]


def test_run_closes_the_knn_curve_with_its_final_evaluation(tmp_path):
    """Without --limit, run skips the monitor after the last epoch: knn.json measures the same."""
    out = tmp_path / "r"
    opts = {"epochs": 2, "batch_size": 256, "knn_every": 1, "probe_epochs": 2, "quiet": True}
    run(data="digits", methods="supcon", out=str(out), device="cpu", **opts)
    epochs = [m for m in read_metrics(out / "supcon") if m["kind"] == "epoch"]
    assert [m["knn_acc"] is None for m in epochs] == [False, True]
    final = json.loads((out / "supcon" / "knn.json").read_text())["test_acc"]
    assert knn_curve(out / "supcon") == [(1, epochs[0]["knn_acc"]), (2, final)]
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["knn_acc"] == final


def test_after_limit_run_also_monitors_the_last_epoch(tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--data", "digits", "--methods", "ce", "--out", str(out), *TINY]) == 0
    epochs = [m for m in read_metrics(out / "ce") if m["kind"] == "epoch"]
    assert epochs[-1]["knn_acc"] is not None  # on the 64-image bank; knn.json's is the whole split
