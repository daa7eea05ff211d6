"""The loss core: four loss families, each as a loop oracle (:mod:`reference`) and fast code.

Every function validates its input, documents its formula, and agrees with its oracle to float
precision on values and gradients (``tests/losses``).
"""

from contrastkit.losses import reference
from contrastkit.losses.infonce import InfoNCELoss, info_nce
from contrastkit.losses.margin import MarginPairLoss, margin_pair
from contrastkit.losses.ntxent import NTXentLoss, nt_xent
from contrastkit.losses.supcon import SupConLoss, supcon

__all__ = [
    "InfoNCELoss",
    "MarginPairLoss",
    "NTXentLoss",
    "SupConLoss",
    "info_nce",
    "margin_pair",
    "nt_xent",
    "reference",
    "supcon",
]
