r"""The dense rows core every in-batch loss reduces to: anchors against contrasts.

For anchor i (a row of ``anchors``) and contrasts c (rows of ``contrasts``), with l_ic = a_i·c_c/τ:

    r_i = (1/|P(i)|) Σ_{p∈P(i)} l_ip − log Σ_{c∈A(i)} e^{l_ic}

A(i) is every contrast except the anchor itself (``self_index[i]``, or none when −1) and P(i) the
contrasts of A(i) with the anchor's class. NT-Xent, SupCon (both contrast modes) and in-batch
InfoNCE are all −mean of r_i over the anchors that have a positive; a distributed rank computes
r_i for its local anchors against the gathered contrasts of all ranks.

These are the ``"dense"`` entries of :data:`contrastkit.losses._gathered.ROW_IMPLS` (the tiled ones
are in :mod:`contrastkit.losses.tiled`); each takes ``tile_size`` only to share its signature with
its tiled twin, and ignores it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def row_log_probs(
    anchors: Tensor,
    contrasts: Tensor,
    anchor_classes: Tensor,
    contrast_classes: Tensor,
    self_index: Tensor,
    temperature: Tensor | float,
    *,
    tile_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Dense r_i: builds the (A, C) logit matrix.

    Args:
        anchors: Shape: (A, D).
        contrasts: Shape: (C, D), same dtype as ``anchors``.
        anchor_classes: Integer class of each anchor. Shape: (A,).
        contrast_classes: Integer class of each contrast. Shape: (C,).
        self_index: Column of each anchor among the contrasts, −1 if it is not one. Shape: (A,).
        temperature: τ, a float or a 0-dim tensor of the anchors' dtype.
        tile_size: Unused (no tiles in the dense code).

    Returns:
        ``(r, num_positives)``, both of shape (A,); r_i is 0 where anchor i has no positive.
    """
    logits = anchors @ contrasts.T / temperature  # (A, C)
    columns = torch.arange(contrasts.shape[0], device=contrasts.device)  # (C,)
    self_mask = self_index[:, None] == columns[None, :]  # (A, C)
    positive = (anchor_classes[:, None] == contrast_classes[None, :]) & ~self_mask  # (A, C)
    # the log-sum-exp shift (inside torch.logsumexp) ignores the self-similarity: it is -inf
    log_denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)  # (A,)
    num_positives = positive.sum(1)  # (A,)
    mean_positive_logit = (logits * positive).sum(1) / num_positives.clamp(min=1)  # (A,)
    r = torch.where(num_positives > 0, mean_positive_logit - log_denominator, 0.0)
    return r, num_positives


def self_row_log_probs(
    z: Tensor, classes: Tensor, temperature: Tensor | float, *, tile_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Dense r_i with the anchors as the contrasts: :func:`row_log_probs` with ``self_index = arange``.

    Args:
        z: Anchors and contrasts. Shape: (N, D).
        classes: Integer class of each row. Shape: (N,).
        temperature: τ, a float or a 0-dim tensor of ``z``'s dtype.
        tile_size: Unused (no tiles in the dense code).

    Returns:
        ``(r, num_positives)``, both of shape (N,); r_i is 0 where row i has no positive.
    """
    index = torch.arange(z.shape[0], device=z.device)
    return row_log_probs(z, z, classes, classes, index, temperature)


def row_log_sum_exp(
    anchors: Tensor, contrasts: Tensor, temperature: Tensor | float, *, tile_size: int | None = None
) -> Tensor:
    """Dense lse_i = log Σ_c e^{a_i·c_c/τ} over every contrast (no exclusion): the (A, C) matrix.

    Args:
        anchors: Shape: (A, D).
        contrasts: Shape: (C, D), same dtype as ``anchors``.
        temperature: τ, a float or a 0-dim tensor of the anchors' dtype.
        tile_size: Unused (no tiles in the dense code).

    Returns:
        Shape: (A,).
    """
    return torch.logsumexp(anchors @ contrasts.T / temperature, dim=1)
