"""contrastkit: contrastive representation learning in PyTorch.

The loss core lives in :mod:`contrastkit.losses`.
"""

__version__ = "0.1.0"
