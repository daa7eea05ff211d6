"""The linear probe: a linear classifier trained on frozen, standardised backbone features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ProbeResult:
    """Accuracies and test predictions of a trained probe."""

    train_acc: float
    test_acc: float
    test_pred: Tensor


@dataclass
class LinearProbe:
    """A trained probe: the training features' mean and std (1, F) and the linear layer.

    Attributes:
        mean: Mean of the training features. Shape: (1, F).
        std: Their standard deviation (at least 1e-6). Shape: (1, F).
        classifier: ``nn.Linear(F, num_classes)``, trained.
        train_acc: Accuracy on the training features.
    """

    mean: Tensor
    std: Tensor
    classifier: nn.Linear
    train_acc: float

    @torch.no_grad()
    def predict(self, features: Tensor) -> Tensor:
        """The predicted class of each of ``features`` (N, F), as (N,) int64 on the CPU."""
        x = ((features - self.mean) / self.std).detach()  # (N, F) standardised
        return self.classifier(x).argmax(1).cpu()


def _check_inputs(features: Tensor, labels: Tensor, num_classes: int) -> None:
    if not isinstance(features, Tensor) or features.ndim != 2 or not features.is_floating_point():
        got = (
            f"{features.dtype} {tuple(features.shape)}"
            if isinstance(features, Tensor)
            else type(features).__name__
        )
        raise ValueError(f"train_features must be a float tensor (M, F), got {got}")
    if len(features) == 0:
        raise ValueError(f"train_features must hold at least one row, got {tuple(features.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    m = len(features)
    if (
        not isinstance(labels, Tensor)
        or labels.shape != (m,)
        or labels.is_floating_point()
        or labels.dtype == torch.bool
    ):
        got = (
            f"{labels.dtype} {tuple(labels.shape)}"
            if isinstance(labels, Tensor)
            else type(labels).__name__
        )
        raise ValueError(f"train_labels must be an integer tensor ({m},), got {got}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"train_labels must be classes in 0..{num_classes - 1} (num_classes), got {lo}..{hi}"
        )


def fit_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    *,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> LinearProbe:
    """Train ``nn.Linear(F, num_classes)`` with AdamW and a per-step cosine on fixed features.

    Features are standardised with the training set's mean and standard deviation. Nothing
    here touches the encoder: the features are plain tensors without a graph. The probe
    depends on the training features, labels and settings only: one probe scores any number
    of splits (:meth:`LinearProbe.predict`).

    Args:
        train_features: Shape: (M, F).
        train_labels: Shape: (M,).
        num_classes: Number of classes.
        epochs: Passes over the training features.
        batch_size: Features per step.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: Seed of the initialisation and the shuffling.

    Returns:
        The trained probe and its training accuracy.

    Raises:
        ValueError: naming the argument, on features that are not (M, F) floats with M >= 1,
            labels that are not (M,) integers in 0..num_classes-1, or ``num_classes`` < 1.
    """
    _check_inputs(train_features, train_labels, num_classes)
    device = train_features.device
    mu = train_features.mean(dim=0, keepdim=True)
    sd = train_features.std(dim=0, keepdim=True).clamp_min(1e-6)
    xtr = ((train_features - mu) / sd).detach()
    ytr = train_labels.to(device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    clf = nn.Linear(xtr.shape[1], num_classes).to(device)
    with torch.no_grad():
        bound = 1 / math.sqrt(xtr.shape[1])
        clf.weight.copy_(torch.rand(clf.weight.shape, generator=g).mul(2 * bound).sub(bound))
        clf.bias.zero_()
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(xtr.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    for _ in range(epochs):
        perm = torch.randperm(xtr.shape[0], generator=g).to(device)
        for idx in perm.split(batch_size):
            loss = F.cross_entropy(clf(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        train_acc = float((clf(xtr).argmax(1) == ytr).float().mean())
    return LinearProbe(mu, sd, clf, train_acc)


def train_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    **settings: Any,
) -> ProbeResult:
    """Train a probe and score it on ``test_features`` (N, F) with ``test_labels`` (N,).

    ``train_features``, ``train_labels`` and the keyword ``settings`` (``num_classes``,
    ``epochs``…) are :func:`fit_linear_probe`'s; then :func:`score_probe`.

    Returns:
        The accuracies and the test predictions (N,).
    """
    probe = fit_linear_probe(train_features, train_labels, **settings)
    return score_probe(probe, test_features, test_labels)


def score_probe(probe: LinearProbe, features: Tensor, labels: Tensor) -> ProbeResult:
    """The probe's accuracy and predictions on ``features`` (N, F) with ``labels`` (N,)."""
    pred = probe.predict(features)
    acc = float((pred == labels.cpu()).float().mean())
    return ProbeResult(probe.train_acc, acc, pred)
