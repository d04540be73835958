"""The batch loader and the batch augmentations."""
import numpy as np
import pytest
import torch

from imgclf.data.augment import augment_batch, color_jitter, random_crop, random_flip
from imgclf.data.loader import ArraySource, BatchLoader, to_device_float


def _source(n=103):
    x = np.arange(n, dtype=np.uint8).repeat(4 * 4 * 3).reshape(n, 4, 4, 3)  # pixel value = index
    return ArraySource(x, np.arange(n, dtype=np.int64))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_every_sample_once_per_epoch(prefetch):
    loader = BatchLoader(_source(), batch_size=10, seed=1, prefetch=prefetch)
    seen = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and x.shape[1:] == (4, 4, 3)
        assert torch.equal(x[:, 0, 0, 0].long(), y)  # images and labels stay paired
        seen += y.tolist()
    assert sorted(seen) == list(range(103)) and len(loader) == 11


def _order(seed, epoch):
    loader = BatchLoader(_source(), batch_size=10, seed=seed)
    loader.set_epoch(epoch)
    return [y.tolist() for _, y in loader]


def test_order_depends_only_on_seed_and_epoch():
    assert _order(1, 3) == _order(1, 3)
    assert _order(1, 3) != _order(1, 4)
    assert _order(1, 3) != _order(2, 3)


def test_ranks_shard_the_epoch():
    parts = []
    for rank in range(3):
        loader = BatchLoader(_source(100), batch_size=8, seed=0, rank=rank, world_size=3)
        parts.append([i for _, y in loader for i in y.tolist()])
    assert len({len(p) for p in parts}) == 1  # every rank takes the same number of steps
    assert set().union(*map(set, parts)) == set(range(100))
    assert sum(len(p) for p in parts) == 102  # 2 samples padded by wrap-around


def test_loader_errors_reach_the_consumer():
    class Broken:
        def __len__(self):
            return 10

        def get(self, idx):
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(BatchLoader(Broken(), 4))


def test_to_device_float_normalises():
    x = torch.full((2, 3, 3, 1), 255, dtype=torch.uint8)
    out = to_device_float(x, torch.tensor([0.5]), torch.tensor([0.25]), torch.device("cpu"))
    assert out.shape == (2, 1, 3, 3) and out.dtype == torch.float32 and torch.allclose(out, torch.tensor(2.0))


def _batch():
    return torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_augmentations_keep_shape_and_are_deterministic():
    x = _batch()
    for fn in (lambda g: random_crop(x, 2, g), lambda g: random_flip(x, g), lambda g: color_jitter(x, g),
               lambda g: augment_batch(x, g, 2, True, 0.2, 0.2)):
        a, b, c = fn(_gen(1)), fn(_gen(1)), fn(_gen(2))
        assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(32, 1, 1, 1)
    out = random_crop(x, 2, _gen())
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    offsets = set()
    for i in range(32):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets differ per image


def test_flip_mirrors_some_images_exactly():
    x = _batch()
    out = random_flip(x, _gen())
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(6)]
    kept = [torch.equal(out[i], x[i]) for i in range(6)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
