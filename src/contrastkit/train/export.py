"""``contrastkit export``: the frozen encoder with its input normalisation, as ONNX or TorchScript.

The exported model takes float32 images (N, C, H, W) with values in [0, 1] (uint8 pixels / 255),
N free; it normalises them with the run's per-channel mean and std and returns the backbone
features (N, F) float32 — what ``contrastkit embed`` computes, without any head. The contract
is written into the file (ONNX ``metadata_props``; a TorchScript ``contract.json`` extra file)
and documented in ``docs/embeddings.md``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit.errors import ContrastkitError
from contrastkit.train import files
from contrastkit.train.config import ExportConfig
from contrastkit.train.evaluate import load_encoder

INPUT_NAME = "images"
OUTPUT_NAME = "features"


class NormalizedEncoder(nn.Module):
    """An encoder's ``forward_features`` behind the run's input normalisation.

    Args:
        encoder: A registered encoder (``forward_features``), in eval mode.
        mean: Per-channel mean on the 0–1 scale.
        std: Per-channel standard deviation.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, encoder: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """Features of images (N, C, H, W) float32 in [0, 1]: (N, F) float32."""
        x = (images - self.mean) / self.std  # (N, C, H, W)
        return self.encoder.forward_features(x)  # type: ignore[operator]


@dataclass
class Exported:
    """What :func:`export` wrote.

    Attributes:
        path: The file.
        contract: The input contract recorded in it (format, input and output names, dtype,
            range, shape, mean, std, the run and its checkpoint epoch).
    """

    path: Path
    contract: dict[str, Any]


def export(config: ExportConfig) -> Exported:
    """Write the run's frozen encoder with its normalisation to ``config.out``.

    ONNX goes through ``torch.onnx.export`` (the ``torch.export``-based exporter, batch
    dimension dynamic); TorchScript through ``torch.jit.trace``. Exported in float32 on the
    CPU, whatever precision the run trained in.

    Args:
        config: The run directory, the format (``onnx`` or ``torchscript``) and the file.

    Returns:
        The path written and the input contract.

    Raises:
        ContrastkitError: if the run directory holds no run, or the encoder cannot be exported
            (naming the exporter's first line).
    """
    run = load_encoder(config.run_dir, "cpu")
    module = NormalizedEncoder(run.encoder, run.shape.mean, run.shape.std).eval()
    size = run.shape.size
    example = torch.rand(2, run.shape.channels, size, size)
    contract = {
        "format": config.format,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "dtype": "float32",
        "range": "[0, 1] (uint8 pixels / 255)",
        "shape": ["N", run.shape.channels, size, size],
        "features": int(module(example).shape[1]),
        "mean": run.shape.mean,
        "std": run.shape.std,
        "run_dir": str(Path(config.run_dir).resolve()),
        "checkpoint_epoch": run.epoch,
    }
    out = Path(config.path)
    with files.os_errors("create directory", out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if config.format == "onnx":
            _onnx(module, example, out, contract)
        else:
            _torchscript(module, example, out, contract)
    except OSError:
        raise
    except Exception as e:  # an exporter's failure on a user's encoder: one line, not a trace
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ContrastkitError(
            f"cannot export the encoder of {config.run_dir} to {config.format}: {first}"
        ) from None
    return Exported(out, contract)


@torch.no_grad()
def _onnx(module: nn.Module, example: Tensor, out: Path, contract: dict[str, Any]) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            verbose=False,
        )
    assert program is not None
    model = program.model_proto
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in contract.items()})
    with files.os_errors("write", out):
        onnx.save_model(model, str(out))


@torch.no_grad()
def _torchscript(module: nn.Module, example: Tensor, out: Path, contract: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still served
        traced = torch.jit.trace(module, example)
        with files.os_errors("write", out):
            torch.jit.save(traced, str(out), _extra_files={"contract.json": json.dumps(contract)})
