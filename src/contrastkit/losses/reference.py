r"""Loop oracles: each loss written as a plain-Python loop that reads like its formula.

These are the ground truth the fast versions are tested against, and the teaching text of
``docs/from-formula-to-code.md``. They compute in float64 with one ``for`` per symbol of the
formula (``for i`` over anchors, ``for p`` over positives, ``for a`` over the denominator), and they
are slow: O(N²) Python iterations. Each function takes the same arguments as its fast twin in
:mod:`contrastkit.losses` (without ``impl``) and returns the loss in the same dtype (float32 for
float16/bfloat16/float32 inputs, float64 for float64 inputs), with gradients.

Notation: z unit vectors (unless ``normalize=False``), s_ij = z_i · z_j, τ the temperature,
A(i) = every contrast a ≠ i, P(i) = the positives of anchor i.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.losses import _validate
from contrastkit.losses._common import prepare, zero_loss
from contrastkit.losses._validate import Temperature

__all__ = ["info_nce", "margin_pair", "nt_xent", "supcon"]


def _f64(t: Temperature) -> Tensor | float:
    return t.to(torch.float64) if isinstance(t, Tensor) else t


def _log_sum_exp(terms: list[Tensor]) -> Tensor:
    """Log Σ_k e^{x_k}, shifted by the largest term so that nothing overflows."""
    shift = max(float(x.detach()) for x in terms)
    return shift + torch.log(sum(torch.exp(x - shift) for x in terms))  # type: ignore[arg-type]


def nt_xent(
    z1: Tensor, z2: Tensor, temperature: Temperature = 0.5, *, normalize: bool = True
) -> Tensor:
    r"""NT-Xent of SimCLR (Chen et al. 2020, Algorithm 1), as a loop.

    ℓ_i = −log( e^{s_{i,p(i)}/τ} / Σ_{a≠i} e^{s_{ia}/τ} ),  L = (1/2N) Σ_i ℓ_i,
    over the 2N views z = [z1; z2], where p(i) is the other view of the same sample.
    """
    z1, z2, temperature = _validate.ntxent_args(z1, z2, temperature, normalize)
    out_dtype = _validate.compute_dtype(z1)
    z = prepare(torch.cat([z1, z2]), normalize, torch.float64)  # (2N, D)
    tau = _f64(temperature)
    n2 = z.shape[0]
    losses = []
    for i in range(n2):
        p = (i + n2 // 2) % n2
        log_denominator = _log_sum_exp([z[i] @ z[a] / tau for a in range(n2) if a != i])
        losses.append(-(z[i] @ z[p] / tau - log_denominator))
    return (sum(losses) / n2).to(out_dtype)  # type: ignore[union-attr]


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: Temperature = 0.07,
    *,
    base_temperature: Temperature | None = None,
    contrast_mode: str = "all",
    normalize: bool = True,
    queue: Tensor | tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    r"""Supervised contrastive loss L_out (Khosla et al. 2020, eq. 2), as a loop.

    ℓ_i = −(τ/τ_b) · (1/|P(i)|) Σ_{p∈P(i)} log( e^{s_ip/τ} / Σ_{a∈A(i)} e^{s_ia/τ} ),
    mean over the anchors i with |P(i)| ≥ 1. Contrasts are all N·V views, then the K queue keys
    (which are never anchors, and positives only when labelled with the anchor's label); anchors
    are all the views (``contrast_mode="all"``) or view 0 of each sample (``"one"``).
    """
    features, labels, temperature, base_temperature, contrast_mode = _validate.supcon_args(
        features, labels, temperature, base_temperature, contrast_mode, normalize
    )
    checked_queue = _validate.supcon_queue(queue, features, labels)
    out_dtype = _validate.compute_dtype(features)
    n, v, _ = features.shape
    z = prepare(features, normalize, torch.float64)
    tau = _f64(temperature)
    scale = 1.0 if base_temperature is None else tau / _f64(base_temperature)
    cls = list(range(n)) if labels is None else labels.tolist()
    # contrast k < N·V is (sample k % n, view k // n): view-major, so anchors of mode "one" are
    # k < n; contrast N·V + j is queue key j, of class "none" (matches no anchor) if unlabelled
    vectors = [z[k % n, k // n] for k in range(n * v)]
    classes = [cls[k % n] for k in range(n * v)]
    if checked_queue is not None:
        keys, queue_labels = checked_queue
        vectors += list(prepare(keys.detach(), normalize, torch.float64))
        classes += [None] * len(keys) if queue_labels is None else queue_labels.tolist()
    anchors = range(n) if contrast_mode == "one" else range(n * v)
    losses = []
    for i in anchors:
        others = [c for c in range(len(vectors)) if c != i]
        positives = [c for c in others if classes[c] == classes[i]]
        if not positives:
            continue  # an anchor with no positive is left out of the mean
        zi = vectors[i]
        log_denominator = _log_sum_exp([zi @ vectors[a] / tau for a in others])
        log_probs = [zi @ vectors[p] / tau - log_denominator for p in positives]
        losses.append(-scale * sum(log_probs) / len(positives))
    if not losses:
        return zero_loss(
            features, temperature, reason="no anchor in the batch has a positive", dtype=out_dtype
        )
    return (sum(losses) / len(losses)).to(out_dtype)  # type: ignore[union-attr]


def info_nce(
    query: Tensor,
    positive_key: Tensor,
    negative_keys: Tensor | None = None,
    temperature: Temperature = 0.1,
    *,
    negative_mode: str = "unpaired",
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""InfoNCE (van den Oord et al. 2018) with explicit or in-batch negatives, as a loop.

    ℓ_i = −log( e^{q_i·k_i/τ} / Σ_{k∈K(i)} e^{q_i·k/τ} ), where K(i) is every positive key of
    the batch (no negatives given), or k_i with the shared negatives (M, D), or k_i with the
    sample's own negatives (N, M, D).
    """
    query, positive_key, negative_keys, temperature, negative_mode, reduction = (
        _validate.info_nce_args(
            query, positive_key, negative_keys, temperature, negative_mode, reduction, normalize
        )
    )
    out_dtype = _validate.compute_dtype(query)
    q = prepare(query, normalize, torch.float64)
    k = prepare(positive_key, normalize, torch.float64)
    neg = None if negative_keys is None else prepare(negative_keys, normalize, torch.float64)
    tau = _f64(temperature)
    losses = []
    for i in range(q.shape[0]):
        if neg is None:
            keys = [k[j] for j in range(k.shape[0])]
        elif negative_mode == "unpaired":
            keys = [k[i]] + [neg[m] for m in range(neg.shape[0])]
        else:
            keys = [k[i]] + [neg[i, m] for m in range(neg.shape[1])]
        log_denominator = _log_sum_exp([q[i] @ key / tau for key in keys])
        losses.append(-(q[i] @ k[i] / tau - log_denominator))
    per_query = torch.stack(losses).to(out_dtype)
    if reduction == "none":
        return per_query
    return per_query.sum() if reduction == "sum" else per_query.mean()


def margin_pair(
    x1: Tensor, x2: Tensor, same: Tensor, margin: float = 1.0, *, reduction: str = "mean"
) -> Tensor:
    r"""Margin (hinge) pair loss of Hadsell, Chopra & LeCun 2006 (eq. 4), as a loop.

    d_i = ‖x1_i − x2_i‖₂,  ℓ_i = y_i · ½ d_i² + (1 − y_i) · ½ · max(0, m − d_i)²,
    with y_i = 1 for a similar pair. At d_i = 0 the gradient of the hinge term is taken as 0.
    """
    x1, x2, same, margin, reduction = _validate.margin_args(x1, x2, same, margin, reduction)
    out_dtype = _validate.compute_dtype(x1)
    a, b = x1.to(torch.float64), x2.to(torch.float64)
    losses = []
    for i in range(a.shape[0]):
        squared = sum((a[i, j] - b[i, j]) ** 2 for j in range(a.shape[1]))
        if bool(same[i]):
            losses.append(0.5 * squared)
        elif float(squared.detach()) == 0.0:  # type: ignore[union-attr]
            losses.append(0.5 * margin**2 + 0.0 * squared)  # keep the graph; gradient 0 at d = 0
        else:
            d = torch.sqrt(squared)  # type: ignore[arg-type]
            losses.append(0.5 * torch.clamp(margin - d, min=0.0) ** 2)
    per_pair = torch.stack(losses).to(out_dtype)  # type: ignore[arg-type]
    if reduction == "none":
        return per_pair
    return per_pair.sum() if reduction == "sum" else per_pair.mean()
