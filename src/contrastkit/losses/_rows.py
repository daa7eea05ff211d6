r"""The rectangular core every in-batch loss reduces to: anchors against contrasts.

For anchor i (a row of ``anchors``) and contrasts c (rows of ``contrasts``), with l_ic = a_i·c_c/τ:

    r_i = (1/|P(i)|) Σ_{p∈P(i)} l_ip − log Σ_{c∈A(i)} e^{l_ic}

A(i) is every contrast except the anchor itself (``self_index[i]``, or none when −1) and P(i) the
contrasts of A(i) with the anchor's class. NT-Xent, SupCon (both contrast modes) and in-batch
InfoNCE are all −mean of r_i over the anchors that have a positive; a distributed rank computes
r_i for its local anchors against the gathered contrasts of all ranks.
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
) -> tuple[Tensor, Tensor]:
    """Dense r_i: builds the (A, C) logit matrix.

    Args:
        anchors: Shape: (A, D).
        contrasts: Shape: (C, D), same dtype as ``anchors``.
        anchor_classes: Integer class of each anchor. Shape: (A,).
        contrast_classes: Integer class of each contrast. Shape: (C,).
        self_index: Column of each anchor among the contrasts, −1 if it is not one. Shape: (A,).
        temperature: τ, a float or a 0-dim tensor of the anchors' dtype.

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
