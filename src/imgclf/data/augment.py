"""Pure batch augmentations on (B, C, H, W) float tensors, on the model's device.

Each takes an explicit `torch.Generator` (on the batch's device), so a run's augmentation draws
are a function of its seed and epoch. Whole-batch ops, in the style of airbench's batch_crop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(shape: tuple, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Pad by `pad` (reflect) and crop back to the original size at a random offset per image."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if pad < min(h, w) else "replicate")
    dy = (_rand((b,), gen, x.device) * (2 * pad + 1)).long()  # (B,) in [0, 2*pad]
    dx = (_rand((b,), gen, x.device) * (2 * pad + 1)).long()
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)  # (B, C, H, W + 2*pad)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, cols)  # (B, C, H, W)


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror left-right with probability p per image."""
    flip = (_rand((x.shape[0],), gen, x.device) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def color_jitter(x: torch.Tensor, gen: torch.Generator, brightness: float = 0.2,
                 contrast: float = 0.2) -> torch.Tensor:
    """Scale contrast around each image's mean by U(1±contrast), then shift by U(±brightness).

    Works in the normalised space, where a shift of `brightness` is a fraction of one std.
    """
    b = x.shape[0]
    if contrast > 0:
        k = 1 + (2 * _rand((b, 1, 1, 1), gen, x.device) - 1) * contrast
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * k + mean
    if brightness > 0:
        x = x + (2 * _rand((b, 1, 1, 1), gen, x.device) - 1) * brightness
    return x


def augment_batch(x: torch.Tensor, gen: torch.Generator, crop_pad: int = 0, flip: bool = False,
                  brightness: float = 0.0, contrast: float = 0.0) -> torch.Tensor:
    """The training-time pipeline: crop, then flip, then colour."""
    x = random_crop(x, crop_pad, gen)
    if flip:
        x = random_flip(x, gen)
    if brightness > 0 or contrast > 0:
        x = color_jitter(x, gen, brightness, contrast)
    return x
