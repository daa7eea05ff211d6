"""Split batch norm: batch statistics over S sub-batches, MoCo's shuffling BN on one process.

MoCo trains with one batch norm per GPU and shuffles the key batch across GPUs, so that a
query's sub-batch and its positive key's sub-batch hold different samples; otherwise the batch
statistics let the pair find each other ("cheating", He et al. 2020, §3.3). One process has one
batch: :class:`SplitBatchNorm` computes the statistics over S sub-batches instead (as lightly's
``SplitBatchNorm`` and the MoCo CIFAR demo do), and the MoCo methods shuffle the key batch
before the key encoder and unshuffle its output (:mod:`contrastkit.train.momentum`).

Sub-batch j holds rows j, j + S, j + 2S… of the batch. In eval mode the layer is the plain
batch norm of its running statistics (the mean of the sub-batches' running statistics), and its
state dict is a ``BatchNorm`` layer's: a run's encoder loads into a plain network.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are taken over ``splits`` sub-batches.

    Args:
        num_features: Channels C.
        splits: Sub-batches S ≥ 1 (S = 1 is ``BatchNorm``).
        eps: As ``nn.BatchNorm2d``.
        momentum: As ``nn.BatchNorm2d``.

    Raises:
        ValueError: if ``splits`` is not an integer ≥ 1; in training, if the batch's row count is
            not a multiple of ``splits``.
    """

    def __init__(
        self, num_features: int, splits: int, eps: float = 1e-5, momentum: float | None = 0.1
    ) -> None:
        if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
            raise ValueError(f"splits must be an integer >= 1, got {splits!r}")
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.splits = splits

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected input of shape (N, C, ...), got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` (N, C, ...): per sub-batch statistics in training, running ones in eval."""
        self._check_input_dim(x)
        s = self.splits
        if not self.training or s == 1:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % s:
            raise ValueError(
                f"split batch norm: a batch of {n} rows does not split into {s} sub-batches "
                "(--bn-splits must divide the batch each process's network sees)"
            )
        assert self.running_mean is not None and self.running_var is not None
        assert self.weight is not None and self.bias is not None
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        # (N, C, ...) → (N/S, S·C, ...): channel block j of row r is row r·S + j (sub-batch j)
        out = F.batch_norm(
            x.reshape(n // s, s * c, *x.shape[2:]),
            mean,
            var,
            self.weight.repeat(s),
            self.bias.repeat(s),
            True,
            0.0 if self.momentum is None else self.momentum,
            self.eps,
        )
        self.running_mean.copy_(mean.view(s, c).mean(0))
        self.running_var.copy_(var.view(s, c).mean(0))
        return out.view_as(x) if out.is_contiguous() else out.reshape(x.shape)

    def extra_repr(self) -> str:
        """The layer's settings for ``print(module)``."""
        return f"{super().extra_repr()}, splits={self.splits}"


def convert_split_bn(module: nn.Module, splits: int) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` of ``module`` by a :class:`SplitBatchNorm`, in place.

    Parameters and running statistics are carried over.

    Args:
        module: A network (or a single batch-norm layer).
        splits: Sub-batches S.

    Returns:
        ``module`` with its batch norms replaced (a new layer if ``module`` is one).

    Raises:
        ValueError: if ``splits`` is not an integer ≥ 1.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, SplitBatchNorm
    ):
        if not module.affine or not module.track_running_stats:
            raise ValueError("convert_split_bn: batch norms need affine=True and running stats")
        new = SplitBatchNorm(module.num_features, splits, eps=module.eps, momentum=module.momentum)
        new.load_state_dict(module.state_dict())
        return new.to(module.weight.device)
    for name, child in module.named_children():
        setattr(module, name, convert_split_bn(child, splits))
    return module
