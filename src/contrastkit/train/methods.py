"""The pretraining methods: the head each one trains, the state it keeps and its loss on a batch.

A method turns a batch of augmented views into a loss. The contrastive ones project every view
with a :class:`~contrastkit.models.ProjectionHead` and hand the embeddings to the loss core
(:mod:`contrastkit.losses`): SimCLR's NT-Xent is SupCon without labels (``supcon(z, None, τ)``
equals ``nt_xent(z[:, 0], z[:, 1], τ)`` bit for bit at V = 2), so both go through
:func:`~contrastkit.losses.supcon`. Cross-entropy trains a linear classifier on one view, the
supervised baseline on the same encoder and augmentation.

The momentum methods (:class:`MoCo`, :class:`MoCoV3`, :class:`SupConMoCo`) also keep a key
network, an EMA copy of the encoder and head, and MoCo v2 and SupCon-MoCo a queue of its keys
(:class:`~contrastkit.train.momentum.MomentumKeys`, built by :meth:`Method.momentum_state`,
updated by :meth:`Method.after_step`). The training loop calls :meth:`Method.batch_loss` and
:meth:`Method.after_step` of every method alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit import distributed
from contrastkit.losses import info_nce, supcon
from contrastkit.models import ProjectionHead
from contrastkit.train.device import autocast
from contrastkit.train.momentum import KeyQueue, MomentumKeys, ema_momentum, shuffle_generator

if TYPE_CHECKING:
    from contrastkit.train.config import PretrainConfig
    from contrastkit.train.state import TrainingState


def run_network(cfg: PretrainConfig, state: TrainingState, net: nn.Module, x: Tensor) -> Tensor:
    """``net(x)`` under the run's autocast and memory format, cast to float32 for the loss."""
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    with autocast(x.device.type, state.amp_dtype):
        out: Tensor = net(x).float()
    return out


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

    def batch_loss(
        self, cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor
    ) -> Tensor:
        """The loss of a batch of views (B, V, C, H, W) with labels (B,): a 0-dim tensor.

        The network runs under autocast; its output is cast to float32 for the loss. Under
        ``torchrun`` the contrastive losses gather the views of every process.
        """
        assert cfg.temperature is not None  # resolved (recipes.resolve)
        out = run_network(cfg, state, state.network, self.inputs(views))
        gather = distributed.is_distributed()
        return self.loss(out, labels, views.shape[1], cfg.temperature, gather)

    def momentum_state(
        self, cfg: PretrainConfig, encoder: nn.Module, head: nn.Module, total_steps: int
    ) -> MomentumKeys | None:
        """The key network and queue the method keeps besides its networks (None: none)."""
        return None

    def after_step(self, cfg: PretrainConfig, state: TrainingState) -> None:
        """What the method does after each optimiser step (``state.step``: the step's index)."""


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


class MoCoV3Head(nn.Module):
    """MoCo v3's query head: a projector then a predictor; the keys use the projector alone.

    Both are 2-layer MLPs (:class:`~contrastkit.models.ProjectionHead`); the predictor maps the
    projector's (unnormalised) output of size D to D through a hidden layer of width F.
    """

    def __init__(self, features: int, proj_dim: int, norm: str) -> None:
        super().__init__()
        self.projector = ProjectionHead(features, out_features=proj_dim, norm=norm)
        self.predictor = ProjectionHead(proj_dim, hidden=features, out_features=proj_dim, norm=norm)

    def forward(self, h: Tensor) -> Tensor:
        """Features (N, F) → predicted unit-norm embeddings (N, D)."""
        out: Tensor = self.predictor(self.projector.net(h))
        return out


@dataclass(frozen=True)
class MomentumMethod(Method):
    """A method with a momentum (EMA) key network: two views, the first a query, the other its key.

    Attributes:
        queued: The method keeps a queue of keys (``--queue-size``).
    """

    queued: bool = True

    def views(self, requested: int) -> int:
        """Two views: a query and its key."""
        return 2

    def key_head(self, head: nn.Module) -> nn.Module:
        """The part of the query head that the key network copies (all of it)."""
        return head

    def momentum_state(
        self, cfg: PretrainConfig, encoder: nn.Module, head: nn.Module, total_steps: int
    ) -> MomentumKeys:
        """EMA copies of ``encoder`` and the key head, and a queue of ``--queue-size`` keys."""
        queue = None
        if self.queued:
            assert cfg.queue_size is not None  # resolved (recipes.resolve)
            g = torch.Generator().manual_seed(cfg.seed)
            queue = KeyQueue(cfg.queue_size, cfg.proj_dim, generator=g)
        return MomentumKeys(encoder, self.key_head(head), queue, total_steps)

    def keys(self, cfg: PretrainConfig, state: TrainingState, x: Tensor) -> Tensor:
        """The key network's embeddings of images ``x`` (N, C, H, W), no gradient. (N, D).

        With ``--norm split`` the batch is shuffled through the key network (MoCo's shuffling
        BN, :mod:`contrastkit.models.split_bn`), by a permutation of (seed, step, rank).
        """
        assert state.momentum is not None
        shuffle = None
        if cfg.norm == "split":
            shuffle = shuffle_generator(cfg.seed, state.step, distributed.rank())
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        with autocast(x.device.type, state.amp_dtype):
            return state.momentum.keys(x.contiguous(memory_format=fmt), shuffle)

    def after_step(self, cfg: PretrainConfig, state: TrainingState) -> None:
        """EMA-update the key network (``--momentum-ema``, ``--ema-schedule``), then enqueue."""
        assert state.momentum is not None and cfg.momentum_ema is not None
        assert cfg.ema_schedule is not None
        m = ema_momentum(cfg.momentum_ema, state.step, state.momentum.total_steps, cfg.ema_schedule)
        state.momentum.after_step(state.encoder, self.key_head(state.head), m)


@dataclass(frozen=True)
class MoCo(MomentumMethod):
    """MoCo v2: ``info_nce(q, k, queue, τ)``, the queue's keys the negatives.

    The query is the first view, its key the second (``--symmetric``: also the other way round,
    the mean of the two losses, both key sets enqueued).
    """

    def batch_loss(
        self, cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor
    ) -> Tensor:
        """The MoCo loss of the batch against the queue; the keys are held for the enqueue."""
        assert state.momentum is not None and state.momentum.queue is not None
        assert cfg.temperature is not None
        negatives = state.momentum.queue.keys  # (K, D), enqueued to only after the step
        if not cfg.symmetric:
            q = run_network(cfg, state, state.network, views[:, 0])  # (B, D)
            k = self.keys(cfg, state, views[:, 1])
            state.momentum.hold(k, labels)
            return info_nce(q, k, negatives, cfg.temperature)
        b = views.shape[0]
        q = run_network(cfg, state, state.network, views.flatten(0, 1)).view(b, 2, -1)
        k = self.keys(cfg, state, views.flatten(0, 1)).view(b, 2, -1)
        state.momentum.hold(k[:, 1], labels)
        state.momentum.hold(k[:, 0], labels)
        loss_12 = info_nce(q[:, 0], k[:, 1], negatives, cfg.temperature)
        loss_21 = info_nce(q[:, 1], k[:, 0], negatives, cfg.temperature)
        return (loss_12 + loss_21) / 2


@dataclass(frozen=True)
class MoCoV3(MomentumMethod):
    """MoCo v3 (Chen, Xie, He 2021, Algorithm 1): in-batch keys, a predictor, symmetric, ×2τ.

    ``loss = ctr(q1, k2) + ctr(q2, k1)`` with ``ctr(q, k) = CrossEntropy(q·kᵀ/τ, range(N))·2τ``:
    the queries through encoder, projector and predictor, the keys through the momentum encoder
    and projector; no queue. As the paper's text and its code, q and k are L2-normalised.
    Where the public code (facebookresearch/moco-v3) differs, this follows the paper's
    Algorithm 1: the momentum update comes after the optimiser step (the code does it at the
    start of the next forward, with the same result after the first step); the heads are this
    library's 2-layer MLPs (the paper: a 3-layer projector and a 2-layer predictor, BN in both).
    """

    queued: bool = False

    def head(self, features: int, num_classes: int, proj_dim: int, norm: str) -> nn.Module:
        """Projector and predictor (:class:`MoCoV3Head`)."""
        return MoCoV3Head(features, proj_dim, norm)

    def key_head(self, head: nn.Module) -> nn.Module:
        """The projector: the predictor is on the query side only."""
        projector: nn.Module = head.projector  # type: ignore[assignment]
        return projector

    def batch_loss(
        self, cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor
    ) -> Tensor:
        """``2τ·(CE(q1·k2ᵀ/τ) + CE(q2·k1ᵀ/τ))``, keys of every process under ``torchrun``."""
        assert cfg.temperature is not None
        b, tau = views.shape[0], cfg.temperature
        q = run_network(cfg, state, state.network, views.flatten(0, 1)).view(b, 2, -1)
        k = self.keys(cfg, state, views.flatten(0, 1)).view(b, 2, -1)
        gather = distributed.is_distributed()
        ctr_12 = info_nce(q[:, 0], k[:, 1], None, tau, gather=gather)
        ctr_21 = info_nce(q[:, 1], k[:, 0], None, tau, gather=gather)
        return 2 * tau * (ctr_12 + ctr_21)


@dataclass(frozen=True)
class SupConMoCo(MomentumMethod):
    """SupCon with a queue of labelled keys: the queue's same-class keys are positives too.

    Both views are anchors (SupCon's loss on the batch); the key network embeds the second view,
    whose keys and labels are enqueued after the step.
    """

    def batch_loss(
        self, cfg: PretrainConfig, state: TrainingState, views: Tensor, labels: Tensor
    ) -> Tensor:
        """``supcon(z, labels, τ, queue=(keys, key_labels))``."""
        assert state.momentum is not None and state.momentum.queue is not None
        assert cfg.temperature is not None
        queue = state.momentum.queue
        out = run_network(cfg, state, state.network, self.inputs(views))
        z = out.view(-1, views.shape[1], out.shape[-1])  # (B, 2, D)
        k = self.keys(cfg, state, views[:, 1])
        state.momentum.hold(k, labels)
        gather = distributed.is_distributed()
        return supcon(z, labels, cfg.temperature, gather=gather, queue=(queue.keys, queue.labels))


METHODS: dict[str, Method] = {
    "simclr": Method("simclr", uses_labels=False),
    "supcon": Method("supcon", uses_labels=True),
    "ce": CrossEntropy("ce", uses_labels=True),
    "moco": MoCo("moco", uses_labels=False),
    "mocov3": MoCoV3("mocov3", uses_labels=False),
    "supcon-moco": SupConMoCo("supcon-moco", uses_labels=True),
}
"""Every method by name (the names :mod:`contrastkit.train.config` accepts)."""


def get_method(name: str) -> Method:
    """The method called ``name`` (validated by the config before it gets here)."""
    return METHODS[name]
