"""Every recipe shipped under ``configs/`` loads and runs: options known, values accepted.

The real recipes train on Fashion-MNIST for many epochs; here each runs on the built-in digits
for two tiny epochs in float32 (longer than the recipes' 1-epoch warm-up, which a shorter
run would shorten), with only the size and data flags overridden, so a renamed
option, an unknown augmentation preset or a bad value in a config file fails in CI.
"""

import json
from pathlib import Path

import pytest
import yaml

from contrastkit.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
SMALL = [
    "--data", "digits", "--limit", "64", "--batch-size", "32", "--epochs", "2",
    "--precision", "fp32", "--probe-epochs", "1", "--knn-every", "0", "--knn-k", "10",
    "--quiet", "--device", "cpu",
]  # fmt: skip


RECIPE_KEYS = {"model", "optimizer", "lr", "warmup_epochs", "temperature", "augment", "seed"}


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"digits.yaml", "fashion-mnist.yaml"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_runs(path, tmp_path):
    recipe = yaml.safe_load(path.read_text())
    out = tmp_path / "run"
    assert main(["run", "--config", str(path), "--out", str(out), *SMALL]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == recipe["method"].split(",")
    kept = RECIPE_KEYS & recipe.keys()  # the recipe's values, not the defaults
    for r in rows:
        saved = yaml.safe_load((out / r["method"] / "config.yaml").read_text())
        assert {k: saved[k] for k in kept} == {k: recipe[k] for k in kept}
        assert 0.0 <= r["probe_acc"] <= 1.0
