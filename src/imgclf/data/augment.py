"""Whole-batch augmentation and normalisation, as torch ops on the model's device.

Geometry (crop, flip) runs on the uint8 batch, so it moves a quarter of the bytes that float
would. Colour jitter and normalisation are both a scale and a shift per image and channel, so
they are folded into one multiply-add during the uint8 → float conversion: the float batch is
written once and never re-read by an augmentation. (bench/loader.py measures the difference.)

Every random draw comes from an explicit `torch.Generator` on the batch's device, in a fixed
order (crop offsets, flips, contrast, brightness), so a run's augmentation is a function of its
seed and epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augment:
    crop_pad: int = 0  # pixels of zero padding for the random crop (torchvision's RandomCrop default fill)
    flip: bool = False  # random left-right flip with probability 0.5
    brightness: float = 0.0  # shift by U(±brightness), in normalised units (≈ stds)
    contrast: float = 0.0  # scale around each image's mean by U(1 ± contrast)


def _rand(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """(B, H, W, C) uint8 → the same shape: each image shifted by its own offset in [−pad, pad]².

    The batch is zero-padded once; a strided view then holds every candidate window of every
    image, and one indexing op copies out each image's window (row by row, W·C bytes at a time).
    """
    if pad <= 0:
        return x
    b, h, w, c = x.shape
    dy = (_rand(b, gen, x.device) * (2 * pad + 1)).long()  # (B,) in [0, 2·pad]
    dx = (_rand(b, gen, x.device) * (2 * pad + 1)).long()
    padded = x.new_zeros((b, h + 2 * pad, w + 2 * pad, c))
    padded[:, pad:pad + h, pad:pad + w] = x
    s = padded.stride()
    windows = padded.as_strided((b, 2 * pad + 1, 2 * pad + 1, h, w, c), (s[0], s[1], s[2], s[1], s[2], s[3]))
    return windows[torch.arange(b, device=x.device), dy, dx]  # (B, H, W, C)


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """(B, H, W, C): mirror left-right with probability p per image."""
    flip = (_rand(x.shape[0], gen, x.device) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(2), x)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator | None = None,
              brightness: float = 0.0, contrast: float = 0.0, channels_last: bool = False) -> torch.Tensor:
    """(B, H, W, C) uint8 → (B, C, H, W) float32 = (x/255 − mean)/std, then colour jitter.

    Jitter (with `gen`): y ← k·(y − m) + m + β per image, m its mean over channels and pixels,
    k ~ U(1 ± contrast), β ~ U(±brightness). Written as y = x·S + T with per-(image, channel)
    S and T, it costs one pass over the batch.
    """
    b, h, w, c = x.shape
    a = 1.0 / (255.0 * std)  # (C,): y = x·a + t
    t = -mean / std
    if gen is not None and (brightness > 0 or contrast > 0):
        k = 1 + (2 * _rand(b, gen, x.device) - 1) * contrast  # (B,)
        beta = (2 * _rand(b, gen, x.device) - 1) * brightness
        pixel_mean = x.sum(dim=(1, 2), dtype=torch.int64).float() / (h * w)  # (B, C)
        m = (pixel_mean * a + t).mean(dim=1)  # (B,) mean of the normalised image
        scale = k[:, None] * a  # (B, C)
        shift = k[:, None] * t + ((1 - k) * m + beta)[:, None]
    else:
        scale, shift = a[None], t[None]  # (1, C)
    x = x.permute(0, 3, 1, 2)  # a view: NHWC bytes, NCHW indices
    if not channels_last:
        x = x.contiguous()
    out = x.float()
    return out.mul_(scale[:, :, None, None]).add_(shift[:, :, None, None])


def augment_and_normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator | None,
                          aug: Augment | None, channels_last: bool = False) -> torch.Tensor:
    """The training-time pipeline on a (B, H, W, C) uint8 batch: crop, flip, then jitter + normalise."""
    if aug is None or gen is None:
        return normalize(x, mean, std, channels_last=channels_last)
    x = random_crop(x, aug.crop_pad, gen)
    if aug.flip:
        x = random_flip(x, gen)
    return normalize(x, mean, std, gen, aug.brightness, aug.contrast, channels_last)
