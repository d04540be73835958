"""Preprocess once: decode + resize every image one time and keep the pixels on disk.

Two formats:
- `packed` (default): per split one memory-mappable `<split>.npy` of shape (N, H, W, C) uint8,
  `<split>_labels.npy` (N,) int64, and `meta.json` (fingerprint, settings, train mean/std).
- `npz`: the course's recipe, one `.npz` per image (key `image`, (H, W, C) uint8) plus
  `<split>.csv` manifests pointing at them, so `imgclf train --data CACHE_DIR` reads them.

A cache lives in `DIR/cache/<format>-<fingerprint>/`. The fingerprint covers the manifests'
bytes, every source file's size and mtime, the transform settings and the imgclf version, so a
stale cache is never read. A build writes into a temp folder and renames it into place when it
is complete: an interrupted build leaves nothing that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ImgclfError
from ..fileio import JsonFileError, atomic_write_json, pid_alive, read_json
from .images import RESIZE_POLICIES, ImageReadError, decode
from .manifest import SPLITS, Manifest, load_data, write_csv
from .parallel import map_chunks

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
FORMATS = ("packed", "npz")
CHUNK = 256  # images per worker task: big enough to amortise IPC, small enough for a smooth bar


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    reused: bool
    reason: str  # why it was built, or that it was reused
    meta: dict


def present_splits(data_dir: Path) -> tuple[str, ...]:
    return tuple(s for s in SPLITS if (data_dir / f"{s}.csv").exists())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _identity(m: Manifest) -> np.ndarray:
    """(N, 2) int64 of (size, mtime_ns) per source file; a missing file names its CSV row."""
    out = np.empty((len(m), 2), np.int64)
    for i, p in enumerate(m.paths):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise ImgclfError(f"{m.where(i)}: image {p} is missing; restore it or delete the row") from None
        out[i] = (st.st_size, st.st_mtime_ns)
    return out


def fingerprint(data_dir: Path, data: dict[str, Manifest], settings: dict) -> tuple[str, dict, dict]:
    """(fingerprint, its parts, per-split file identities)."""
    files = [data_dir / f"{s}.csv" for s in data] + [data_dir / "classes.json"]
    manifests = _sha(b"".join(f.read_bytes() if f.exists() else b"-" for f in files))
    ident = {s: _identity(m) for s, m in data.items()}
    sources = _sha(b"".join(ident[s].tobytes() for s in data))
    parts = {"manifests": manifests, "sources": sources, "settings": settings,
             "imgclf": __version__, "cache_format": CACHE_FORMAT_VERSION}
    return _sha(json.dumps(parts, sort_keys=True).encode())[:16], parts, ident


def _read_meta(cache_dir: Path) -> dict:
    return read_json(cache_dir / "meta.json", f"delete the folder {cache_dir} and run again to rebuild the cache")


def _why_rebuild(cache_root: Path, fmt: str, parts: dict, ident: dict, data: dict[str, Manifest]) -> str:
    """Compare with the newest earlier cache of this format and say what changed."""
    olds = sorted((p for p in cache_root.glob(f"{fmt}-*") if (p / "meta.json").exists()),
                  key=lambda p: p.stat().st_mtime)
    if not olds:
        return "no cache yet"
    try:
        old = _read_meta(olds[-1])
    except JsonFileError:  # only the reason is lost; the new cache does not depend on the old one
        return f"the earlier cache's {olds[-1] / 'meta.json'} is unreadable"
    prev = old.get("parts", {})
    reasons = []
    if prev.get("manifests") != parts["manifests"]:
        reasons.append("the manifests changed")
    if prev.get("settings") != parts["settings"]:
        diff = [f"{k} {prev.get('settings', {}).get(k)}→{v}" for k, v in parts["settings"].items()
                if prev.get("settings", {}).get(k) != v]
        reasons.append("settings changed (" + ", ".join(diff) + ")")
    if prev.get("imgclf") != parts["imgclf"] or prev.get("cache_format") != parts["cache_format"]:
        reasons.append("imgclf version changed")
    if prev.get("sources") != parts["sources"] and prev.get("manifests") == parts["manifests"]:
        n_changed, example = 0, None
        src = olds[-1] / "sources.npz"
        if src.exists():
            with np.load(src) as z:
                for s, m in data.items():
                    if s in z.files and z[s].shape == ident[s].shape:
                        bad = np.flatnonzero((z[s] != ident[s]).any(axis=1))
                        n_changed += len(bad)
                        example = example or (str(m.paths[bad[0]]) if len(bad) else None)
        reasons.append(f"{n_changed} source file(s) changed (size or mtime), e.g. {example}"
                       if example else "source files changed (size or mtime)")
    return "; ".join(reasons) or "the earlier cache differs"


def _decode_chunk(args: tuple) -> tuple[int, np.ndarray | str]:
    """Worker task: decode paths[start:start+k]; on failure return the index and what to do."""
    start, paths, size, channels, policy = args
    out = np.empty((len(paths), size, size, channels), np.uint8)  # (k, H, W, C)
    for j, p in enumerate(paths):
        try:
            img = decode(p, size, channels, policy)
        except ImageReadError as e:
            return start + j, f"{e}; replace the file or delete the row"
        if img.shape != out.shape[1:]:  # a .npz from a cache built with other settings
            return start + j, (f"cached image {p} has shape {img.shape}, expected {out.shape[1:]}; rebuild the "
                               f"cache from the original data with `imgclf cache --size {size} --channels "
                               f"{channels} --format npz`, or set image_size and channels to match it")
        out[j] = img
    return start, out


def _decode_all(m: Manifest, settings: dict, workers: int, progress: bool, sink) -> None:
    """Decode a split in chunks (in parallel when workers > 1) and hand each chunk to `sink`."""
    size, channels, policy = settings["size"], settings["channels"], settings["resize"]
    tasks = [(i, m.paths[i:i + CHUNK], size, channels, policy) for i in range(0, len(m), CHUNK)]
    for start, arr in map_chunks(_decode_chunk, tasks, workers, len(m), f"cache {m.csv_path.stem}", progress,
                                 count=lambda r: len(r[1])):
        if isinstance(arr, str):
            raise ImgclfError(f"{m.where(start)}: {arr}")
        sink(start, arr)


def _clean_stale_tmp(cache_root: Path) -> None:
    for p in cache_root.glob(".tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def default_workers(n_images: int) -> int:
    # Process start-up costs more than decoding a few thousand small images in-process.
    return 1 if n_images < 4000 else max(1, min(8, os.cpu_count() or 1))


def build_cache(data_dir: str | Path, size: int = 64, channels: int = 3, resize: str = "squash",
                fmt: str = "packed", workers: int | None = None, progress: bool = False,
                cache_root: str | Path | None = None) -> CacheInfo:
    """Build (or reuse) the cache of every split present in `data_dir`; returns where it is."""
    data_dir = Path(data_dir)
    if fmt not in FORMATS:
        raise ImgclfError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if resize not in RESIZE_POLICIES:
        raise ImgclfError(f"--resize {resize!r} is not one of {', '.join(RESIZE_POLICIES)}")
    if channels not in (1, 3):
        raise ImgclfError(f"--channels {channels} must be 1 (grey) or 3 (RGB)")
    if size < 1:
        raise ImgclfError(f"--size {size} must be a positive number of pixels")
    if workers is not None and workers < 1:
        raise ImgclfError(f"--workers {workers} must be at least 1 (1 decodes in this process); "
                          "or leave it out to choose automatically")
    data = load_data(data_dir, present_splits(data_dir))
    settings = {"size": size, "channels": channels, "resize": resize, "format": fmt}
    fp, parts, ident = fingerprint(data_dir, data, settings)
    cache_root = Path(cache_root) if cache_root else data_dir / "cache"
    final = cache_root / f"{fmt}-{fp}"
    if (final / "meta.json").exists():
        meta = _read_meta(final)
        log.info("cache: reusing %s (inputs unchanged)", final)
        return CacheInfo(final, True, "inputs unchanged", meta)
    reason = _why_rebuild(cache_root, fmt, parts, ident, data) if cache_root.exists() else "no cache yet"
    log.info("cache: building %s (%s)", final, reason)
    cache_root.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(cache_root)
    tmp = cache_root / f".tmp-{fmt}-{fp}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    try:
        n_workers = workers or default_workers(sum(len(m) for m in data.values()))
        writer = _write_packed if fmt == "packed" else _write_npz
        stats = {s: writer(tmp, s, m, settings, n_workers, progress) for s, m in data.items()}
        np.savez(tmp / "sources.npz", **ident)
        meta = {"fingerprint": fp, "parts": parts, "format": fmt, "settings": settings,
                "classes": list(data["train"].classes), "counts": {s: len(m) for s, m in data.items()},
                "mean": stats["train"]["mean"], "std": stats["train"]["std"],
                "source_dir": str(data_dir.resolve()), "build_seconds": round(time.perf_counter() - t0, 3),
                "workers": n_workers}
        atomic_write_json(tmp / "meta.json", meta)  # last: a folder without it is never trusted
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").exists():
                raise
            # Another process (a search worker, a DDP rank) built the same cache meanwhile: use theirs.
            shutil.rmtree(tmp, ignore_errors=True)
            return CacheInfo(final, True, "built by another process meanwhile", _read_meta(final))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("cache: built %d images in %.1fs", sum(meta["counts"].values()), meta["build_seconds"])
    return CacheInfo(final, False, reason, meta)


class ChannelStats:
    """Per-channel histograms of the uint8 values, streamed chunk by chunk.

    Counting 256 values per channel is exact and, per bench/loader.py's profile, several times
    cheaper than summing float64 squares, which kept a second decode worker from paying off.
    """

    def __init__(self, channels: int) -> None:
        self.hist = np.zeros((channels, 256), np.int64)

    def add(self, arr: np.ndarray) -> None:
        for c in range(arr.shape[-1]):
            self.hist[c] += np.bincount(arr[..., c].ravel(), minlength=256)

    def result(self) -> dict:
        v = np.arange(256, dtype=np.float64) / 255.0
        n = np.maximum(self.hist.sum(1), 1)
        mean = (self.hist * v).sum(1) / n
        std = np.sqrt(np.maximum((self.hist * v * v).sum(1) / n - mean * mean, 0.0))
        return {"mean": [round(float(x), 6) for x in mean], "std": [round(float(x), 6) for x in std]}


def _write_packed(tmp: Path, split: str, m: Manifest, settings: dict, workers: int, progress: bool) -> dict:
    size, channels = settings["size"], settings["channels"]
    x = np.lib.format.open_memmap(tmp / f"{split}.npy", mode="w+", dtype=np.uint8,
                                  shape=(len(m), size, size, channels))  # (N, H, W, C) uint8
    stats = ChannelStats(channels)

    def sink(start: int, arr: np.ndarray) -> None:
        x[start:start + len(arr)] = arr
        stats.add(arr)

    _decode_all(m, settings, workers, progress, sink)
    x.flush()
    del x
    np.save(tmp / f"{split}_labels.npy", m.labels)
    return stats.result()


def _write_npz(tmp: Path, split: str, m: Manifest, settings: dict, workers: int, progress: bool) -> dict:
    (tmp / split).mkdir()
    stats = ChannelStats(settings["channels"])

    def sink(start: int, arr: np.ndarray) -> None:
        for j, img in enumerate(arr):
            np.savez(tmp / split / f"{start + j:07d}.npz", image=img, label=m.labels[start + j])
        stats.add(arr)

    _decode_all(m, settings, workers, progress, sink)
    final_paths = [tmp / split / f"{i:07d}.npz" for i in range(len(m))]
    write_csv(tmp / f"{split}.csv", final_paths, [m.classes[c] for c in m.labels])
    if split == "train":
        atomic_write_json(tmp / "classes.json", list(m.classes))
    return stats.result()


def open_packed(cache_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): x is a read-only memmap (N, H, W, C) uint8; y (N,) int64."""
    cache_dir = Path(cache_dir)
    f = cache_dir / f"{split}.npy"
    if not f.exists():
        raise ImgclfError(f"{cache_dir}: no {split} split in this cache; add {split}.csv and rebuild")
    return np.load(f, mmap_mode="r"), np.load(cache_dir / f"{split}_labels.npy")
