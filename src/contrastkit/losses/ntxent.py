"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.losses import _validate, reference
from contrastkit.losses._common import prepare
from contrastkit.losses._validate import Temperature
from contrastkit.losses.supcon import supcon_rows

IMPLS = ("auto", "reference", "dense", "tiled")


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: Temperature = 0.5,
    *,
    normalize: bool = True,
    impl: str = "auto",
    tile_size: int | None = None,
    gather: bool = False,
) -> Tensor:
    r"""NT-Xent loss of SimCLR over the 2N views of N samples: SupCon with V = 2 and no labels.

    .. math::
        ℓ_i = -\log \frac{e^{s_{i,p(i)}/τ}}{\sum_{a \ne i} e^{s_{ia}/τ}}, \qquad
        L = \frac{1}{2N} \sum_{i=1}^{2N} ℓ_i

    with z = [z1; z2] (2N rows), s_ij = z_i · z_j on L2-normalised rows, p(i) the other view of
    sample i. The positive stays in the denominator (2N − 1 terms). For N = 1 every denominator
    holds only the positive and the loss is 0.

    Args:
        z1: First view. Shape: (N, D).
        z2: Second view, row i the same sample as ``z1[i]``. Shape: (N, D).
        temperature: τ > 0, a float or a 0-dim tensor (learnable: it receives a gradient).
            Default 0.5 (SimCLR).
        normalize: L2-normalise rows first (cosine similarity). Default True.
        impl: ``"dense"`` (vectorised, builds the 2N × 2N matrix), ``"tiled"`` (O(N·D) memory,
            :mod:`contrastkit.losses.tiled`), ``"reference"`` (the loop oracle) or ``"auto"``
            (dense for small batches, tiled from a measured size on). Default ``"auto"``.
        tile_size: Tile edge of ``impl="tiled"``; None for the measured default.
        gather: Under ``torchrun``, contrast this process's 2N_r views against the views of
            every process (see ``docs/distributed.md``): the result is W × this process's share
            of the loss on the concatenated batch, so that its mean over processes is that loss
            and DDP's gradient average is its gradient. N_r may differ between processes.
            Unlaunched it changes nothing. Default False.

    Returns:
        The mean loss, a 0-dim tensor (float64 for float64 inputs, else float32).

    Raises:
        ValueError: on wrong shapes, N/D mismatch, z1 and z2 of different dtypes, inputs on
            different devices or on the meta device, empty or non-finite input, τ ≤ 0, unknown
            impl, ``tile_size`` not None or an integer ≥ 1, ``normalize`` not a bool,
            ``gather=True`` with ``impl="reference"``.

    Reference: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of
    Visual Representations", ICML 2020, Algorithm 1.
    """
    z1, z2, temperature = _validate.ntxent_args(z1, z2, temperature, normalize)
    impl, tile_size = _validate.fast_options(impl, IMPLS, tile_size, gather)
    if impl == "reference":
        return reference.nt_xent(z1, z2, temperature, normalize=normalize)
    # SupCon with V = 2 views and no labels: [z1; z2] is its view-major (V·N, D) contrast matrix
    z = prepare(torch.cat([z1, z2]), normalize)  # (2N, D): row i and row i + N are one sample
    return supcon_rows(
        z, z1.shape[0], None, temperature, impl=impl, tile_size=tile_size, gather=gather
    )


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent`: stores the hyperparameters, validates them once."""

    def __init__(
        self,
        temperature: Temperature = 0.5,
        *,
        normalize: bool = True,
        impl: str = "auto",
        tile_size: int | None = None,
        gather: bool = False,
    ):
        super().__init__()
        self.temperature = _validate.temperature(temperature)
        self.normalize = _validate.flag("normalize", normalize)
        self.impl, self.tile_size = _validate.fast_options(impl, IMPLS, tile_size, gather)
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Compute the loss; see :func:`nt_xent`."""
        return nt_xent(
            z1,
            z2,
            self.temperature,
            normalize=self.normalize,
            impl=self.impl,
            tile_size=self.tile_size,
            gather=self.gather,
        )

    def extra_repr(self) -> str:
        """Hyperparameters shown by ``print(module)``."""
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, impl={self.impl!r}, "
            f"gather={self.gather}"
        )
