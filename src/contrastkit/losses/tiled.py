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

Two such functions exist, both in base 2 (logits scaled by log₂e so every tile uses ``exp2``,
about 3× cheaper than ``exp`` on the benchmark CPU), both with the per-row shift folded into the
GEMM as an extra column (so a shifted tile costs no extra pass):

* :class:`_RectangularLSE`, anchors (A, D) against contrasts (C, D), each anchor excluding at most
  one contrast (itself). Forward shift: the Cauchy-Schwarz bound |a_i|·max|c|/τ ≥ every logit of
  the row. Backward shift: lse_i itself, so the GEMM yields log₂ P ≤ 0. This is the contract the
  distributed loss uses (local anchors against the gathered contrasts of every rank).
* :class:`_SymmetricLSE`, the anchors-are-contrasts case (NT-Xent, SupCon with
  ``contrast_mode="all"``). The matrix is symmetric, so only tiles (I, J ≥ I) are visited and each
  serves rows I and rows J: half the GEMMs of the rectangular form. One ``exp2`` per tile serves
  both because the shift is symmetric: the forward uses the Gaussian-kernel bound
  s_ij − ½|y_i|² − ½|y_j|² = −½|y_i − y_j|² ≤ 0, the backward ½(L_i + L_j) ≥ s_ij; what remains
  is a rank-one factor on vectors (forward) and a rank-two scaling of the tile (backward).

Robustness: a fixed shift can underflow (tiny τ, rows far from every other; HobbitLong #100).
Every row whose shifted sum is below √tiny is redone exactly by an online running-max
log-sum-exp; the symmetric forward goes rectangular when the row norms are too unequal for one
shared shift, and the symmetric backward when the log-sum-exps spread too widely.

Temperature: τ is an input of both Functions; the loss depends on τ only through a/τ (or z/√τ),
so dℓ/dτ = −(p/τ) Σ x·dℓ/dx is exact and O(N·D).

Device: only tensor operations on the inputs' device (no copy to the host, no NumPy), so the same
code runs on CUDA; a few ``bool(...)``/``int(...)`` checks synchronise to pick the robust path.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from contrastkit.losses import _validate
from contrastkit.losses._validate import Temperature

__all__ = [
    "AUTO_MIN_PAIRS",
    "DEFAULT_TILE_SIZE",
    "auto_is_tiled",
    "positive_log_prob",
    "row_log_probs_tiled",
    "row_log_sum_exp_tiled",
    "self_row_log_probs_tiled",
    "tiled_log_sum_exp",
]

#: Tile edge T used when ``tile_size=None``; measurement: ``benchmarks/README.md``, "Other modes".
DEFAULT_TILE_SIZE = 768


#: ``impl="auto"`` uses the tiled loss from this many anchor-contrast pairs (A·C) on, the dense
#: matrix below; measurement: ``benchmarks/README.md``, "Other modes".
AUTO_MIN_PAIRS = {"symmetric": 384 * 384, "rectangular": 768 * 768}


def auto_is_tiled(anchors: int, contrasts: int, *, symmetric: bool) -> bool:
    """Whether ``impl="auto"`` picks the tiled loss for an (anchors × contrasts) logit matrix.

    Args:
        anchors: Number of anchors (rows) A.
        contrasts: Number of contrasts (columns) C.
        symmetric: The anchors are the contrasts (NT-Xent, SupCon ``contrast_mode="all"``).

    Returns:
        True when A·C reaches the measured crossover :data:`AUTO_MIN_PAIRS`.
    """
    return anchors * contrasts >= AUTO_MIN_PAIRS["symmetric" if symmetric else "rectangular"]


def _tile(tile_size: int | None) -> int:
    t = _validate.tile_size(tile_size)
    return DEFAULT_TILE_SIZE if t is None else t


_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)

#: Smallest fixed-shift row sum that keeps every lost (underflowed) term negligible: a term below
#: ``finfo.tiny`` is flushed; if the row sum is at least √tiny, each flushed term is at most √tiny
#: of it (≈1e-19 in float32), so even 10⁹ of them change nothing.
_MIN_SUM = {
    dt: math.sqrt(torch.finfo(dt).tiny)
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


def _inexact(rows: Tensor) -> Tensor:
    """Rows whose fixed-shift sum cannot be trusted, to be redone by the online running max.

    Too small (≤ √tiny: terms were flushed, also 0 and NaN) or infinite: a term that is ≤ 1 in
    exact arithmetic overflowed because its exponent carries the rounding of the logits,
    ε·|logit| (float32, unnormalised rows, |logit| ≳ 1e9).
    """
    return ~((rows >= _MIN_SUM[rows.dtype]) & (rows < math.inf))


def _max_spread(dtype: torch.dtype) -> float:
    """Largest spread of per-row shifts whose exponentials e^{±spread/2} stay far from overflow."""
    return 0.5 * math.log(torch.finfo(dtype).max)  # ≈ 44 in float32, 354 in float64


def _tile_buffer(flat: Tensor, rows: int, cols: int) -> Tensor:
    """A contiguous (rows, cols) view of a preallocated flat buffer (one allocation per call)."""
    return flat[: rows * cols].view(rows, cols)


def _self_columns(self_index: Tensor) -> tuple[int, int]:
    """Smallest and largest self column of a row block, (0, −1) if none (one sync per block)."""
    valid = self_index[self_index >= 0]
    if valid.numel() == 0:
        return 0, -1
    return int(valid.min()), int(valid.max())


def _mask_self(s: Tensor, self_index: Tensor, start: int, span: tuple[int, int]) -> None:
    """Set s[r, self_index[r] − start] = −inf in place where that column lies in this tile.

    ``span`` is :func:`_self_columns` of the row block: tiles it misses are left untouched.
    Shape: s (R, TJ), self_index (R,) of global contrast columns (−1 for none).
    """
    if span[1] < start or span[0] >= start + s.shape[1]:
        return
    local = self_index - start  # (R,)
    inside = (local >= 0) & (local < s.shape[1])  # (R,)
    col = local.clamp(0, s.shape[1] - 1)[:, None]  # (R, 1)
    current = s.gather(1, col)  # (R, 1)
    s.scatter_(1, col, torch.where(inside[:, None], float("-inf"), current))


def _augment(x: Tensor, scale: float, *columns: Tensor | float) -> Tensor:
    """[scale·x | columns...] in one allocation, shape (R, D + len(columns)).

    The GEMM operand that carries a per-row shift: a column of shifts against a column of ones.
    """
    out = x.new_empty(x.shape[0], x.shape[1] + len(columns))
    torch.mul(x, scale, out=out[:, : x.shape[1]])
    for i, column in enumerate(columns):
        out[:, x.shape[1] + i] = column
    return out


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
        span = _self_columns(si)
        m = torch.full((qi.shape[0],), float("-inf"), dtype=q2.dtype, device=q2.device)
        total = torch.zeros_like(m)
        for j0 in range(0, c, t):
            kj = k[j0 : j0 + t]
            s = torch.mm(qi, kj.T, out=_tile_buffer(flat, qi.shape[0], kj.shape[0]))  # (TI, TJ)
            _mask_self(s, si, j0, span)
            m_new = torch.maximum(m, s.amax(1))  # (TI,)
            shift = torch.where(torch.isfinite(m_new), m_new, 0.0)  # a fully masked row: 0
            total.mul_(torch.exp2(m - shift)).add_(s.sub_(shift[:, None]).exp2_().sum(1))
            m = m_new
        out[i0 : i0 + t] = torch.where(torch.isfinite(m), m, 0.0) + total.log2()
    return out


def _rect_forward(a: Tensor, k: Tensor, scale2: float, self_index: Tensor, t: int) -> Tensor:
    """Base-2 row log-sum-exp of the logits scale2·a @ k.T without the self column.

    Shift: the Cauchy-Schwarz bound b_i = scale2·|a_i|·max_c |k_c| ≥ every logit of row i, folded
    into the GEMM as an extra column, so a tile costs one GEMM, one ``exp2`` and one row sum, and
    never overflows. Rows whose shifted sum is too small to be exact (the bound far above the
    row's largest logit: tiny τ, unequal norms) are redone by the online running max.
    Shape: a (A, D), k (C, D), self_index (A,) → (A,), in log2 units.
    """
    n_a, n_c = a.shape[0], k.shape[0]
    bound = torch.linalg.vector_norm(a, dim=1) * (scale2 * torch.linalg.vector_norm(k, dim=1).max())
    qa = _augment(a, scale2, -bound)  # (A, D + 1)
    ka = _augment(k, 1.0, 1.0)  # (C, D + 1): qa_i·ka_c = logit2_ic − b_i ≤ 0
    rows = torch.zeros_like(bound)
    flat = a.new_empty(min(t, n_a) * min(t, n_c))
    for i0 in range(0, n_a, t):
        si = self_index[i0 : i0 + t]
        span = _self_columns(si)
        acc = rows[i0 : i0 + t]
        for j0 in range(0, n_c, t):
            e = _tile_buffer(flat, min(t, n_a - i0), min(t, n_c - j0))
            torch.mm(qa[i0 : i0 + t], ka[j0 : j0 + t].T, out=e)  # (TI, TJ)
            _mask_self(e, si, j0, span)
            acc.add_(e.exp2_().sum(1))
    lse2 = bound + rows.log2()
    poor = _inexact(rows)
    if bool(poor.any()):
        index = torch.arange(n_a, device=a.device)[poor]
        lse2[index] = _rect_forward_online(a[index] * scale2, k, self_index[index], t)
    return lse2


def _rect_backward(
    a: Tensor,
    k: Tensor,
    scale2: float,
    self_index: Tensor,
    lse2: Tensor,
    grad: Tensor,
    t: int,
    need_k: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Gradients of Σ_i g_i lse_i with respect to a and k, recomputing each tile.

    P_ic = 2^(logit2_ic − lse2_i) comes from one GEMM with the shift as an extra column; g_i/τ
    scales the (TI, D) results, not the tile. The exponent is ≤ 0 exactly, but the recomputed
    logit carries a rounding of ε·|logit| that the forward's lse2 does not share: clamped at 0,
    P stays ≤ 1 as in the dense softmax (unclamped, float32 logits of 1e9 gave P = 2^100, inf).
    Shape: a (A, D), k (C, D) → (A, D), (C, D).
    """
    n_a, n_c = a.shape[0], k.shape[0]
    finite = torch.where(torch.isfinite(lse2), lse2, 0.0)  # rows with no contrast: no terms
    qa = _augment(a, scale2, -finite)  # (A, D + 1): logit2_ic − lse2_i in one GEMM
    ka = _augment(k, 1.0, 1.0)  # (C, D + 1)
    row_scale = grad * (scale2 * _LN2)  # (A,) g_i/τ
    ga = a * row_scale[:, None] if need_k else a  # (A, D)
    da = torch.zeros_like(a)
    dk = torch.zeros_like(k) if need_k else None
    flat = a.new_empty(min(t, n_a) * min(t, n_c))
    for i0 in range(0, n_a, t):
        si = self_index[i0 : i0 + t]
        span = _self_columns(si)
        acc = da[i0 : i0 + t]  # (TI, D), a view
        for j0 in range(0, n_c, t):
            p = _tile_buffer(flat, min(t, n_a - i0), min(t, n_c - j0))
            torch.mm(qa[i0 : i0 + t], ka[j0 : j0 + t].T, out=p)  # (TI, TJ) = log2 P ≤ 0
            _mask_self(p, si, j0, span)
            p.clamp_(max=0.0).exp2_()  # P ≤ 1 exactly: clamp the rounding (see docstring)
            acc.addmm_(p, k[j0 : j0 + t])
            if dk is not None:
                dk[j0 : j0 + t].addmm_(p.T, ga[i0 : i0 + t])
        acc.mul_(row_scale[i0 : i0 + t, None])
    return da, dk


def _scale2(temperature: Tensor | float) -> float:
    """log2(e)/τ: the factor that turns a·c into a base-2 logit (one sync for a tensor τ)."""
    return _LOG2E / float(temperature)


def _temperature_grad(
    temperature: Tensor | float, needed: bool, dot: Tensor, power: float
) -> Tensor | None:
    """dℓ/dτ from the embedding gradient: the loss depends on τ only through x/τ^power.

    With x' = x/τ^p, dℓ/dτ = −(p/τ) Σ x·dℓ/dx, where ``dot`` = Σ x·dℓ/dx (0-dim).
    """
    if not needed or not isinstance(temperature, Tensor):
        return None
    return (-power / temperature.detach() * dot).to(temperature.dtype)


class _RectangularLSE(torch.autograd.Function):
    """lse_i = log Σ_{c ≠ self(i)} exp(a_i·k_c/τ); tiled forward and recomputing backward."""

    @staticmethod
    def forward(
        ctx: Any, a: Tensor, k: Tensor, temperature: Tensor | float, self_index: Tensor, t: int
    ) -> Tensor:
        scale2 = _scale2(temperature)
        with torch.no_grad():
            lse2 = _rect_forward(a, k, scale2, self_index, t)
        ctx.save_for_backward(a, k, self_index, lse2)
        ctx.temperature, ctx.scale2, ctx.t = temperature, scale2, t
        return lse2 * _LN2

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        a, k, self_index, lse2 = ctx.saved_tensors
        need_a, need_k, need_t = ctx.needs_input_grad[:3]
        if not (need_a or need_k or need_t):
            return None, None, None, None, None
        da, dk = _rect_backward(
            a, k, ctx.scale2, self_index, lse2, grad.contiguous(), ctx.t, need_k=need_k
        )
        dt = _temperature_grad(ctx.temperature, need_t, (a * da).sum(), 1.0)
        return (da if need_a else None), dk, dt, None, None


def _sym_forward(z: Tensor, scale2: float, t: int) -> tuple[Tensor, Tensor]:
    """Base-2 row log-sum-exp of the logits scale2·z @ z.T without the diagonal, upper triangle.

    With y = √scale2·z and c = ½|y|², 2^{y_i·y_j} = 2^{c_i + c_j} E_ij where E_ij =
    2^{−½|y_i − y_j|²} ≤ 1: a tile needs one ``exp2`` for its rows and its columns, and the shift
    is folded into the GEMM. Shape: z (N, D) → (lse2 (N,), shifted row sums (N,)).
    """
    n = z.shape[0]
    root = math.sqrt(scale2)
    c = (0.5 * scale2) * torch.linalg.vector_norm(z, dim=1).square()  # (N,)
    kappa = c.max()
    w = torch.exp2(c - kappa)  # (N,) ≤ 1; all 1 for unit rows (normalize=True)
    ya = _augment(z, root, -c, 1.0)  # (N, D + 2)
    yb = _augment(z, root, 1.0, -c)  # (N, D + 2): ya_i·yb_j = y_i·y_j − c_i − c_j
    rows = torch.zeros_like(c)
    flat = z.new_empty(min(t, n) ** 2)
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


def _sym_backward(z: Tensor, scale2: float, lse: Tensor, grad: Tensor, t: int) -> Tensor:
    """Gradient of Σ_i g_i lse_i with respect to z, over the upper triangle of tiles.

    With P_ij = e^{s_ij − L_i}, dℓ/dz_I = (1/τ) Σ_J H_IJ z_J where H_ij = g_i P_ij + g_j P_ji
    = E_ij (u_i v_j + v_i u_j), E_ij = e^{s_ij − ½(L_i + L_j)} ≤ 1, u = g e^{λ − L/2},
    v = e^{L/2 − λ}. One GEMM recomputes E (shift folded in, base 2), one ``exp2``, a rank-2
    scaling of the tile, and the tile feeds rows I (H z_J) and rows J (Hᵀ z_I).
    Shape: z (N, D) → (N, D).
    """
    n = z.shape[0]
    half = 0.5 * lse  # (N,), finite here (the caller checked the spread)
    lam = 0.5 * (half.max() + half.min())
    u = grad * torch.exp(lam - half) * (scale2 * _LN2)  # (N,), with the 1/τ of dℓ/dz
    v = torch.exp(half - lam)  # (N,)
    half2 = half * _LOG2E
    root = math.sqrt(scale2)
    ya = _augment(z, root, -half2, 1.0)  # (N, D + 2)
    yb = _augment(z, root, 1.0, -half2)  # (N, D + 2): ya_i·yb_j = log2 E_ij
    dz = torch.zeros_like(z)
    flat_e, flat_w = z.new_empty(min(t, n) ** 2), z.new_empty(min(t, n) ** 2)
    for i0 in range(0, n, t):
        for j0 in range(i0, n, t):
            ti, tj = min(t, n - i0), min(t, n - j0)
            e = _tile_buffer(flat_e, ti, tj)
            torch.mm(ya[i0 : i0 + t], yb[j0 : j0 + t].T, out=e)
            e.clamp_(max=0.0).exp2_()  # E ≤ 1 exactly: clamp the rounding (see _rect_backward)
            if i0 == j0:
                e.fill_diagonal_(0.0)
            w = _tile_buffer(flat_w, ti, tj)
            w.addr_(u[i0 : i0 + t], v[j0 : j0 + t], beta=0)  # beta=0: old content ignored
            w.addr_(v[i0 : i0 + t], u[j0 : j0 + t])  # u_i v_j + v_i u_j
            e.mul_(w)  # H_IJ / τ
            dz[i0 : i0 + t].addmm_(e, z[j0 : j0 + t])
            if i0 != j0:
                dz[j0 : j0 + t].addmm_(e.T, z[i0 : i0 + t])
    return dz


class _SymmetricLSE(torch.autograd.Function):
    """lse_i = log Σ_{j ≠ i} exp(z_i·z_j/τ) over the upper triangle of tiles."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, temperature: Tensor | float, t: int) -> Tensor:
        scale2 = _scale2(temperature)
        with torch.no_grad():
            lse = _sym_lse_robust(z, scale2, t)
        ctx.save_for_backward(z, lse)
        ctx.temperature, ctx.scale2, ctx.t = temperature, scale2, t
        return lse

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        z, lse = ctx.saved_tensors
        need_z, need_t = ctx.needs_input_grad[:2]
        if not (need_z or need_t):
            return None, None, None
        grad = grad.contiguous()
        finite = torch.isfinite(lse)
        spread = lse.masked_fill(~finite, 0).amax() - lse.masked_fill(~finite, 0).amin()
        if bool(finite.all()) and float(spread) <= _max_spread(z.dtype):
            dz = _sym_backward(z, ctx.scale2, lse, grad, ctx.t)
        else:  # the shared shift ½(L_i + L_j) would under/overflow: exact per-row shifts
            index = torch.arange(z.shape[0], device=z.device)
            da, dk = _rect_backward(z, z, ctx.scale2, index, lse * _LOG2E, grad, ctx.t)
            dz = da + dk  # type: ignore[operator]
        dt = _temperature_grad(ctx.temperature, need_t, (z * dz).sum(), 0.5)  # z/√τ
        return (dz if need_z else None), dt, None


def _sym_lse_robust(z: Tensor, scale2: float, t: int) -> Tensor:
    """Symmetric forward (natural log), rows whose fixed-shift sum lost precision redone exactly."""
    n = z.shape[0]
    index = torch.arange(n, device=z.device)
    c = (0.5 * scale2) * torch.linalg.vector_norm(z, dim=1).square()
    if n < 2 or float(c.max() - c.min()) > _max_spread(z.dtype):
        # norms too unequal for one shared shift: per-row shifts
        return _rect_forward(z, z, scale2, index, t) * _LN2
    lse2, rows = _sym_forward(z, scale2, t)
    poor = _inexact(rows)
    if bool(poor.any()):
        bad = index[poor]
        lse2[bad] = _rect_forward_online(z[bad] * scale2, z, bad, t)
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
        return _SymmetricLSE.apply(anchors, temperature, t)
    if self_index is None:
        self_index = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    return _RectangularLSE.apply(anchors, contrasts, temperature, self_index.long(), t)


def row_log_sum_exp_tiled(
    anchors: Tensor, contrasts: Tensor, temperature: Temperature, *, tile_size: int | None = None
) -> Tensor:
    """lse_i = log Σ_c e^{a_i·c_c/τ} over every contrast: :func:`tiled_log_sum_exp`, no exclusion.

    The tiled twin of :func:`contrastkit.losses._rows.row_log_sum_exp` (InfoNCE's candidate keys).

    Args:
        anchors: Shape: (A, D).
        contrasts: Shape: (C, D), same dtype as ``anchors``.
        temperature: τ, a float or a 0-dim tensor (gets an exact gradient).
        tile_size: Tile edge T; default :data:`DEFAULT_TILE_SIZE`.

    Returns:
        Shape: (A,).
    """
    return tiled_log_sum_exp(anchors, contrasts, None, temperature, tile_size=tile_size)


def positive_log_prob(positive_logit: Tensor, lse: Tensor, num_terms: Tensor | int) -> Tensor:
    r"""log(e^{l_ip} / Σ_{c∈A(i)} e^{l_ic}) = l_ip − lse_i, exactly 0 where A(i) holds one term.

    The positive lies in A(i), so a one-term denominator is the positive itself and the exact
    value is l − l = 0, with a zero gradient. The tiled code computes l_ip (plain products) and
    lse_i (a shifted ``exp2``/``log2``) apart, so their difference would be rounding noise there
    (N = 1: up to 1e-4 in float32, with a nonzero dℓ/dτ); the dense code's ``logsumexp`` of one
    term returns the term itself.

    Args:
        positive_logit: l_ip, or the mean over P(i) of it (then P(i) = A(i) where it matters).
            Shape: (A,).
        lse: log Σ_{c∈A(i)} e^{l_ic}. Shape: (A,).
        num_terms: |A(i)|, per row or one for all.

    Returns:
        Shape: (A,).
    """
    single = torch.as_tensor(num_terms, device=lse.device) == 1
    return torch.where(single, 0.0, positive_logit - lse)


class _PositiveSums(torch.autograd.Function):
    """pos_i = a_i·(S_{k(i)} − w_i c_{self(i)}), S_k = Σ_{c: k(c)=k} c_c, w_i ∈ {0, 1}.

    The positive-logit sum of every anchor from per-class sums, in O((A + C)·D). A Function rather
    than autograd so that it saves only the (K, D) class sums (autograd would keep two (A, D)
    gathers alive until the backward, which at 131,072 views is 128 MiB each).
    """

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        contrasts: Tensor,
        anchor_cls: Tensor,
        contrast_cls: Tensor,
        self_col: Tensor,
        self_weight: Tensor,
        num_classes: int,
    ) -> Tensor:
        sums = anchors.new_zeros(num_classes, anchors.shape[1])
        sums.index_add_(0, contrast_cls, contrasts)  # (K, D)
        pos = torch.linalg.vecdot(anchors, sums.index_select(0, anchor_cls))  # (A,)
        pos.sub_(self_weight * torch.linalg.vecdot(anchors, contrasts.index_select(0, self_col)))
        ctx.save_for_backward(anchors, contrasts, anchor_cls, contrast_cls, self_col, self_weight)
        ctx.sums = sums
        return pos

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        anchors, contrasts, anchor_cls, contrast_cls, self_col, self_weight = ctx.saved_tensors
        need_a, need_c = ctx.needs_input_grad[:2]
        da = dc = None
        if need_a:  # d pos_i / d a_i = S_{k(i)} − w_i c_self(i)
            da = ctx.sums.index_select(0, anchor_cls).mul_(grad[:, None])
            tmp = contrasts.index_select(0, self_col).mul_((grad * self_weight)[:, None])
            da.sub_(tmp)
            del tmp
        if need_c:  # d/d c_j = Σ_{i: k(i)=k(j)} g_i a_i − Σ_{i: self(i)=j} g_i w_i a_i
            ga = anchors * grad[:, None]  # (A, D)
            per_class = anchors.new_zeros(ctx.sums.shape).index_add_(0, anchor_cls, ga)
            dc = per_class.index_select(0, contrast_cls)  # (C, D)
            dc.index_add_(0, self_col, ga.mul_(-self_weight[:, None]))
        return da, dc, None, None, None, None, None


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
    counts = torch.bincount(contrast_cls, minlength=k)  # (K,)
    # the anchor itself is not its own positive: remove it where it is a contrast of its class
    has_self = self_index >= 0  # (A,)
    self_col = self_index.clamp(min=0)  # (A,)
    self_same = has_self & (contrast_cls[self_col] == anchor_cls)  # (A,)
    positive_sum = _PositiveSums.apply(
        anchors, contrasts, anchor_cls, contrast_cls, self_col, self_same.to(anchors.dtype), k
    )
    num_positives = counts[anchor_cls] - self_same.long()  # (A,)
    return positive_sum, num_positives


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
    num_terms = contrasts.shape[0] - (self_index >= 0).long()  # |A(i)|, (A,)
    r = torch.where(num_positives > 0, positive_log_prob(mean_positive, lse, num_terms), 0.0)
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
    r = torch.where(num_positives > 0, positive_log_prob(mean_positive, lse, z.shape[0] - 1), 0.0)
    return r, num_positives
