"""Model registry: `create_model(name, n_classes, in_channels, image_size, **options)`."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import ImgclfError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, n_classes: int, in_channels: int, image_size: int, **options) -> nn.Module:
    if name not in _REGISTRY:
        raise ImgclfError(f"model {name!r} is not one of: {', '.join(list_models())}")
    return _REGISTRY[name](n_classes=n_classes, in_channels=in_channels, image_size=image_size, **options)


from . import cnn, mlp  # noqa: E402,F401  (registers the models)
from .init import INIT_SCHEMES, init_weights  # noqa: E402,F401
