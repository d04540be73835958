"""Fingerprinted, atomic caches: reuse when unchanged, rebuild on any change, never trust a partial build."""
import csv
import os

import numpy as np
import pytest

from imgclf.data import cache as cache_mod
from imgclf.data.cache import build_cache, open_packed
from imgclf.data.images import decode
from imgclf.data.manifest import load_split
from imgclf.errors import ImgclfError


def test_packed_cache_holds_the_decoded_pixels(data_dir):
    info = build_cache(data_dir, size=12, channels=3)
    assert not info.reused and info.path.name.startswith("packed-")
    for split in ("train", "valid", "test"):
        x, y = open_packed(info.path, split)
        m = load_split(data_dir, split, info.meta["classes"] and tuple(info.meta["classes"]))
        assert x.dtype == np.uint8 and x.shape == (len(m), 12, 12, 3) and isinstance(x, np.memmap)
        assert np.array_equal(y, m.labels)
        assert np.array_equal(x[3], decode(m.paths[3], 12, 3))
    train = open_packed(info.path, "train")[0].reshape(-1, 3) / 255.0
    assert np.allclose(info.meta["mean"], train.mean(0), atol=1e-5)
    assert np.allclose(info.meta["std"], train.std(0), atol=1e-5)


def test_unchanged_input_reuses(data_dir):
    a = build_cache(data_dir, size=12)
    b = build_cache(data_dir, size=12)
    assert b.reused and b.path == a.path and "unchanged" in b.reason


def test_touched_file_rebuilds(data_dir):
    a = build_cache(data_dir, size=12)
    row = next(csv.DictReader(open(data_dir / "valid.csv")))
    p = data_dir / row["path"]
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    b = build_cache(data_dir, size=12)
    assert not b.reused and b.path != a.path
    assert "1 source file(s) changed" in b.reason and p.name in b.reason


def test_changed_manifest_rebuilds(data_dir):
    a = build_cache(data_dir, size=12)
    lines = (data_dir / "train.csv").read_text().splitlines(keepends=True)
    (data_dir / "train.csv").write_text("".join(lines[:-1]))
    b = build_cache(data_dir, size=12)
    assert not b.reused and b.path != a.path and "manifests changed" in b.reason
    assert b.meta["counts"]["train"] == a.meta["counts"]["train"] - 1


@pytest.mark.parametrize("change", [{"size": 10}, {"channels": 1}, {"resize": "pad"}])
def test_changed_settings_rebuild(data_dir, change):
    a = build_cache(data_dir, size=12)
    b = build_cache(data_dir, **{"size": 12, **change})
    assert not b.reused and b.path != a.path and "settings changed" in b.reason
    assert build_cache(data_dir, size=12).reused  # the first is still there and valid


def test_interrupted_build_is_never_trusted(data_dir, monkeypatch):
    real = cache_mod._write_packed
    calls = []

    def dies_on_second_split(tmp, split, *args):
        calls.append(split)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-build
        return real(tmp, split, *args)

    monkeypatch.setattr(cache_mod, "_write_packed", dies_on_second_split)
    with pytest.raises(KeyboardInterrupt):
        build_cache(data_dir, size=12)
    monkeypatch.setattr(cache_mod, "_write_packed", real)
    root = data_dir / "cache"
    assert not list(root.glob("packed-*"))  # nothing that looks complete
    info = build_cache(data_dir, size=12)
    assert not info.reused and info.reason == "no cache yet"


def test_killed_build_leftovers_are_ignored_and_cleaned(data_dir):
    root = data_dir / "cache"
    stale = root / ".tmp-packed-0123456789abcdef-999999999"  # a pid that cannot be alive
    stale.mkdir(parents=True)
    (stale / "train.npy").write_bytes(b"half")
    info = build_cache(data_dir, size=12)
    assert not info.reused and not stale.exists()


def test_npz_format_is_the_course_recipe(data_dir):
    info = build_cache(data_dir, size=12, fmt="npz")
    m = load_split(info.path, "train")
    assert len(m) == len(load_split(data_dir, "train"))
    assert all(p.endswith(".npz") for p in m.paths)
    with np.load(m.paths[0]) as z:
        img = z["image"]
    assert img.shape == (12, 12, 3) and img.dtype == np.uint8
    original = load_split(data_dir, "train").paths[0]
    assert np.array_equal(decode(m.paths[0], 12), img) and np.array_equal(decode(original, 12), img)


def test_parallel_build_equals_serial(data_dir, tmp_path):
    a = build_cache(data_dir, size=12, workers=1, cache_root=tmp_path / "c1")
    b = build_cache(data_dir, size=12, workers=2, cache_root=tmp_path / "c2")
    for s in ("train", "valid", "test"):
        assert np.array_equal(open_packed(a.path, s)[0], open_packed(b.path, s)[0])


def test_broken_meta_json(data_dir):
    a = build_cache(data_dir, size=12)
    (a.path / "meta.json").write_text("{")
    with pytest.raises(ImgclfError, match=rf"{a.path / 'meta.json'} line 1 column 2: not valid JSON.*"
                                          rf"delete the folder {a.path}"):
        build_cache(data_dir, size=12)  # the cache it would reuse: say which folder to delete
    b = build_cache(data_dir, size=10)  # an older cache's broken meta only loses the reason
    assert not b.reused and "unreadable" in b.reason
