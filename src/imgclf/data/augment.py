"""Whole-batch augmentation and normalisation, as torch ops on the model's device.

Geometry (crop, flip) runs on the uint8 batch, so it moves a quarter of the bytes that float
would. Colour jitter and normalisation are both a scale and a shift per image and channel, so
they are folded into normalisation's multiply-add: no augmentation makes a pass of its own over
the float batch. (bench/loader.py measures the difference.)

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

    The batch is zero-padded once. Every output row is then W·C consecutive bytes of the padded
    batch, starting at pixel (image, dy + row, dx): an overlapping strided view whose "rows" start
    at every pixel lets one `index_select` copy all B·H rows (a memcpy each, not a byte-by-byte
    gather; bench/loader.py's profile shows the difference).
    """
    if pad <= 0:
        return x
    b, h, w, c = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    dy, dx = (torch.rand(2, b, generator=gen, device=x.device) * (2 * pad + 1)).long()  # (B,) each, in [0, 2·pad]
    padded = x.new_zeros((b, hp, wp, c))
    padded[:, pad:pad + h, pad:pad + w] = x
    flat = padded.view(-1)
    starts = flat.as_strided(((flat.numel() - w * c) // c + 1, w * c), (c, 1))  # row r starts at pixel r
    first_pixel = torch.arange(0, b * hp * wp, wp, device=x.device).view(b, hp)[:, :h]  # (B, H): row starts, no shift
    first_pixel = first_pixel + (dy * wp + dx)[:, None]
    return starts.index_select(0, first_pixel.reshape(-1)).view(b, h, w, c)


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """(B, H, W, C): mirror left-right with probability p per image."""
    flip = (_rand(x.shape[0], gen, x.device) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(2), x)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator | None = None,
              brightness: float = 0.0, contrast: float = 0.0, channels_last: bool = False) -> torch.Tensor:
    """(B, H, W, C) uint8 → (B, C, H, W) float32 = (x/255 − mean)/std, then colour jitter.

    Jitter (with `gen`): y ← k·(y − m) + m + β per image, m its mean over channels and pixels,
    k ~ U(1 ± contrast), β ~ U(±brightness). As y = x·S + T with per-(image, channel) S and T, it
    is a multiply-add over the batch. For channels_last that pass reads the NHWC bytes as
    (B, H, W·C) with S and T repeated along a row, so its innermost loop is W·C long rather than
    C (= 3) long; otherwise it runs on the NCHW uint8 copy, H·W long. The batch is small, so the
    per-image arithmetic is kept to a few ops: on a CPU each op costs microseconds.
    """
    b, h, w, c = x.shape
    a = (std * 255.0).reciprocal()  # (C,): y = x·a + t
    t = -mean / std
    a_row = a.expand(w, c).reshape(-1)  # (W·C,): a along one NHWC row
    if channels_last:
        x_view, a_b, t_b = x.reshape(b, h, w * c), a_row.view(1, 1, w * c), t.expand(w, c).reshape(1, 1, w * c)
    else:
        x_view, a_b, t_b = x.permute(0, 3, 1, 2).contiguous(), a.view(1, c, 1, 1), t.view(1, c, 1, 1)
    if gen is not None and (brightness > 0 or contrast > 0):
        k, beta = torch.rand(2, b, generator=gen, device=x.device).mul_(2).sub_(1).unbind()
        k = k.mul_(contrast).add_(1)  # (B,) in 1 ± contrast
        beta = beta.mul_(brightness)  # (B,) in ±brightness
        column_sums = x.reshape(b, h, w * c).sum(dim=1, dtype=torch.float32)  # (B, W·C), exact below 2²⁴
        m = torch.addmv(t.mean(), column_sums, a_row, alpha=1.0 / (h * w * c))  # (B,) mean of the normalised image
        k_b = k.view(b, *[1] * (x_view.dim() - 1))
        scale = k_b * a_b
        shift = torch.addcmul((m - k * m + beta).view_as(k_b), k_b, t_b)  # k·t + (1 − k)·m + β
    else:
        scale, shift = a_b, t_b
    out = x_view.float().mul_(scale).add_(shift)  # measured faster here than one mixed-dtype addcmul
    return out.view(b, h, w, c).permute(0, 3, 1, 2) if channels_last else out


def augment_and_normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator | None,
                          aug: Augment | None, channels_last: bool = False) -> torch.Tensor:
    """The training-time pipeline on a (B, H, W, C) uint8 batch: crop, flip, then jitter + normalise."""
    if aug is None or gen is None:
        return normalize(x, mean, std, channels_last=channels_last)
    x = random_crop(x, aug.crop_pad, gen)
    if aug.flip:
        x = random_flip(x, gen)
    return normalize(x, mean, std, gen, aug.brightness, aug.contrast, channels_last)
