"""Input checks shared by every loss: each failure is a ``ValueError`` naming the argument.

The message always says what was received and what was expected, so that a user who passes
``(N, V, D)`` features to a function that wants ``(N, D)`` learns that from the error alone.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import torch
from torch import Tensor

Temperature = float | Tensor

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def compute_dtype(x: Tensor) -> torch.dtype:
    """Return the dtype a loss computes in: float64 stays float64, everything else is float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def embeddings(name: str, x: object, ndim: int, shape_doc: str) -> Tensor:
    """Check that ``x`` is a non-empty, finite floating tensor with ``ndim`` dimensions."""
    if not isinstance(x, Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(x).__name__}"
        )
    if x.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {shape_doc}, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must be non-empty {shape_doc}, got shape {tuple(x.shape)}")
    has_data(name, x)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s)")
    return x


def has_data(name: str, x: Tensor) -> None:
    """Refuse a tensor on the meta device: it has a shape but no values to compute with."""
    if x.device.type == "meta":
        raise ValueError(
            f"{name} must hold values (a tensor on cpu, cuda, ...), got a tensor on the meta device"
        )


def one_dtype(*named: tuple[str, Tensor | None]) -> None:
    """Check that the embedding tensors of one loss share the first one's floating dtype.

    A loss computes in one dtype; mixing float32 and float64 would silently pick one of them
    (the one that happens to come first, or the promotion of both).
    """
    present = [(name, x) for name, x in named if x is not None]
    first_name, first = present[0]
    for name, x in present[1:]:
        if x.dtype != first.dtype:
            raise ValueError(
                f"{name} must have the dtype of {first_name} ({first.dtype}), got {x.dtype}"
            )


def one_device(*named: tuple[str, object]) -> None:
    """Check that every tensor among the arguments lies on the first one's device."""
    present = [(name, x) for name, x in named if isinstance(x, Tensor)]
    first_name, first = present[0]
    for name, x in present[1:]:
        if x.device != first.device:
            raise ValueError(
                f"{name} must be on the device of {first_name} ({first.device}), got {x.device}"
            )


def flag(name: str, value: object) -> bool:
    """Check a switch: True or False (not 0/1, not a string, which would always be true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def tile_size(value: object) -> int | None:
    """Check ``tile_size``: None (the measured default) or an integer ≥ 1 (not a bool)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"tile_size must be None or an integer >= 1, got {value!r}")
    return int(value)


def fast_options(
    impl: object, impls: Iterable[str], tile: object, gather: object
) -> tuple[str, int | None]:
    """Check the options of the in-batch losses that only the fast code reads.

    They are checked whatever the ``impl``, so that a bad value fails where it is written rather
    than when a larger batch switches ``impl="auto"`` to the tiled code.

    Returns:
        ``(impl, tile_size)``.
    """
    impl = choice("impl", impl, impls)
    gather_impl(gather, impl)
    return impl, tile_size(tile)


def same_size(name: str, x: Tensor, dim: int, expected: int, what: str) -> None:
    """Check ``x.shape[dim] == expected`` and name both sides if not."""
    if x.shape[dim] != expected:
        raise ValueError(
            f"{name} must have {what} = {expected} (dimension {dim}), got shape {tuple(x.shape)}"
        )


def temperature(t: object, name: str = "temperature") -> Temperature:
    """Check a temperature: a positive finite float or a 0-dim floating tensor."""
    if isinstance(t, Tensor):
        if t.ndim != 0:
            raise ValueError(
                f"{name} must be a float or a 0-dim tensor, got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} tensor must be floating point, got dtype {t.dtype}")
        has_data(name, t)
        value = float(t.detach())
    elif isinstance(t, int | float) and not isinstance(t, bool):
        value = float(t)
    else:
        raise ValueError(f"{name} must be a float or a 0-dim tensor, got {type(t).__name__}")
    if not value > 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return t if isinstance(t, Tensor) else value


def labels(y: object, n: int, name: str = "labels", size: str = "N", per: str = "sample") -> Tensor:
    """Check class labels: a 1-D integer tensor with one entry per ``per`` (``size`` of them)."""
    if not isinstance(y, Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape ({size},), got {type(y).__name__}"
        )
    if y.ndim != 1:
        raise ValueError(f"{name} must have shape ({size},) = ({n},), got shape {tuple(y.shape)}")
    if y.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"{name} must be an integer tensor (class indices), got dtype {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per {per}: expected {size} = {n}, got {y.shape[0]}"
        )
    has_data(name, y)
    return y


def choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Check that a string option is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return str(value)


def gather_impl(gather: object, impl: str) -> None:
    """Check ``gather``: a bool, and not combined with the loop oracle."""
    if not isinstance(gather, bool):
        raise ValueError(f"gather must be True or False, got {gather!r}")
    if gather and impl == "reference":
        raise ValueError(
            "gather=True needs a fast impl ('auto' or 'dense'); the loop oracle "
            "impl='reference' is single-process only"
        )


# --- the argument sets of each loss family (shared by the oracle and the fast versions) ---------


def ntxent_args(
    z1: object, z2: object, t: object, normalize: object
) -> tuple[Tensor, Tensor, Temperature]:
    """Validate ``nt_xent``'s inputs: two ``(N, D)`` views of the same N samples."""
    z1 = embeddings("z1", z1, 2, "(N, D)")
    z2 = embeddings("z2", z2, 2, "(N, D)")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    one_dtype(("z1", z1), ("z2", z2))
    t = temperature(t)
    one_device(("z1", z1), ("z2", z2), ("temperature", t))
    flag("normalize", normalize)
    return z1, z2, t


def supcon_args(
    features: object,
    y: object,
    t: object,
    base_t: object,
    contrast_mode: object,
    normalize: object,
) -> tuple[Tensor, Tensor | None, Temperature, Temperature | None, str]:
    """Validate ``supcon``'s inputs: ``(N, V, D)`` features, optional ``(N,)`` labels."""
    features = embeddings("features", features, 3, "(N, V, D)")
    n, v, _ = features.shape
    y = None if y is None else labels(y, n)
    if y is None and v == 1:
        raise ValueError(
            "features has V = 1 view and labels is None: no anchor can have a positive; "
            "pass labels (N,) or at least 2 views (N, V>=2, D)"
        )
    t = temperature(t)
    tb = None if base_t is None else temperature(base_t, "base_temperature")
    one_device(("features", features), ("labels", y), ("temperature", t), ("base_temperature", tb))
    mode = choice("contrast_mode", contrast_mode, ("all", "one"))
    flag("normalize", normalize)
    return features, y, t, tb, mode


def supcon_queue(
    queue: object, features: Tensor, y: Tensor | None
) -> tuple[Tensor, Tensor | None] | None:
    """Validate ``supcon``'s ``queue``: (K, D) keys, with (K,) integer labels iff ``labels`` given.

    Returns:
        None, or ``(keys, queue_labels)`` with ``queue_labels`` None for an unlabelled queue.
    """
    if queue is None:
        return None
    if isinstance(queue, Tensor):
        keys, queue_y = queue, None
    elif isinstance(queue, tuple | list) and len(queue) == 2:
        keys, queue_y = queue
    else:
        raise ValueError(
            "queue must be None, a (K, D) tensor of keys or a pair (keys (K, D), labels (K,)), "
            f"got {type(queue).__name__}"
            + (f" of length {len(queue)}" if isinstance(queue, tuple | list) else "")
        )
    d = features.shape[-1]
    keys = embeddings("queue keys", keys, 2, f"(K, D) with D = {d}")
    same_size("queue keys", keys, 1, d, "the features' D")
    one_dtype(("features", features), ("queue keys", keys))
    one_device(("features", features), ("queue keys", keys))
    if y is None and queue_y is not None:
        raise ValueError(
            "queue labels need labels for the batch: with labels=None each sample is its own "
            "class and no queue key can share it; pass queue=keys (negatives only) or labels"
        )
    if y is not None and queue_y is None:
        raise ValueError(
            "queue must be (keys, labels) when labels is given: an unlabelled queue would make "
            "the keys of an anchor's own class negatives; pass the queue's labels (K,)"
        )
    if queue_y is not None:
        queue_y = labels(queue_y, keys.shape[0], "queue labels", "K", "key")
        one_device(("features", features), ("queue labels", queue_y))
    return keys, queue_y


def info_nce_args(
    query: object,
    positive_key: object,
    negative_keys: object,
    t: object,
    negative_mode: object,
    reduction: object,
    normalize: object,
) -> tuple[Tensor, Tensor, Tensor | None, Temperature, str, str]:
    """Validate ``info_nce``'s inputs: ``(N, D)`` queries and keys, optional negatives."""
    query = embeddings("query", query, 2, "(N, D)")
    positive_key = embeddings("positive_key", positive_key, 2, "(N, D)")
    if positive_key.shape != query.shape:
        raise ValueError(
            "query and positive_key must have the same shape (N, D), got "
            f"{tuple(query.shape)} and {tuple(positive_key.shape)}"
        )
    mode = choice("negative_mode", negative_mode, ("unpaired", "paired"))
    red = choice("reduction", reduction, ("mean", "sum", "none"))
    n, d = query.shape
    if negative_keys is not None:
        if mode == "unpaired":
            negative_keys = embeddings("negative_keys", negative_keys, 2, "(M, D) when unpaired")
            same_size("negative_keys", negative_keys, 1, d, "D")
        else:
            negative_keys = embeddings("negative_keys", negative_keys, 3, "(N, M, D) when paired")
            same_size("negative_keys", negative_keys, 0, n, "N")
            same_size("negative_keys", negative_keys, 2, d, "D")
    keys = (("query", query), ("positive_key", positive_key), ("negative_keys", negative_keys))
    one_dtype(*keys)
    t = temperature(t)
    one_device(*keys, ("temperature", t))
    flag("normalize", normalize)
    return query, positive_key, negative_keys, t, mode, red


def margin_args(
    x1: object, x2: object, same: object, margin: object, reduction: object
) -> tuple[Tensor, Tensor, Tensor, float, str]:
    """Validate ``margin_pair``'s inputs: two ``(N, D)`` embeddings and an ``(N,)`` 0/1 target."""
    x1 = embeddings("x1", x1, 2, "(N, D)")
    x2 = embeddings("x2", x2, 2, "(N, D)")
    if x1.shape != x2.shape:
        raise ValueError(
            f"x1 and x2 must have the same shape (N, D), got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    if not isinstance(same, Tensor):
        raise ValueError(f"same must be a torch.Tensor of shape (N,), got {type(same).__name__}")
    if same.ndim != 1 or same.shape[0] != x1.shape[0]:
        raise ValueError(
            f"same must have shape (N,) = ({x1.shape[0]},), got shape {tuple(same.shape)}"
        )
    one_dtype(("x1", x1), ("x2", x2))
    has_data("same", same)
    one_device(("x1", x1), ("x2", x2), ("same", same))
    if same.dtype != torch.bool:
        if same.is_complex() or not bool(((same == 0) | (same == 1)).all()):
            raise ValueError("same must be bool or hold only 0/1 values (1 = same class)")
    return (
        x1,
        x2,
        same,
        margin_value(margin),
        choice("reduction", reduction, ("mean", "sum", "none")),
    )


def margin_value(margin: object) -> float:
    """Check a hinge margin: a finite float ≥ 0."""
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise ValueError(f"margin must be a float, got {type(margin).__name__}")
    m = float(margin)
    if not 0.0 <= m < float("inf"):
        raise ValueError(f"margin must be a finite number >= 0, got {m}")
    return m
