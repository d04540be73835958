"""Decoding one image into a fixed-size uint8 array, the same way for training and prediction.

Mode conversion (documented in the README, "How images are preprocessed"):
- EXIF orientation is applied first, so a photo taken sideways is seen upright.
- Alpha (RGBA, LA, PA, or P with a transparent colour) is composited over white.
- Palette (P) images are expanded to their colours; CMYK/YCbCr/1-bit are converted by Pillow.
- 16-bit and 32-bit integer images are scaled linearly to 0..255 (65535 → 255); float images
  are assumed to be in 0..1.
- channels=3 gives RGB (grey images are repeated); channels=1 gives luma L = 0.299R+0.587G+0.114B.

Resize policies: `squash` stretches to size×size; `center-crop` scales the short side to size and
crops the middle; `pad` scales the long side to size and pads the rest with black. All use
bilinear resampling with antialiasing (Pillow's), as CS230's build_dataset.py does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImgclfError

RESIZE_POLICIES = ("squash", "center-crop", "pad")
# Pillow's integer grey modes: 16-bit PNG/TIFF open as I;16 (B/L: byte order), 32-bit ones as I,
# and older Pillow opened 16-bit PNGs as I too. All are read as 0..65535 (larger I values clip).
WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageReadError(ImgclfError):
    """An image that is missing or cannot be decoded."""


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image, EXIF orientation applied."""
    path = str(path)  # not a manifest's np.str_, which Pillow's messages would show as np.str_('...')
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise ImageReadError(f"image {path} is missing") from None
    except Exception as e:  # Pillow raises many types for broken files
        raise ImageReadError(f"cannot read image {path} ({type(e).__name__}: {e})") from None


def _to_8bit(im: Image.Image) -> Image.Image:
    """Wide integer (0..65535) or float (0..1) single-channel images → 8-bit L.

    The scale follows from the mode, never from the pixels: a dark 16-bit image stays dark.
    """
    a = np.asarray(im)
    if im.mode == "F":
        a = np.clip(a, 0.0, 1.0) * 255.0
    else:
        a = a.astype(np.float64) * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to RGB (channels=3) or L (channels=1) as the module doc says."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in WIDE_INT_MODES or im.mode == "F":
        im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba).convert("RGB")
    if channels == 1:
        return im if im.mode == "L" else im.convert("L")
    return im if im.mode == "RGB" else im.convert("RGB")


def resize(im: Image.Image, size: int, policy: str = "squash") -> Image.Image:
    if policy not in RESIZE_POLICIES:
        raise ImgclfError(f"resize policy {policy!r} is not one of {', '.join(RESIZE_POLICIES)}")
    w, h = im.size
    if policy == "squash":
        return im if (w, h) == (size, size) else im.resize((size, size), Image.Resampling.BILINEAR)
    if policy == "center-crop":
        return ImageOps.fit(im, (size, size), Image.Resampling.BILINEAR)
    scale = size / max(w, h)
    inner = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    out = Image.new(im.mode, (size, size))
    out.paste(inner, ((size - inner.size[0]) // 2, (size - inner.size[1]) // 2))
    return out


def decode(path: str | Path, size: int, channels: int = 3, policy: str = "squash") -> np.ndarray:
    """One image file (or a cached .npz of one) → (size, size, channels) uint8."""
    if str(path).endswith(".npz"):
        return load_npz(path)
    im = resize(to_mode(open_image(path), channels), size, policy)
    return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)


def load_npz(path: str | Path) -> np.ndarray:
    """A course-style per-image cache file: key `image`, (H, W, C) uint8."""
    path = str(path)  # not np.str_, which numpy's messages would show as np.str_('...')
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["image"]
    except FileNotFoundError:
        raise ImageReadError(f"cached image {path} is missing") from None
    except Exception as e:
        raise ImageReadError(f"cannot read cached image {path} ({type(e).__name__}: {e})") from None
