"""A user's own encoder: the example of docs/encoders.md runs as written, through the CLI and Python."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastkit.errors import ContrastkitError
from contrastkit.models import create_model
from contrastkit.models.registry import MODELS, FeatureEncoder, recorded_name, register_model

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "encoders.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)


def _env(cwd: Path) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(cwd)])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_the_documented_example_runs(tmp_path: Path) -> None:
    module, python = _blocks("python")
    (tmp_path / "my_encoders.py").write_text(module)
    (commands,) = _blocks("bash")
    for line in commands.strip().splitlines():
        argv = [sys.executable, "-m", "contrastkit", *line.split()[1:], "--device", "cpu"]
        done = subprocess.run(
            argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True
        )
        assert done.returncode == 0, (line, done.stderr)
    assert "model: my_encoders:make" in (tmp_path / "runs/mine/config.yaml").read_text()
    assert (tmp_path / "runs/mine/probe.json").is_file()
    # the Python block: registered by name, recorded by import path, probed by a new process
    script = "import os\nos.chdir(os.environ['WHERE'])\n" + python
    env = {**_env(tmp_path), "WHERE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "model: my_encoders:make" in (tmp_path / "runs/mine-py/config.yaml").read_text()
    argv = [sys.executable, "-m", "contrastkit", "knn", "runs/mine-py", "--device", "cpu"]
    done = subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_sequential_gets_its_feature_size_measured() -> None:
    seq = nn.Sequential(nn.Conv2d(1, 5, 3), nn.AdaptiveAvgPool2d(1))  # (N, 5, 1, 1)
    MODELS["_seq_test"] = lambda in_channels: seq
    try:
        encoder = create_model("_seq_test", in_channels=1, image_size=8)
    finally:
        del MODELS["_seq_test"]
    assert isinstance(encoder, FeatureEncoder) and encoder.num_features == 5
    x = torch.randn(3, 1, 8, 8)
    assert encoder.forward_features(x).shape == (3, 5)
    assert torch.equal(encoder(x), seq(x).flatten(1))  # the user's module, unchanged


def test_factories_get_only_the_arguments_they_name() -> None:
    seen: dict[str, object] = {}

    def factory(norm: str, image_size: int) -> nn.Module:
        seen.update(norm=norm, image_size=image_size)
        return nn.Sequential(nn.Flatten(), nn.Linear(image_size * image_size, 4))

    MODELS["_args_test"] = factory
    try:
        create_model("_args_test", in_channels=1, image_size=6, norm="group")
    finally:
        del MODELS["_args_test"]
    assert seen == {"norm": "group", "image_size": 6}


def test_bad_encoders_are_one_line_errors() -> None:
    MODELS["_bad_test"] = lambda: nn.Linear(3, 4)  # cannot take images
    try:
        with pytest.raises(ContrastkitError, match=r"model '_bad_test' cannot encode images"):
            create_model("_bad_test", in_channels=1, image_size=8)
    finally:
        del MODELS["_bad_test"]
    with pytest.raises(ContrastkitError, match=r"cannot import 'no_such_module_xyz'"):
        create_model("no_such_module_xyz:make")
    with pytest.raises(ContrastkitError, match=r"has no callable 'nothing'"):
        create_model("contrastkit.models:nothing")
    with pytest.raises(ContrastkitError, match=r"unknown model 'vit'.*import path"):
        create_model("vit")


def test_a_run_records_an_importable_factory_by_its_path() -> None:
    from contrastkit.models import small_cnn

    assert recorded_name("small_cnn") == "small_cnn"  # built in: the name
    assert recorded_name("pkg.mod:make") == "pkg.mod:make"
    register_model("_path_test")(nn.Identity)  # a class from an importable module
    try:
        assert recorded_name("_path_test") == "torch.nn.modules.linear:Identity"
    finally:
        del MODELS["_path_test"]

    def local() -> nn.Module:
        return small_cnn.small_cnn()

    register_model("_local_test")(local)  # defined in a function: not importable elsewhere
    try:
        assert recorded_name("_local_test") == "_local_test"
    finally:
        del MODELS["_local_test"]
