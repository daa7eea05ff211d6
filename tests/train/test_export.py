"""Exported encoders (ONNX through onnxruntime, TorchScript) give `embed`'s features."""

import json

import numpy as np
import pytest
import torch

from contrastkit.cli import main
from contrastkit.data import resolve_dataset
from contrastkit.errors import ContrastkitError
from contrastkit.train.config import EmbedConfig, ExportConfig, PretrainConfig
from contrastkit.train.evaluate import embed
from contrastkit.train.export import export
from contrastkit.train.pretrain import pretrain

TINY = {"limit": 64, "batch_size": 32, "epochs": 1, "quiet": True, "knn_k": 10, "device": "cpu"}


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "simclr"
    pretrain(PretrainConfig(data="digits", method="simclr", out=str(out), **TINY))
    return out


@pytest.fixture(scope="module")
def test_split(simclr_run):
    """The test images as the contract wants them, and `embed`'s features of them."""
    images = resolve_dataset("digits", "test").images  # (360, 1, 8, 8) uint8
    e = np.load(embed(EmbedConfig(str(simclr_run), "test", str(simclr_run / "e.npz"), "cpu")))
    return images.float().div(255).numpy(), e["features"]


def test_onnx_runtime_gives_the_features_of_embed(simclr_run, test_split, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    done = export(
        ExportConfig(run_dir=str(simclr_run), format="onnx", out=str(tmp_path / "e.onnx"))
    )
    x, want = test_split
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(float)", [1, 8, 8])
    # the batch dimension is free: the split in batches of 1, 7 and the rest
    got = np.concatenate(
        [session.run(None, {"images": x[a:b]})[0] for a, b in [(0, 1), (1, 8), (8, len(x))]]
    )
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(done.path)).metadata_props}
    assert props["shape"] == ["N", 1, 8, 8] and props["range"].startswith("[0, 1]")
    assert props["mean"] == done.contract["mean"] and props["features"] == want.shape[1]


def test_torchscript_gives_the_features_of_embed(simclr_run, test_split, capsys):
    assert main(["export", str(simclr_run), "--format", "torchscript"]) == 0
    path = simclr_run / "encoder.pt"  # the default file
    assert f"wrote {path} (torchscript): input 'images' float32 N×1×8×8" in capsys.readouterr().out
    x, want = test_split
    extra = {"contract.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    with torch.no_grad():
        got = torch.cat([module(torch.from_numpy(x[a:b])) for a, b in [(0, 3), (3, len(x))]])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)
    assert json.loads(extra["contract.json"])["format"] == "torchscript"


def test_bad_export_requests_are_one_line_and_write_nothing(simclr_run, tmp_path, capsys):
    with pytest.raises(ContrastkitError, match="unknown export format 'tflite'"):
        ExportConfig(run_dir=str(simclr_run), format="tflite")
    out = tmp_path / "new" / "e.onnx"
    assert main(["export", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.parent.exists()
