"""CS230's SIGNS network: 3 × [conv3×3 → batch norm → ReLU → max-pool 2], FC → dropout → FC."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ImgclfError
from . import register_model


class SignsCNN(nn.Module):
    def __init__(self, n_classes: int, in_channels: int = 3, image_size: int = 64, num_channels: int = 32,
                 fc_units: int = 128, dropout: float = 0.5, batch_norm: bool = True) -> None:
        super().__init__()
        if image_size < 8:
            raise ImgclfError(f"image_size {image_size} is too small for cnn (three 2× poolings need ≥ 8); "
                              "set image_size ≥ 8 or use model=mlp")
        widths = [num_channels, 2 * num_channels, 4 * num_channels]
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(c_out)] if batch_norm else []
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = image_size // 8  # three 2× poolings, floor at each
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * side * side, fc_units, bias=not batch_norm),
            *([nn.BatchNorm1d(fc_units)] if batch_norm else []),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc_units, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) → (B, n_classes)
        return self.head(self.features(x))


@register_model("cnn")
def cnn(n_classes: int, in_channels: int, image_size: int, num_channels: int = 32, fc_units: int = 128,
        dropout: float = 0.5, batch_norm: bool = True, **_: object) -> nn.Module:
    return SignsCNN(n_classes, in_channels, image_size, num_channels, fc_units, dropout, batch_norm)
