"""Encoders by name: the registry (timm's ``@register_model`` + ``create_model``) and import paths.

An encoder is any ``nn.Module`` that maps images (N, C, H, W) to features (N, F). The built-in
ones (``small_cnn``, ``resnet18``…) are registered by name. A user's own encoder comes in two
ways, both recorded in a run's ``config.yaml`` so that every later command can rebuild it:

- an import path ``package.module:factory`` (``--model my_pkg.encoders:make``), imported when
  needed, in this process or any later one;
- a factory registered from Python with :func:`register_model`; the run records its import
  path (when it lives in an importable module) instead of the name.

A factory takes any of the keyword arguments ``in_channels``, ``image_size`` and ``norm`` (it is
given those it names) and returns a module. One without ``num_features`` and
``forward_features`` (an ``nn.Sequential``, say) is wrapped in :class:`FeatureEncoder`, which
measures its feature size with one forward pass.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from contrastkit.errors import ContrastkitError


class Encoder(Protocol):
    """What every encoder offers besides being an ``nn.Module``."""

    num_features: int

    def forward_features(self, x: Tensor) -> Tensor:
        """Map images (N, C, H, W) to features (N, num_features)."""
        ...


Factory = Callable[..., nn.Module]
MODELS: dict[str, Factory] = {}
"""Registered encoder factories by name."""

NORMS = ("batch", "group", "split")
"""``split``: built with batch norm, then split (:mod:`contrastkit.models.split_bn`)."""


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Register an encoder factory under ``name`` (a decorator).

    Example::

        @register_model("tiny")
        def tiny(in_channels: int = 1) -> nn.Module:
            return nn.Sequential(nn.Conv2d(in_channels, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    A run on ``model="tiny"`` records ``module:qualname`` of the factory, so the CLI can rebuild
    the encoder later (define it in an importable module, not in ``__main__``).
    """

    def wrap(factory: Factory) -> Factory:
        MODELS[name] = factory
        return factory

    return wrap


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """Return a ``channels -> module`` factory: BatchNorm2d or GroupNorm (≤ 32 groups of ≥ 4).

    Raises:
        ContrastkitError: for an unknown ``norm``.
    """
    if norm in ("batch", "split"):  # split: converted after building (split_bn)
        return nn.BatchNorm2d
    if norm == "group":
        return lambda c: nn.GroupNorm(max(1, min(32, c // 4)), c)
    raise ContrastkitError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def model_names() -> list[str]:
    """Names accepted by :func:`create_model` besides import paths."""
    return sorted(MODELS)


def import_factory(path: str) -> Factory:
    """The callable that the import path ``package.module:attribute`` names.

    Raises:
        ContrastkitError: if the module cannot be imported or has no such callable.
    """
    module_name, _, attribute = path.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as e:
        raise ContrastkitError(f"model {path!r}: cannot import {module_name!r} ({e})") from None
    for part in attribute.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise ContrastkitError(f"model {path!r}: {module_name} has no callable {attribute!r}")
    return obj


def recorded_name(name: str) -> str:
    """What a run records for model ``name``: a registered user factory's import path.

    Built-in names and import paths stay as they are; a factory registered from a script
    (``__main__``) cannot be imported by another process, so its name stays too.
    """
    factory = MODELS.get(name)
    if factory is None or factory.__module__.startswith("contrastkit."):
        return name
    if factory.__module__ == "__main__" or "<locals>" in factory.__qualname__:
        return name
    return f"{factory.__module__}:{factory.__qualname__}"


class FeatureEncoder(nn.Module):
    """A module mapping images to features, with ``num_features`` and ``forward_features``.

    Args:
        module: Maps (N, C, H, W) to (N, F), or to (N, F, 1, 1) (flattened here).
        num_features: F.
    """

    def __init__(self, module: nn.Module, num_features: int) -> None:
        super().__init__()
        self.module = module
        self.num_features = num_features

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (N, C, H, W) → features (N, num_features)."""
        return torch.flatten(self.module(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)


def _as_encoder(module: nn.Module, name: str, in_channels: int, image_size: int) -> nn.Module:
    """``module`` itself if it is an :class:`Encoder`, else wrapped with its measured width."""
    if not isinstance(module, nn.Module):
        raise ContrastkitError(
            f"model {name!r}: the factory returned {type(module).__name__}, not an nn.Module"
        )
    if hasattr(module, "num_features") and hasattr(module, "forward_features"):
        return module
    probe = torch.zeros(2, in_channels, image_size, image_size)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = torch.flatten(module(probe), 1)
    except Exception as e:  # a user's module: any error means it cannot take these images
        raise ContrastkitError(
            f"model {name!r} cannot encode images of shape (N, {in_channels}, {image_size}, "
            f"{image_size}): {type(e).__name__}: {e}"
        ) from None
    finally:
        module.train(was_training)
    if out.ndim != 2 or out.shape[0] != 2:
        raise ContrastkitError(
            f"model {name!r} must map (N, C, H, W) images to (N, F) features, got shape "
            f"{tuple(out.shape)} for N = 2"
        )
    return FeatureEncoder(module, int(out.shape[1]))


def create_model(
    name: str, *, in_channels: int = 3, image_size: int = 32, norm: str = "batch"
) -> nn.Module:
    """Build the encoder ``name`` for images (N, in_channels, image_size, image_size).

    Args:
        name: A registered name (:func:`model_names`) or an import path ``module:factory``.
        in_channels: Image channels (1 for grey images).
        image_size: Image side; ResNets use the CIFAR stem (3×3 conv, no max-pool) for ≤ 64 px.
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm, batch-independent).

    Returns:
        An ``nn.Module`` with ``num_features`` and ``forward_features(x) -> (N, num_features)``.

    Raises:
        ContrastkitError: for an unknown name or norm, or a factory whose module does not map
            such images to (N, F) features.
    """
    from contrastkit.models import resnet, small_cnn  # noqa: F401  (fills the registry)

    norm_layer(norm)  # validate early
    if name in MODELS:
        factory = MODELS[name]
    elif ":" in name:
        factory = import_factory(name)
    else:
        raise ContrastkitError(
            f"unknown model {name!r}; choose one of {', '.join(model_names())} or give an "
            "import path module:factory"
        )
    given = {"in_channels": in_channels, "image_size": image_size, "norm": norm}
    try:
        params = inspect.signature(factory).parameters
        named = any(p.kind is p.VAR_KEYWORD for p in params.values()) or None
    except (TypeError, ValueError):  # a callable without a signature: give it everything
        params, named = {}, True  # type: ignore[assignment]
    kwargs = given if named else {k: v for k, v in given.items() if k in params}
    try:
        module = factory(**kwargs)
    except Exception as e:  # a user's factory: say which one failed and how, in one line
        raise ContrastkitError(
            f"model {name!r}: the factory raised {type(e).__name__}: {e}"
        ) from None
    return _as_encoder(module, name, in_channels, image_size)
