"""InfoNCE with in-batch, shared (unpaired) or per-sample (paired) negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit import distributed
from contrastkit.losses import _validate, reference
from contrastkit.losses._common import as_tensor_temperature, prepare
from contrastkit.losses._gathered import positive_rows
from contrastkit.losses._validate import Temperature

IMPLS = ("auto", "reference", "dense", "tiled")


def info_nce(
    query: Tensor,
    positive_key: Tensor,
    negative_keys: Tensor | None = None,
    temperature: Temperature = 0.1,
    *,
    negative_mode: str = "unpaired",
    normalize: bool = True,
    reduction: str = "mean",
    impl: str = "auto",
    tile_size: int | None = None,
    gather: bool = False,
) -> Tensor:
    r"""InfoNCE: cross-entropy of each query's positive key against its candidate keys.

    .. math::
        ℓ_i = -\log \frac{e^{q_i \cdot k_i / τ}}{\sum_{k \in K(i)} e^{q_i \cdot k / τ}}

    K(i) is every positive key of the batch when ``negative_keys`` is None (the other samples'
    keys are the negatives), else k_i together with the negatives: the same M keys for every
    query (``negative_mode="unpaired"``) or the query's own M keys (``"paired"``).
    Equal to ``info_nce.info_nce`` of info-nce-pytorch 0.1.4 (which always normalises).

    MoCo's loss (He et al. 2020; τ = 0.2 in MoCo v2, Chen et al. 2020) is
    ``info_nce(q, k, queue, τ)``: q (N, D) from the encoder, k (N, D) from the momentum encoder
    under ``torch.no_grad()``, and a FIFO queue of the K most recent L2-normalised keys (K, D) as
    unpaired negatives, kept by the caller (requiring no grad; enqueue k after the step). It
    equals lightly 1.6's ``NTXentLoss`` with a memory bank. ``impl="auto"`` tiles a large queue
    (O((N + K)·D) memory).

    Args:
        query: Queries. Shape: (N, D).
        positive_key: Row i is the positive key of ``query[i]``. Shape: (N, D).
        negative_keys: None, or shared negatives of shape (M, D) (``"unpaired"``, e.g. a MoCo
            queue), or per-query negatives of shape (N, M, D) (``"paired"``). They receive a
            gradient if they require one.
        temperature: τ > 0, a float or a 0-dim tensor (learnable). Default 0.1.
        negative_mode: ``"unpaired"`` or ``"paired"``; used when negatives are given.
        normalize: L2-normalise queries and keys first. Default True.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-query losses, shape (N,)).
        impl: ``"dense"`` (the (N, N) or (N, 1 + M) logit matrix), ``"tiled"`` (O((N + M)·D)
            memory, :mod:`contrastkit.losses.tiled`; paired negatives are already O(N·M) =
            O(input / D) and use the dense formula), ``"reference"`` (loop oracle) or ``"auto"``
            (dense for small batches, tiled from a measured size on). Default ``"auto"``.
        tile_size: Tile edge of ``impl="tiled"``; None for the measured default.
        gather: In-batch negatives only. Under ``torchrun``, contrast this process's queries
            against the positive keys of every process (see ``docs/distributed.md``). With
            ``"mean"`` or ``"sum"`` the result is W × this process's share of the loss on the
            concatenated batch, so that its mean over processes is that loss and DDP's gradient
            average is its gradient; with ``"none"`` it is the (N_r,) losses of the local
            queries. N_r may differ between processes. Unlaunched it changes nothing.
            Default False.

    Returns:
        A 0-dim tensor, or shape (N,) for ``reduction="none"`` (float64 for float64 inputs, else
        float32).

    Raises:
        ValueError: on wrong shapes, N/D mismatch between query and keys, query and keys of
            different dtypes, inputs on different devices or on the meta device, empty or
            non-finite input, τ ≤ 0, unknown ``negative_mode``, ``reduction`` or ``impl``,
            ``tile_size`` not None or an integer ≥ 1, ``normalize`` not a bool; ``gather=True``
            with ``impl="reference"`` or with ``negative_keys``.

    Reference: van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive
    Coding", 2018, eq. 4.
    """
    query, positive_key, negative_keys, temperature, negative_mode, reduction = (
        _validate.info_nce_args(
            query, positive_key, negative_keys, temperature, negative_mode, reduction, normalize
        )
    )
    impl, tile_size = _validate.fast_options(impl, IMPLS, tile_size, gather)
    if gather and negative_keys is not None:
        raise ValueError(
            "gather=True gathers the in-batch negatives; with explicit negative_keys there is "
            "nothing to gather: pass negative_keys=None, or gather the negatives yourself"
        )
    if impl == "reference":
        return reference.info_nce(
            query,
            positive_key,
            negative_keys,
            temperature,
            negative_mode=negative_mode,
            normalize=normalize,
            reduction=reduction,
        )
    q = prepare(query, normalize)
    k = prepare(positive_key, normalize, q.dtype)
    tau = as_tensor_temperature(temperature, q)
    neg = None if negative_keys is None else prepare(negative_keys, normalize, q.dtype)
    if neg is not None and negative_mode == "paired":
        # Dense whatever the impl: the (N, M) logits are D times smaller than the (N, M, D)
        # negatives themselves, so a tiled loss would save no memory (docs/tiled.md).
        positive_logits = (q * k).sum(1, keepdim=True)  # (N, 1)
        negative_logits = torch.einsum("nd,nmd->nm", q, neg)  # (N, M)
        logits = torch.cat([positive_logits, negative_logits], dim=1)  # (N, 1 + M)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits / tau, target, reduction=reduction)
    losses = -positive_rows(q, k, neg, tau, impl=impl, gather=gather, tile_size=tile_size)  # (N,)
    if reduction == "none":
        return losses
    if not gather:
        return losses.mean() if reduction == "mean" else losses.sum()
    world = distributed.world_size()
    if reduction == "sum":
        return world * losses.sum()
    total = int(distributed.all_reduce(torch.tensor(q.shape[0], device=q.device)))
    return (world / total) * losses.sum()


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce`: stores the hyperparameters, validates them once."""

    def __init__(
        self,
        temperature: Temperature = 0.1,
        *,
        negative_mode: str = "unpaired",
        normalize: bool = True,
        reduction: str = "mean",
        impl: str = "auto",
        tile_size: int | None = None,
        gather: bool = False,
    ):
        super().__init__()
        self.temperature = _validate.temperature(temperature)
        self.negative_mode = _validate.choice(
            "negative_mode", negative_mode, ("unpaired", "paired")
        )
        self.normalize = _validate.flag("normalize", normalize)
        self.reduction = _validate.choice("reduction", reduction, ("mean", "sum", "none"))
        self.impl, self.tile_size = _validate.fast_options(impl, IMPLS, tile_size, gather)
        self.gather = gather

    def forward(
        self, query: Tensor, positive_key: Tensor, negative_keys: Tensor | None = None
    ) -> Tensor:
        """Compute the loss; see :func:`info_nce`."""
        return info_nce(
            query,
            positive_key,
            negative_keys,
            self.temperature,
            negative_mode=self.negative_mode,
            normalize=self.normalize,
            reduction=self.reduction,
            impl=self.impl,
            tile_size=self.tile_size,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``print(module)``."""
        return (
            f"temperature={self.temperature}, negative_mode={self.negative_mode!r}, "
            f"reduction={self.reduction!r}, impl={self.impl!r}, gather={self.gather}"
        )
