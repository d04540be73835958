"""The batch loader and the batch augmentations."""
import numpy as np
import pytest
import torch

from imgclf.data.augment import Augment, augment_and_normalize, normalize, random_crop, random_flip
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
    return torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


MEAN, STD = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])


def test_augmentations_keep_shape_and_are_deterministic():
    x = _batch()
    aug = Augment(crop_pad=2, flip=True, brightness=0.2, contrast=0.2)
    for fn in (lambda g: random_crop(x, 2, g), lambda g: random_flip(x, g),
               lambda g: normalize(x, MEAN, STD, g, 0.2, 0.2), lambda g: augment_and_normalize(x, MEAN, STD, g, aug)):
        a, b, c = fn(_gen(1)), fn(_gen(1)), fn(_gen(2))
        assert a.shape[0] == 6 and a.shape[1:] in (x.shape[1:], (3, 16, 16))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(1, 65, dtype=torch.uint8).view(1, 8, 8, 1).repeat(32, 1, 1, 3)
    out = random_crop(x, 2, _gen())
    assert out.dtype == torch.uint8 and out.shape == x.shape
    padded = torch.nn.functional.pad(x, (0, 0, 2, 2, 2, 2))
    offsets = set()
    for i in range(32):
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets differ per image


def test_flip_mirrors_some_images_exactly():
    x = _batch()
    out = random_flip(x, _gen())
    flipped = [torch.equal(out[i], x[i].flip(1)) for i in range(6)]
    kept = [torch.equal(out[i], x[i]) for i in range(6)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize_matches_the_formula(channels_last):
    x = _batch()
    ref = (x.permute(0, 3, 1, 2).float() / 255 - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)
    out = normalize(x, MEAN, STD, channels_last=channels_last)
    assert out.shape == (6, 3, 16, 16) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_jitter_matches_the_unfused_formula(channels_last):
    x = _batch()
    out = normalize(x, MEAN, STD, _gen(3), brightness=0.3, contrast=0.4, channels_last=channels_last)
    g = _gen(3)
    k = 1 + (2 * torch.rand(6, generator=g) - 1) * 0.4
    beta = (2 * torch.rand(6, generator=g) - 1) * 0.3
    y = (x.permute(0, 3, 1, 2).float() / 255 - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    ref = k.view(-1, 1, 1, 1) * (y - m) + m + beta.view(-1, 1, 1, 1)
    assert torch.allclose(out, ref, atol=1e-4)
    assert not torch.allclose(out, y, atol=1e-2)


def test_prefetch_only_where_a_thread_overlaps_real_work(tmp_path):
    from imgclf.data.loader import FileSource, prefetch_depth

    memmap = ArraySource(np.zeros((4, 2, 2, 3), np.uint8), np.zeros(4, np.int64))
    files = FileSource.__new__(FileSource)  # only its type matters here
    assert prefetch_depth(memmap, torch.device("cpu")) == 0  # a gather is cheap next to a CPU step
    assert prefetch_depth(files, torch.device("cpu")) == 2  # decoding overlaps the step
    assert prefetch_depth(memmap, torch.device("cuda")) == 2  # host gathers overlap device compute
