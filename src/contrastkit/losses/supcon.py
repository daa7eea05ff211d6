"""Supervised contrastive loss (SupCon, L_out), any number of views, with or without labels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.losses import _validate, reference
from contrastkit.losses._common import as_tensor_temperature, prepare, zero_loss
from contrastkit.losses._gathered import global_classes, negative_mean, rows_against_all
from contrastkit.losses._validate import Temperature

IMPLS = ("auto", "reference", "dense", "tiled")

#: ``supcon``'s ``queue``: keys (K, D), or keys with their labels (K,).
Queue = Tensor | tuple[Tensor, Tensor]


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: Temperature = 0.07,
    *,
    base_temperature: Temperature | None = None,
    contrast_mode: str = "all",
    normalize: bool = True,
    impl: str = "auto",
    tile_size: int | None = None,
    gather: bool = False,
    queue: Queue | None = None,
) -> Tensor:
    r"""Supervised contrastive loss L_out of Khosla et al. (eq. 2), optionally with a key queue.

    .. math::
        ℓ_i = -\frac{τ}{τ_b} \frac{1}{|P(i)|} \sum_{p \in P(i)}
              \log \frac{e^{s_{ip}/τ}}{\sum_{a \in A(i)} e^{s_{ia}/τ}}, \qquad
        L = \frac{1}{|I^+|} \sum_{i \in I^+} ℓ_i

    over the N·V views, s_ij = z_i · z_j on L2-normalised rows. A(i) is every view except i
    itself, and the K queue keys if a ``queue`` is given; P(i) ⊂ A(i) the views whose sample has
    the label of i and the queue keys with that label (with ``labels=None``, the other views of
    the same sample: SimCLR's NT-Xent generalised to V views; the queue keys are then negatives
    only). Other positives stay in the denominator. Queue keys are contrasts, never anchors. I⁺ is
    the set of anchors with at least one positive: an anchor without one (a label seen once with
    V = 1) is left out of the mean; if no anchor has one, the loss is 0 (with a graph, so
    backward works) and a ``UserWarning`` says so.
    With V = 2, ``labels=None``, no queue and ``base_temperature=None`` this is :func:`nt_xent`.

    Args:
        features: V views of N samples. Shape: (N, V, D), V ≥ 1.
        labels: Integer class of each sample, or None (each sample its own class, needs V ≥ 2).
            Shape: (N,).
        temperature: τ > 0, a float or a 0-dim tensor (learnable). Default 0.07.
        base_temperature: τ_b; the loss is scaled by τ/τ_b. Default None means τ_b = τ (no
            rescale; HobbitLong's fixed 0.07 silently rescales the loss when τ ≠ 0.07).
        contrast_mode: ``"all"``: every view is an anchor; ``"one"``: only view 0 of each sample
            is an anchor, all N·V views are contrasts. Default ``"all"``.
        normalize: L2-normalise the features (and the queue keys) first. Default True.
        impl: ``"dense"`` (vectorised, (N·V)² matrix), ``"tiled"`` (O(N·V·D) memory,
            :mod:`contrastkit.losses.tiled`), ``"reference"`` (loop oracle) or ``"auto"`` (dense
            for small batches, tiled from a measured size on). Default ``"auto"``.
        tile_size: Tile edge of ``impl="tiled"``; None for the measured default.
        gather: Under ``torchrun``, contrast this process's anchors against the N·V views of
            every process, labels gathered with them (see ``docs/distributed.md``): the result
            is W × this process's share of the loss on the concatenated batch, so that its mean
            over processes is that loss and DDP's gradient average is its gradient. N may differ
            between processes; V and D may not. The queue is not gathered (it is the same on
            every process). Unlaunched it changes nothing. Default False.
        queue: Extra contrasts, constants (no gradient reaches them): with ``labels``, a pair
            ``(keys, queue_labels)`` of shapes (K, D) and (K,), the keys of the anchor's class
            being positives and the others negatives (a supervised MoCo queue); with
            ``labels=None``, the keys (K, D) alone, all negatives. Same dtype and device as
            ``features``. Default None.

    Returns:
        The mean loss, a 0-dim tensor (float64 for float64 inputs, else float32).

    Raises:
        ValueError: on wrong shapes, labels not (N,) integers, V = 1 without labels, inputs on
            different devices or on the meta device, empty or non-finite input, τ ≤ 0, unknown
            ``contrast_mode`` or ``impl``, ``tile_size`` not None or an integer ≥ 1,
            ``normalize`` not a bool, ``gather=True`` with ``impl="reference"``; a queue whose
            keys are not (K, D) finite values of the features' D, dtype and device, whose labels
            are not (K,) integers, with labels when ``labels`` is None or without them when not.

    Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, eq. 2; the queue
    of He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020.
    """
    features, labels, temperature, base_temperature, contrast_mode = _validate.supcon_args(
        features, labels, temperature, base_temperature, contrast_mode, normalize
    )
    checked_queue = _validate.supcon_queue(queue, features, labels)
    impl, tile_size = _validate.fast_options(impl, IMPLS, tile_size, gather)
    if impl == "reference":
        return reference.supcon(
            features,
            labels,
            temperature,
            base_temperature=base_temperature,
            contrast_mode=contrast_mode,
            normalize=normalize,
            queue=queue,
        )
    n, v, d = features.shape
    z = prepare(features, normalize)
    contrast = z.transpose(0, 1).reshape(v * n, d)  # (V·N, D), view-major: row k = view k // N
    return supcon_rows(
        contrast,
        n,
        labels,
        temperature,
        base_temperature=base_temperature,
        contrast_mode=contrast_mode,
        queue=_queue_contrasts(checked_queue, contrast, normalize),
        impl=impl,
        tile_size=tile_size,
        gather=gather,
    )


def _queue_contrasts(
    queue: tuple[Tensor, Tensor | None] | None, contrast: Tensor, normalize: bool
) -> tuple[Tensor, Tensor] | None:
    """The queue as constant contrasts with classes: detached, prepared like the features.

    An unlabelled queue gets class −1, which no anchor has (``labels=None`` gives anchors their
    sample index, ≥ 0).
    """
    if queue is None:
        return None
    keys = prepare(queue[0].detach(), normalize, contrast.dtype)  # (K, D)
    if queue[1] is None:
        classes = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
    else:
        classes = queue[1].to(keys.device)
    return keys, classes


def supcon_rows(
    contrast: Tensor,
    n: int,
    labels: Tensor | None,
    temperature: Temperature,
    *,
    base_temperature: Temperature | None = None,
    contrast_mode: str = "all",
    queue: tuple[Tensor, Tensor] | None = None,
    impl: str,
    tile_size: int | None,
    gather: bool,
) -> Tensor:
    """The SupCon loss of prepared, view-major contrasts: the core that :func:`nt_xent` shares.

    Args:
        contrast: The V views of N samples, normalised (or not) and view-major: row k is view
            k // N of sample k % N. Shape: (V·N, D).
        n: N.
        labels: Class of each sample, or None (each sample its own class). Shape: (N,).
        temperature: τ, validated.
        base_temperature: τ_b, validated, or None.
        contrast_mode: ``"all"`` or ``"one"``.
        queue: ``(keys, classes)``, (K, D) and (K,), prepared constant contrasts, or None.
        impl: ``"auto"``, ``"dense"`` or ``"tiled"``.
        tile_size: Tile edge of the tiled core; None for its default.
        gather: Contrast against the views of every process.

    Returns:
        The loss, a 0-dim tensor.
    """
    v = contrast.shape[0] // n
    anchor = contrast[:n] if contrast_mode == "one" else contrast  # (A, D); anchor a is row a
    tau = as_tensor_temperature(temperature, contrast)
    if labels is None:
        classes = global_classes(torch.arange(n, device=contrast.device), gather)  # (N,)
    else:
        classes = labels.to(contrast.device)  # (N,)
    classes = classes.repeat(v)  # (V·N,)
    index = torch.arange(anchor.shape[0], device=contrast.device)  # anchor a is contrast a
    r, num_positives = rows_against_all(
        anchor,
        contrast,
        classes[: len(index)],
        classes,
        index,
        tau,
        impl=impl,
        gather=gather,
        symmetric=contrast_mode == "all",
        tile_size=tile_size,
        queue=queue,
    )
    loss = negative_mean(r, num_positives, gather=gather)
    if loss is None:
        reason = "no anchor in the batch has a positive"
        return zero_loss(contrast, temperature, reason=reason, dtype=contrast.dtype)
    if base_temperature is None:
        return loss
    return tau / as_tensor_temperature(base_temperature, contrast) * loss


class SupConLoss(nn.Module):
    """Module form of :func:`supcon`: stores the hyperparameters, validates them once."""

    def __init__(
        self,
        temperature: Temperature = 0.07,
        *,
        base_temperature: Temperature | None = None,
        contrast_mode: str = "all",
        normalize: bool = True,
        impl: str = "auto",
        tile_size: int | None = None,
        gather: bool = False,
    ):
        super().__init__()
        self.temperature = _validate.temperature(temperature)
        self.base_temperature = (
            None if base_temperature is None else _validate.temperature(base_temperature)
        )
        self.contrast_mode = _validate.choice("contrast_mode", contrast_mode, ("all", "one"))
        self.normalize = _validate.flag("normalize", normalize)
        self.impl, self.tile_size = _validate.fast_options(impl, IMPLS, tile_size, gather)
        self.gather = gather

    def forward(
        self, features: Tensor, labels: Tensor | None = None, queue: Queue | None = None
    ) -> Tensor:
        """Compute the loss; see :func:`supcon`."""
        return supcon(
            features,
            labels,
            self.temperature,
            queue=queue,
            base_temperature=self.base_temperature,
            contrast_mode=self.contrast_mode,
            normalize=self.normalize,
            impl=self.impl,
            tile_size=self.tile_size,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``print(module)``."""
        return (
            f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
            f"contrast_mode={self.contrast_mode!r}, impl={self.impl!r}, gather={self.gather}"
        )
