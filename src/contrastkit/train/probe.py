"""The linear probe: a linear classifier trained on frozen, standardised backbone features."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ProbeResult:
    """Accuracies and test predictions of a trained probe."""

    train_acc: float
    test_acc: float
    test_pred: Tensor


def train_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> ProbeResult:
    """Train ``nn.Linear(F, num_classes)`` with AdamW and a per-step cosine on fixed features.

    Features are standardised with the training set's mean and standard deviation. Nothing
    here touches the encoder: the features are plain tensors without a graph.

    Args:
        train_features: Shape: (M, F).
        train_labels: Shape: (M,).
        test_features: Shape: (N, F).
        test_labels: Shape: (N,).
        num_classes: Number of classes.
        epochs: Passes over the training features.
        batch_size: Features per step.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: Seed of the initialisation and the shuffling.

    Returns:
        The accuracies and the test predictions (N,).
    """
    device = train_features.device
    mu = train_features.mean(dim=0, keepdim=True)
    sd = train_features.std(dim=0, keepdim=True).clamp_min(1e-6)
    xtr = ((train_features - mu) / sd).detach()
    xte = ((test_features - mu) / sd).detach()
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
        test_pred = clf(xte).argmax(1).cpu()
    test_acc = float((test_pred == test_labels.cpu()).float().mean())
    return ProbeResult(train_acc, test_acc, test_pred)
