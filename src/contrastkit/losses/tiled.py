r"""Exact tiled contrastive losses: O((N + M)·D + T²) memory, never the N × M similarity matrix.

Every in-batch loss of this package reduces to (see :mod:`contrastkit.losses._rows`)

    r_i = (1/|P(i)|) Σ_{p∈P(i)} l_ip − log Σ_{c∈A(i)} e^{l_ic},   l_ic = a_i·c_c/τ.

The two terms are computed apart:

* The positive term needs no mask and no matrix: with per-class sums of the contrasts,
  Σ_{p∈P(i)} a_i·c_p = a_i · (Σ_{c: class(c)=class(i)} c_c − c_self(i)), O((N + M)·D), plain
  autograd.
* The log-sum-exp over A(i) is a custom :class:`torch.autograd.Function` that walks the similarity
  matrix tile by tile (T × T tiles, T = ``tile_size``). Its forward keeps one number per row (the
  log-sum-exp); its backward recomputes each tile and turns it into softmax weights, so at most
  two T × T buffers exist at any time.

Two such functions exist:

* :class:`_RectangularLSE`, anchors (A, D) against contrasts (C, D), each anchor excluding at most
  one contrast (itself). Forward: online (running-max) log-sum-exp, safe for any input scale.
  Backward: ``exp(S − L_i)`` through one GEMM with the shift folded in (an extra column), which
  never overflows. This is the contract the distributed loss uses (local anchors vs gathered
  contrasts).
* :class:`_SymmetricLSE`, the anchors-are-contrasts case (NT-Xent, SupCon with
  ``contrast_mode="all"``). The matrix is symmetric, so only tiles (I, J ≥ I) are visited and each
  serves rows I and rows J: half the GEMMs of the rectangular form. One ``exp`` per tile serves
  both because the shift is symmetric: the forward uses the Gaussian-kernel bound
  s_ij − ½|y_i|² − ½|y_j|² = −½|y_i − y_j|² ≤ 0, the backward ½(L_i + L_j) ≥ s_ij; the row and
  column factors that remain are rank-one and applied to vectors, not to the tile. Rows whose
  fixed-shift sum would lose precision (tiny temperature, rows far from every other) are
  recomputed exactly by the rectangular function, and the backward falls back to it when the
  log-sum-exps spread too widely for the shared shift; so the symmetric path is as robust as the
  rectangular one.

Temperature: the functions see y = z/√τ (symmetric) or q = a/τ (rectangular); the division
happens in autograd outside, so dℓ/dτ is exact without a special case.

Device: only tensor operations on the inputs' device (no copy to the host, no NumPy), so the same code
runs on CUDA; a few ``bool(...)`` checks synchronise once per call to pick the robust path.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from contrastkit.losses._validate import Temperature

__all__ = [
    "AUTO_MIN_PAIRS",
    "DEFAULT_TILE_SIZE",
    "auto_is_tiled",
    "row_log_probs_tiled",
    "self_row_log_probs_tiled",
    "tiled_log_sum_exp",
]

#: Tile edge T used when ``tile_size=None``; measured on the 2-core benchmark machine
#: (``benchmarks/tile_size.py``, see ``docs/tiled.md``).
DEFAULT_TILE_SIZE = 1024


#: ``impl="auto"`` uses the tiled losses from this many anchor-contrast pairs on (A·C); below it
#: the dense matrix is faster. Measured with ``benchmarks/losses.py --crossover``.
AUTO_MIN_PAIRS = 1024 * 1024


def auto_is_tiled(anchors: int, contrasts: int) -> bool:
    """Whether ``impl="auto"`` picks the tiled loss for an (anchors × contrasts) logit matrix.

    Args:
        anchors: Number of anchors (rows) A.
        contrasts: Number of contrasts (columns) C.

    Returns:
        True when A·C ≥ :data:`AUTO_MIN_PAIRS`.
    """
    return anchors * contrasts >= AUTO_MIN_PAIRS


def _tile(tile_size: int | None) -> int:
    t = DEFAULT_TILE_SIZE if tile_size is None else int(tile_size)
    if t < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size}")
    return t


_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)

#: Smallest fixed-shift row sum that keeps every lost (underflowed) term negligible: a term below
#: ``finfo.tiny`` is flushed; if the row sum is at least √tiny, each flushed term is at most √tiny
#: of it (≈1e-19 in float32), so even 10⁹ of them change nothing.
_MIN_SUM = {
    dt: math.sqrt(torch.finfo(dt).tiny)
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


def _max_spread(dtype: torch.dtype) -> float:
    """Largest spread of per-row shifts whose exponentials e^{±spread/2} stay far from overflow."""
    return 0.5 * math.log(torch.finfo(dtype).max)  # ≈ 44 in float32, 354 in float64


def _tile_buffer(flat: Tensor, rows: int, cols: int) -> Tensor:
    """A contiguous (rows, cols) view of a preallocated flat buffer (one allocation per call)."""
    return flat[: rows * cols].view(rows, cols)


def _mask_self(s: Tensor, self_index: Tensor, start: int) -> None:
    """Set s[r, self_index[r] − start] = −inf in place where that column lies in this tile.

    Shape: s (R, TJ), self_index (R,) of global contrast columns (−1 for none).
    """
    local = self_index - start  # (R,)
    inside = (local >= 0) & (local < s.shape[1])  # (R,)
    col = local.clamp(0, s.shape[1] - 1)[:, None]  # (R, 1)
    current = s.gather(1, col)  # (R, 1)
    s.scatter_(1, col, torch.where(inside[:, None], float("-inf"), current))


def _rect_forward_online(q2: Tensor, k: Tensor, self_index: Tensor, t: int) -> Tensor:
    """Base-2 row log-sum-exp of q2 @ k.T without the self column, by an online running max.

    Safe for any scale; the fallback of the fixed-shift paths. Shape: q2 (A, D), k (C, D),
    self_index (A,) → (A,), in log2 units.
    """
    a, c = q2.shape[0], k.shape[0]
    out = torch.empty(a, dtype=q2.dtype, device=q2.device)
    flat = q2.new_empty(min(t, a) * min(t, c))
    for i0 in range(0, a, t):
        qi = q2[i0 : i0 + t]  # (TI, D)
        si = self_index[i0 : i0 + t]  # (TI,)
        m = torch.full((qi.shape[0],), float("-inf"), dtype=q2.dtype, device=q2.device)
        total = torch.zeros_like(m)
        for j0 in range(0, c, t):
            kj = k[j0 : j0 + t]
            s = torch.mm(qi, kj.T, out=_tile_buffer(flat, qi.shape[0], kj.shape[0]))  # (TI, TJ)
            _mask_self(s, si, j0)
            m_new = torch.maximum(m, s.amax(1))  # (TI,)
            shift = torch.where(torch.isfinite(m_new), m_new, 0.0)  # a fully masked row: 0
            total.mul_(torch.exp2(m - shift)).add_(s.sub_(shift[:, None]).exp2_().sum(1))
            m = m_new
        out[i0 : i0 + t] = torch.where(torch.isfinite(m), m, 0.0) + total.log2()
    return out


def _rect_forward(q2: Tensor, k: Tensor, self_index: Tensor, t: int) -> Tensor:
    """Base-2 row log-sum-exp of q2 @ k.T without the self column.

    Shift: the Cauchy-Schwarz bound b_i = |q2_i|·max_c |k_c| ≥ every logit of row i, folded into
    the GEMM as an extra column, so a tile costs one GEMM, one ``exp2`` and one row sum, and never
    overflows. Rows whose shifted sum is too small to be exact (the bound far above the row's
    largest logit: tiny τ, unequal norms) are redone by the online running max.
    Shape: q2 (A, D), k (C, D), self_index (A,) → (A,), in log2 units.
    """
    a, c = q2.shape[0], k.shape[0]
    bound = q2.norm(dim=1) * k.norm(dim=1).max()  # (A,)
    qa = torch.cat([q2, -bound[:, None]], dim=1)  # (A, D + 1)
    ka = torch.cat([k, torch.ones_like(k[:, :1])], dim=1)  # (C, D + 1)
    rows = torch.zeros_like(bound)
    flat = q2.new_empty(min(t, a) * min(t, c))
    for i0 in range(0, a, t):
        si = self_index[i0 : i0 + t]
        acc = rows[i0 : i0 + t]
        for j0 in range(0, c, t):
            e = _tile_buffer(flat, min(t, a - i0), min(t, c - j0))
            torch.mm(qa[i0 : i0 + t], ka[j0 : j0 + t].T, out=e)  # (TI, TJ) = s − b_i ≤ 0
            _mask_self(e, si, j0)
            acc.add_(e.exp2_().sum(1))
    lse2 = bound + rows.log2()
    poor = ~(rows >= _MIN_SUM[q2.dtype])  # also catches 0 (every term flushed) and NaN
    if bool(poor.any()):
        index = torch.arange(a, device=q2.device)[poor]
        lse2[index] = _rect_forward_online(q2[index], k, self_index[index], t)
    return lse2


def _rect_backward(
    q2: Tensor, k: Tensor, self_index: Tensor, lse2: Tensor, grad: Tensor, t: int
) -> tuple[Tensor, Tensor]:
    """Gradients of Σ_i g_i lse_i with respect to q = q2·ln 2 and k, recomputing each tile.

    P_ic = 2^(q2_i·k_c − lse2_i) comes from one GEMM with the shift as an extra column, so it
    never overflows; g_i scales the (TI, D) results, not the tile.
    Shape: q2 (A, D), k (C, D) → (A, D), (C, D).
    """
    finite = torch.where(torch.isfinite(lse2), lse2, 0.0)  # rows with no contrast: no terms
    qa = torch.cat([q2, -finite[:, None]], dim=1)  # (A, D + 1): q2_i·k_c − lse2_i in one GEMM
    ka = torch.cat([k, torch.ones_like(k[:, :1])], dim=1)  # (C, D + 1)
    gq = q2 * (grad * _LN2)[:, None]  # (A, D) = g_i q_i
    dq = torch.zeros_like(q2)
    dk = torch.zeros_like(k)
    a, c = q2.shape[0], k.shape[0]
    flat = q2.new_empty(min(t, a) * min(t, c))
    for i0 in range(0, a, t):
        si = self_index[i0 : i0 + t]
        acc = dq[i0 : i0 + t]  # (TI, D), a view
        for j0 in range(0, c, t):
            p = _tile_buffer(flat, min(t, a - i0), min(t, c - j0))
            torch.mm(qa[i0 : i0 + t], ka[j0 : j0 + t].T, out=p)  # (TI, TJ) = log2 P ≤ 0
            _mask_self(p, si, j0)
            p.exp2_()
            acc.addmm_(p, k[j0 : j0 + t])
            dk[j0 : j0 + t].addmm_(p.T, gq[i0 : i0 + t])
        acc.mul_(grad[i0 : i0 + t, None])
    return dq, dk


class _RectangularLSE(torch.autograd.Function):
    """lse_i = log Σ_{c ≠ self(i)} exp(q_i · k_c); tiled forward and recomputing backward."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, self_index: Tensor, t: int) -> Tensor:
        with torch.no_grad():
            q2 = q * _LOG2E  # base-2 logits: exp2 is ~3x cheaper than exp on CPU
            lse2 = _rect_forward(q2, k, self_index, t)
        ctx.save_for_backward(q2, k, self_index, lse2)
        ctx.t = t
        return lse2 * _LN2

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        q2, k, self_index, lse2 = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None, None
        dq, dk = _rect_backward(q2, k, self_index, lse2, grad.contiguous(), ctx.t)
        return dq, dk, None, None


def _sym_forward(y2: Tensor, t: int) -> tuple[Tensor, Tensor]:
    """Base-2 row log-sum-exp of y2 @ y2.T without the diagonal, over the upper triangle of tiles.

    Shift: 2^{s_ij} = 2^{c_i + c_j} E_ij with c = ½|y2|² and E_ij = 2^{−½|y2_i − y2_j|²} ≤ 1, so a
    tile needs one ``exp2`` for its rows and its columns, and the shift is folded into the GEMM.
    Shape: y2 (N, D) → (lse2 (N,), shifted row sums (N,)).
    """
    n = y2.shape[0]
    c = 0.5 * (y2 * y2).sum(1)  # (N,)
    kappa = c.max()
    w = torch.exp2(c - kappa)  # (N,) ≤ 1; all 1 for unit rows (normalize=True)
    ones = torch.ones_like(c[:, None])
    ya = torch.cat([y2, -c[:, None], ones], dim=1)  # (N, D + 2)
    yb = torch.cat([y2, ones, -c[:, None]], dim=1)  # (N, D + 2): ya_i·yb_j = s_ij − c_i − c_j
    rows = torch.zeros_like(c)
    flat = y2.new_empty(min(t, n) ** 2)
    for i0 in range(0, n, t):
        for j0 in range(i0, n, t):
            e = _tile_buffer(flat, min(t, n - i0), min(t, n - j0))
            torch.mm(ya[i0 : i0 + t], yb[j0 : j0 + t].T, out=e)  # (TI, TJ)
            e.exp2_()
            if i0 == j0:
                e.fill_diagonal_(0.0)  # A(i) excludes i itself
                rows[i0 : i0 + t].addmv_(e, w[j0 : j0 + t])
            else:
                rows[i0 : i0 + t].addmv_(e, w[j0 : j0 + t])
                rows[j0 : j0 + t].addmv_(e.T, w[i0 : i0 + t])
    return c + kappa + rows.log2(), rows


def _sym_backward(y: Tensor, lse: Tensor, grad: Tensor, t: int) -> Tensor:
    """Gradient of Σ_i g_i lse_i with respect to y, over the upper triangle of tiles.

    With P_ij = e^{s_ij − L_i}, d/dy_I = Σ_J H_IJ y_J where H_ij = g_i P_ij + g_j P_ji
    = E_ij (u_i v_j + v_i u_j), E_ij = e^{s_ij − ½(L_i + L_j)} ≤ 1, u = g e^{λ − L/2},
    v = e^{L/2 − λ}. One GEMM recomputes E (shift folded in, base 2), one ``exp2``, a rank-2
    scaling of the tile, and the tile feeds rows I (H y_J) and rows J (Hᵀ y_I).
    Shape: y (N, D) → (N, D).
    """
    n = y.shape[0]
    half = 0.5 * lse  # (N,), finite here (the caller checked the spread)
    lam = 0.5 * (half.max() + half.min())
    u = grad * torch.exp(lam - half)  # (N,)
    v = torch.exp(half - lam)  # (N,)
    y2 = y * math.sqrt(_LOG2E)  # y2_i·y2_j = s_ij·log2(e)
    half2 = (half * _LOG2E)[:, None]  # (N, 1)
    ones = torch.ones_like(half2)
    ya = torch.cat([y2, -half2, ones], dim=1)  # (N, D + 2)
    yb = torch.cat([y2, ones, -half2], dim=1)  # (N, D + 2)
    dy = torch.zeros_like(y)
    flat_e, flat_w = y.new_empty(min(t, n) ** 2), y.new_empty(min(t, n) ** 2)
    for i0 in range(0, n, t):
        for j0 in range(i0, n, t):
            ti, tj = min(t, n - i0), min(t, n - j0)
            e = _tile_buffer(flat_e, ti, tj)
            torch.mm(ya[i0 : i0 + t], yb[j0 : j0 + t].T, out=e)  # log2 of E_IJ
            e.exp2_()
            if i0 == j0:
                e.fill_diagonal_(0.0)
            w = _tile_buffer(flat_w, ti, tj)
            torch.mul(u[i0 : i0 + t, None], v[None, j0 : j0 + t], out=w)
            w.addr_(v[i0 : i0 + t], u[j0 : j0 + t])  # u_i v_j + v_i u_j
            e.mul_(w)  # H_IJ
            dy[i0 : i0 + t].addmm_(e, y[j0 : j0 + t])
            if i0 != j0:
                dy[j0 : j0 + t].addmm_(e.T, y[i0 : i0 + t])
    return dy


class _SymmetricLSE(torch.autograd.Function):
    """lse_i = log Σ_{j ≠ i} exp(y_i · y_j) over the upper triangle of tiles."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, t: int) -> Tensor:
        with torch.no_grad():
            lse = _sym_lse_robust(y, t)
        ctx.save_for_backward(y, lse)
        ctx.t = t
        return lse

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        y, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        grad = grad.contiguous()
        finite = torch.isfinite(lse)
        spread = lse.masked_fill(~finite, 0).amax() - lse.masked_fill(~finite, 0).amin()
        if bool(finite.all()) and float(spread) <= _max_spread(y.dtype):
            return _sym_backward(y, lse, grad, ctx.t), None
        # the shared shift ½(L_i + L_j) would under/overflow: exact per-row shifts instead
        index = torch.arange(y.shape[0], device=y.device)
        dq, dk = _rect_backward(y * _LOG2E, y, index, lse * _LOG2E, grad, ctx.t)
        return dq + dk, None


def _sym_lse_robust(y: Tensor, t: int) -> Tensor:
    """Symmetric forward (natural log), rows whose fixed-shift sum lost precision redone exactly."""
    n = y.shape[0]
    index = torch.arange(n, device=y.device)
    y2 = y * math.sqrt(_LOG2E)
    c = 0.5 * (y2 * y2).sum(1)
    if n < 2 or float(c.max() - c.min()) > _max_spread(y.dtype):
        # norms too unequal for one shared shift: per-row shifts
        return _rect_forward(y * _LOG2E, y, index, t) * _LN2
    lse2, rows = _sym_forward(y2, t)
    poor = ~(rows >= _MIN_SUM[y.dtype])  # also catches 0 (every term flushed) and NaN
    if bool(poor.any()):
        bad = index[poor]
        lse2[bad] = _rect_forward_online(y[bad] * _LOG2E, y, bad, t)
    return lse2 * _LN2


def tiled_log_sum_exp(
    anchors: Tensor,
    contrasts: Tensor | None,
    self_index: Tensor | None,
    temperature: Temperature,
    *,
    tile_size: int | None = None,
) -> Tensor:
    r"""Row log-sum-exp of the logits, excluding each anchor's own column, without the matrix.

    .. math:: \mathrm{lse}_i = \log \sum_{c \ne \mathrm{self}(i)} e^{a_i \cdot c_c / τ}

    Args:
        anchors: Shape: (A, D).
        contrasts: Shape: (C, D); ``None`` means the anchors themselves (symmetric fast path,
            ``self_index`` must then be None: each anchor excludes itself).
        self_index: Column of each anchor among the contrasts, −1 if none; None for no exclusion
            (or, with ``contrasts=None``, the diagonal). Shape: (A,).
        temperature: τ, a float or a 0-dim tensor (gets an exact gradient).
        tile_size: Tile edge T (default :data:`DEFAULT_TILE_SIZE`); memory O(T²) beyond inputs.

    Returns:
        lse of shape (A,), differentiable with respect to the embeddings and ``temperature``.
    """
    t = _tile(tile_size)
    if contrasts is None:
        y = anchors / (
            temperature.sqrt() if isinstance(temperature, Tensor) else math.sqrt(temperature)
        )
        return _SymmetricLSE.apply(y, t)
    if self_index is None:
        self_index = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    return _RectangularLSE.apply(anchors / temperature, contrasts, self_index.long(), t)


def _positive_logit_sums(
    anchors: Tensor,
    contrasts: Tensor,
    anchor_classes: Tensor,
    contrast_classes: Tensor,
    self_index: Tensor,
) -> tuple[Tensor, Tensor]:
    """Σ_{p∈P(i)} a_i·c_p and |P(i)| from per-class sums: O((A + C)·D), no mask.

    Shape: anchors (A, D), contrasts (C, D) → both (A,).
    """
    a = anchors.shape[0]
    classes, inverse = torch.unique(
        torch.cat([anchor_classes, contrast_classes]), return_inverse=True
    )
    anchor_cls, contrast_cls = inverse[:a], inverse[a:]  # dense class ids in [0, K)
    k = classes.shape[0]
    sums = torch.zeros(k, contrasts.shape[1], dtype=contrasts.dtype, device=contrasts.device)
    sums = sums.index_add(0, contrast_cls, contrasts)  # (K, D) Σ of each class's contrasts
    counts = torch.bincount(contrast_cls, minlength=k)  # (K,)
    # the anchor itself is not its own positive: remove it where it is a contrast of its class
    has_self = self_index >= 0  # (A,)
    self_col = self_index.clamp(min=0)  # (A,)
    self_same = has_self & (contrast_cls[self_col] == anchor_cls)  # (A,)
    positives = sums[anchor_cls] - contrasts[self_col] * self_same[:, None].to(contrasts.dtype)
    num_positives = counts[anchor_cls] - self_same.long()  # (A,)
    return (anchors * positives).sum(1), num_positives


def row_log_probs_tiled(
    anchors: Tensor,
    contrasts: Tensor,
    anchor_classes: Tensor,
    contrast_classes: Tensor,
    self_index: Tensor,
    temperature: Temperature,
    *,
    tile_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Tiled r_i of :func:`contrastkit.losses._rows.row_log_probs`: same arguments and results.

    Memory O((A + C)·D + T²): no (A, C) tensor is ever built, in forward or backward.

    Args:
        anchors: Shape: (A, D).
        contrasts: Shape: (C, D), same dtype as ``anchors``.
        anchor_classes: Integer class of each anchor. Shape: (A,).
        contrast_classes: Integer class of each contrast. Shape: (C,).
        self_index: Column of each anchor among the contrasts, −1 if it is not one. Shape: (A,).
        temperature: τ, a float or a 0-dim tensor of the anchors' dtype.
        tile_size: Tile edge T; default :data:`DEFAULT_TILE_SIZE`.

    Returns:
        ``(r, num_positives)``, both of shape (A,); r_i is 0 where anchor i has no positive.
    """
    self_index = self_index.long()
    positive_sum, num_positives = _positive_logit_sums(
        anchors, contrasts, anchor_classes, contrast_classes, self_index
    )
    lse = tiled_log_sum_exp(anchors, contrasts, self_index, temperature, tile_size=tile_size)
    mean_positive = positive_sum / temperature / num_positives.clamp(min=1)
    r = torch.where(num_positives > 0, mean_positive - lse, 0.0)
    return r, num_positives


def self_row_log_probs_tiled(
    z: Tensor, classes: Tensor, temperature: Temperature, *, tile_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """r_i with the anchors as the contrasts (``self_index = arange``), the symmetric fast path.

    Equal to ``row_log_probs_tiled(z, z, classes, classes, arange(N), τ)`` with half the GEMMs.

    Args:
        z: Anchors and contrasts. Shape: (N, D).
        classes: Integer class of each row. Shape: (N,).
        temperature: τ, a float or a 0-dim tensor of ``z``'s dtype.
        tile_size: Tile edge T; default :data:`DEFAULT_TILE_SIZE`.

    Returns:
        ``(r, num_positives)``, both of shape (N,); r_i is 0 where row i has no positive.
    """
    index = torch.arange(z.shape[0], device=z.device)
    positive_sum, num_positives = _positive_logit_sums(z, z, classes, classes, index)
    lse = tiled_log_sum_exp(z, None, None, temperature, tile_size=tile_size)
    mean_positive = positive_sum / temperature / num_positives.clamp(min=1)
    r = torch.where(num_positives > 0, mean_positive - lse, 0.0)
    return r, num_positives
