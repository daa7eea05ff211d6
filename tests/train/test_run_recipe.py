"""``contrastkit run`` passes recipe knobs to every method and reports CE's own head."""

import json

import yaml

from contrastkit.cli import main

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
