"""From a data directory to loader sources: the packed cache by default, lazy decoding on request."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .cache import CacheInfo, ChannelStats, build_cache, open_packed, present_splits
from .loader import ArraySource, BatchLoader, FileSource
from .manifest import check_files_exist, load_data
from ..errors import ImgclfError

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    sources: dict  # split → ArraySource | FileSource
    classes: tuple[str, ...]
    mean: list[float]  # per channel, pixel/255 units, from train
    std: list[float]
    cache: CacheInfo | None


def prepare(data_dir: str | Path, splits: tuple[str, ...], size: int, channels: int, resize: str = "squash",
            use_cache: bool = True, progress: bool = False, workers: int | None = None) -> Prepared:
    """Sources for `splits` plus the train set's classes and per-channel mean/std."""
    data_dir = Path(data_dir)
    missing = [s for s in splits if s not in present_splits(data_dir)]
    if missing and (data_dir / "train.csv").exists():
        raise ImgclfError(f"{data_dir}: no {missing[0]}.csv; add it or re-run `imgclf manifest`")
    if use_cache:
        info = build_cache(data_dir, size, channels, resize, "packed", workers=workers, progress=progress)
        sources = {s: ArraySource(*open_packed(info.path, s)) for s in splits}
        return Prepared(sources, tuple(info.meta["classes"]), info.meta["mean"], info.meta["std"], info)
    # Every split present, as the cache checks them: a bad test row fails now, not after training.
    data = load_data(data_dir, present_splits(data_dir))
    for m in data.values():
        check_files_exist(m)
    sources = {s: FileSource(data[s], size, channels, resize) for s in ("train", *splits)}
    mean, std = _stream_stats(sources["train"]) if "train" in sources else (None, None)
    return Prepared(sources, data["train"].classes, mean, std, None)


def _stream_stats(source: FileSource) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of a lazily decoded split (one decode pass, bounded memory), computed
    exactly as the cache computes them so both paths normalise identically."""
    stats = ChannelStats(source.channels)
    for x, _ in BatchLoader(source, 256, shuffle=False):
        stats.add(x.numpy())
    r = stats.result()
    return r["mean"], r["std"]
