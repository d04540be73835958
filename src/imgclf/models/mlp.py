"""A multilayer perceptron on the flattened image: [Linear → (BN) → ReLU → dropout] × k → Linear."""
from __future__ import annotations

import torch.nn as nn

from . import register_model


@register_model("mlp")
def mlp(n_classes: int, in_channels: int, image_size: int, hidden_units: tuple[int, ...] = (256, 128),
        dropout: float = 0.5, batch_norm: bool = True, **_: object) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size * image_size
    for h in hidden_units:
        layers += [nn.Linear(width, h, bias=not batch_norm)]
        layers += [nn.BatchNorm1d(h)] if batch_norm else []
        layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
