"""The pretraining methods: the head each one trains and the loss it takes on a batch.

A method turns the network's output for a batch of augmented views into a loss. The contrastive
ones project every view with a :class:`~contrastkit.models.ProjectionHead` and hand the
embeddings to the loss core (:mod:`contrastkit.losses`): SimCLR's NT-Xent is SupCon without
labels (``supcon(z, None, τ)`` equals ``nt_xent(z[:, 0], z[:, 1], τ)`` bit for bit at V = 2),
so both go through :func:`~contrastkit.losses.supcon`. Cross-entropy trains a linear classifier
on one view, the supervised baseline on the same encoder and augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.losses import supcon
from contrastkit.models import ProjectionHead


@dataclass(frozen=True)
class Method:
    """One pretraining method.

    Attributes:
        name: The name ``--method`` takes.
        uses_labels: The loss reads the labels (the training split must have them).
    """

    name: str
    uses_labels: bool

    def views(self, requested: int) -> int:
        """Views per image the augmentation draws, given ``--views``."""
        return requested

    def head(self, features: int, num_classes: int, proj_dim: int, norm: str) -> nn.Module:
        """The module trained on top of the encoder's ``features``-wide output."""
        return ProjectionHead(features, out_features=proj_dim, norm=norm)

    def inputs(self, views: Tensor) -> Tensor:
        """The images the network sees. Shape: (B, V, C, H, W) → (B·V, C, H, W)."""
        return views.flatten(0, 1)

    def loss(
        self, out: Tensor, labels: Tensor, views: int, temperature: float, gather: bool
    ) -> Tensor:
        """The loss of the network's float32 output ``out`` for a batch.

        Args:
            out: Embeddings of every view, sample-major. Shape: (B·V, D).
            labels: Shape: (B,).
            views: V.
            temperature: τ.
            gather: Contrast against the views of every process (under ``torchrun``).

        Returns:
            A 0-dim loss.
        """
        z = out.view(-1, views, out.shape[-1])  # (B, V, D)
        return supcon(z, labels if self.uses_labels else None, temperature, gather=gather)

    def positive_key(self, sample: Tensor, labels: Tensor) -> Tensor:
        """What makes two views positives: the image for SimCLR, the class otherwise."""
        return labels if self.uses_labels else sample

    def embed(self, encoder: nn.Module, head: nn.Module, x: Tensor) -> Tensor:
        """What the method compares: projected embeddings (the similarity plot). (N, D)."""
        out: Tensor = head(encoder(x))
        return out


@dataclass(frozen=True)
class CrossEntropy(Method):
    """Cross-entropy on one view through a linear classifier: the supervised baseline."""

    def views(self, requested: int) -> int:
        """One view: the classifier sees each image once per step."""
        return 1

    def head(self, features: int, num_classes: int, proj_dim: int, norm: str) -> nn.Module:
        """A linear classifier over the classes."""
        return nn.Linear(features, max(num_classes, 1))

    def inputs(self, views: Tensor) -> Tensor:
        """The first view. Shape: (B, V, C, H, W) → (B, C, H, W)."""
        return views[:, 0]

    def loss(
        self, out: Tensor, labels: Tensor, views: int, temperature: float, gather: bool
    ) -> Tensor:
        """Cross-entropy of the logits ``out`` (B, K); DDP's gradient average is the global mean."""
        return F.cross_entropy(out, labels)

    def embed(self, encoder: nn.Module, head: nn.Module, x: Tensor) -> Tensor:
        """The encoder's features: the classifier's logits are not an embedding. (N, F)."""
        out: Tensor = encoder(x)
        return out


METHODS: dict[str, Method] = {
    "simclr": Method("simclr", uses_labels=False),
    "supcon": Method("supcon", uses_labels=True),
    "ce": CrossEntropy("ce", uses_labels=True),
}
"""Every method by name (the names :mod:`contrastkit.train.config` accepts)."""


def get_method(name: str) -> Method:
    """The method called ``name`` (validated by the config before it gets here)."""
    return METHODS[name]
