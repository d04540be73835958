"""Batches of uint8 pixels: a seeded permutation per epoch, gathers, and a prefetch thread.

Sources hand out (x, y) for an index array; x is (B, H, W, C) uint8. `ArraySource` gathers from
a packed cache's memmap (no decoding, no worker processes); `FileSource` decodes image or .npz
files on demand (the `--no-cache` path). Pixels stay uint8 until `to_device_float` runs on the
model's device: a uint8 batch is 4× fewer bytes to move than float32.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .augment import normalize
from .images import ImageReadError, decode
from .manifest import Manifest
from ..errors import ImgclfError


@dataclass(frozen=True)
class ArraySource:
    x: np.ndarray  # (N, H, W, C) uint8, usually a read-only memmap
    y: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labels(self) -> np.ndarray:
        return self.y

    def get(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x[idx], self.y[idx]


@dataclass(frozen=True)
class FileSource:
    manifest: Manifest
    size: int
    channels: int
    resize: str = "squash"

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def labels(self) -> np.ndarray:
        return self.manifest.labels

    def get(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((len(idx), self.size, self.size, self.channels), np.uint8)
        for j, i in enumerate(idx):
            try:
                img = decode(self.manifest.paths[i], self.size, self.channels, self.resize)
            except ImageReadError as e:
                raise ImgclfError(f"{self.manifest.where(int(i))}: {e}; replace the file or delete the row") from None
            if img.shape != x.shape[1:]:
                raise ImgclfError(f"{self.manifest.where(int(i))}: cached image has shape {img.shape}, "
                                  f"expected {x.shape[1:]}; rebuild the cache with these settings")
            x[j] = img
        return x, self.manifest.labels[idx]


def prefetch_depth(source, device: torch.device) -> int:
    """Batches to gather ahead in a background thread for `source` feeding `device`.

    2 where the thread overlaps real work: decoding files (`FileSource`), or host gathers while an
    accelerator computes. 0 for a memmap on the CPU: a gather takes about 0.1 ms a batch, next to a
    training step of about 100 ms, and the thread would only take a core from torch's intra-op
    threads (bench/train_overhead.py measured the loop 5–8 % slower with it on 2 cores).
    """
    return 2 if device.type != "cpu" or isinstance(source, FileSource) else 0


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of an epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class BatchLoader:
    """Iterate (x uint8 (B,H,W,C), y int64 (B,)) torch batches, prefetched by one thread.

    Sharded by rank for DDP: each of `world_size` ranks sees a disjoint 1/world_size of every
    epoch's permutation (padded by wrap-around so all ranks take the same number of steps).
    """

    def __init__(self, source, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, prefetch: int = 2) -> None:
        if batch_size < 1:
            raise ImgclfError(f"batch_size {batch_size} must be at least 1")
        self.source, self.batch_size, self.shuffle, self.seed = source, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size, self.prefetch = drop_last, rank, world_size, prefetch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        n = len(self.source)
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else np.arange(n)
        if self.world_size > 1:
            per_rank = -(-n // self.world_size)
            order = np.resize(order, per_rank * self.world_size)[self.rank::self.world_size]
        return order

    def batches(self) -> list[np.ndarray]:
        order = self.indices()
        cuts = range(0, len(order), self.batch_size)
        # Sorted within a batch: a memmap is then read front to back. Batch membership is what is
        # random; sorting here (not in a source) keeps every source's batches identical.
        out = [np.sort(order[i:i + self.batch_size]) for i in cuts]
        if self.drop_last and out and len(out[-1]) < self.batch_size and len(out) > 1:
            out.pop()
        return out

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from batch index `start` on (a resumed epoch skips what it did)."""
        batches = self.batches()[start:]
        if self.prefetch <= 0:
            for idx in batches:
                x, y = self.source.get(idx)
                yield torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
            return
        yield from _prefetched(self.source, batches, self.prefetch)


_DONE = object()


def _prefetched(source, batches: list[np.ndarray], depth: int):
    """Run source.get in a background thread, `depth` batches ahead; errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for idx in batches:
                if stop.is_set():
                    return
                x, y = source.get(idx)
                q.put((torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)))
            q.put(_DONE)
        except BaseException as e:  # hand the error to the consumer
            q.put(e)

    t = threading.Thread(target=work, name="imgclf-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.01)


def to_device_float(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
                    channels_last: bool = False) -> torch.Tensor:
    """(B, H, W, C) uint8 on the host → (B, C, H, W) float32 on `device`, normalised (no augmentation)."""
    return normalize(x.to(device, non_blocking=True), mean, std, channels_last=channels_last)
