"""Shared fixtures: a tiny generated image dataset and the optional real SIGNS data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIGNS = Path(__file__).resolve().parents[2] / "shared" / "data" / "signs"


def pattern_image(label: int, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A (size, size, 3) uint8 image whose bright region depends on the label, plus noise."""
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    h = size // 2
    region = [(slice(0, h), slice(None)), (slice(h, None), slice(None)), (slice(None), slice(0, h))][label % 3]
    img[region] = np.clip(img[region].astype(int) + 180, 0, 255).astype(np.uint8)
    return img


def make_image_folder(root: Path, n_per_class: int = 12, classes=("a", "b", "c"), layout: str = "filename",
                      size: int = 16, seed: int = 0) -> Path:
    """Write PNGs labelled by file name (`a_0003.png`) or by folder (`a/0003.png`)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k, c in enumerate(classes):
        for i in range(n_per_class):
            path = root / f"{c}_{i:04d}.png" if layout == "filename" else root / c / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pattern_image(k, rng, size)).save(path)
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def data_dir(tmp_path: Path, image_folder: Path) -> Path:
    from imgclf.data.manifest import make_manifests

    out = tmp_path / "data"
    make_manifests(image_folder, out, labels="filename", split="0.6,0.2,0.2", seed=1)
    return out


# A config small enough that a CLI or fit test takes a second or two.
TINY = {"image_size": 16, "num_epochs": 2, "batch_size": 8, "num_channels": 4, "fc_units": 16}


@pytest.fixture
def signs() -> Path:
    if not (SIGNS / "train").is_dir():
        pytest.skip("../shared/data/signs is not present")
    return SIGNS
