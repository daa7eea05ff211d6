"""What pretraining watches: the kNN monitor and a batch's similarity matrix for the report."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from contrastkit.data import MultiViewAugment
from contrastkit.data.shards import iter_images, take
from contrastkit.train.config import PretrainConfig
from contrastkit.train.features import extract_features
from contrastkit.train.knn import knn_accuracy
from contrastkit.train.methods import get_method
from contrastkit.train.rundata import RunData
from contrastkit.train.state import TrainingState


def knn_monitor(
    cfg: PretrainConfig, state: TrainingState, data: RunData, device: torch.device
) -> float | None:
    """Weighted kNN accuracy of the current encoder's features (None without labels).

    It scores the run's validation split if it has one, else its test split
    (:attr:`~contrastkit.train.rundata.RunData.monitored`).
    """
    queries, _ = data.monitored
    if data.bank is None or queries is None:
        return None
    kw = {
        "mean": data.shape.mean,
        "std": data.shape.std,
        "device": device,
        "amp_dtype": state.amp_dtype,
        "channels_last": cfg.channels_last,
    }
    bank = extract_features(state.encoder, iter_images(data.bank, 512, workers=cfg.workers), **kw)  # type: ignore[arg-type]
    feats = extract_features(state.encoder, iter_images(queries, 512, workers=cfg.workers), **kw)  # type: ignore[arg-type]
    return knn_accuracy(
        bank,
        data.bank.labels,
        feats,
        queries.labels,
        num_classes=data.shape.num_classes,
        k=cfg.knn_k or 200,
        t=cfg.knn_t,
    )


@torch.no_grad()
def similarity_snapshot(
    cfg: PretrainConfig,
    state: TrainingState,
    data: RunData,
    augment: MultiViewAugment,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """A batch's cosine similarities (2 views of ≤ 32 images, sorted by label) and positive mask."""
    n = min(32, len(data.train))
    g = torch.Generator(device=device).manual_seed(cfg.seed + 2)
    two = MultiViewAugment(augment.preset, 2, augment.mean, augment.std)
    order = torch.sort(data.train.labels[:n], stable=True).indices  # classes as blocks
    views = two(take(data.train, range(n))[order].to(device), g)  # (n, 2, C, H, W)
    labels = data.train.labels[:n][order]
    state.encoder.eval()
    state.head.eval()
    method = get_method(cfg.method)
    z = method.embed(state.encoder, state.head, views.flatten(0, 1))  # (2n, D)
    state.encoder.train()
    state.head.train()
    z = F.normalize(z.float(), dim=1).cpu()
    sim = z @ z.T  # (2n, 2n), rows ordered sample-major: (x0 v0, x0 v1, x1 v0, ...)
    sample = torch.arange(n).repeat_interleave(2)
    key = method.positive_key(sample, labels.repeat_interleave(2))
    pos = (key[:, None] == key[None, :]) & ~torch.eye(2 * n, dtype=torch.bool)
    return {
        "similarity": sim.numpy(),
        "positives": pos.numpy(),
        "labels": labels.repeat_interleave(2).numpy(),
    }
