"""Loader benchmark (issue 3): images/s of the course's loaders against imgclf's packed loader.

    .venv/bin/python bench/loader.py            # SIGNS + 20,000 generated images at 64 and 128 px
    .venv/bin/python bench/loader.py --quick    # smoke check: 2,000 generated images, fewer batches

Every loader delivers the same batches: 32 images at the set's own size (64 or 128 px; the course
resizes to 64, and on the 128 px set we resize to 128 so that all columns move the same bytes).
- a: the course's loader. A torch Dataset reads the CSV; each item is PIL open → RGB → resize
     (bilinear) → numpy → float tensor /255 (what torchvision's ToTensor does), in a DataLoader
     with num_workers=os.cpu_count(), batch_size=32, shuffle=True.
- b: the course's .npz-per-image cache (`build_cache(fmt="npz")`), np.load(path)["image"], same DataLoader.
- c: imgclf: `open_packed` → `ArraySource` → `BatchLoader(32, shuffle=True)`, then per batch
     `augment_and_normalize(crop_pad=4, brightness=0.1, contrast=0.1)` on the CPU: the crop runs on
     the uint8 batch and the jitter is folded into normalisation's multiply-add. The float batch
     comes out in the layout imgclf trains with by default on this CPU (channels_last where bf16 is
     fast, as `Trainer` chooses; the header line says which).
     c_load is the BatchLoader alone and c0 adds `normalize` only: the differences show the split;
     c1 is c with torch.set_num_threads(1), and a per-step profile follows.
- d: the limit: numpy gathers x[np.sort(idx)] from an in-RAM uint8 copy, same permutation and batches.

Each loader is a stream of consecutive epochs (a DataLoader restarts its workers each epoch, as in
the course). We skip a few warm-up batches, then time `repeats` windows of k batches and report the
median images/s. k is one epoch for c and d (100 batches for a, 200 for b), capped at about
--window seconds. a and b are timed on fewer batches than an epoch of the generated sets, so their
worker start-up is then left out and up to 2×workers prefetched batches come free: both flatter a
and b. Also printed: packed cache build speed with 1 and 2 workers, and the peak RSS of a fresh
process iterating the largest packed cache. Generated images and caches stay in --out (git-ignored)
and are reused by the next run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from imgclf.data.augment import Augment, augment_and_normalize, normalize, random_crop
from imgclf.data.cache import build_cache, open_packed
from imgclf.data.loader import ArraySource, BatchLoader
from imgclf.data.manifest import make_manifests, write_csv
from imgclf.fileio import atomic_write_json
from imgclf.train.loop import bf16_is_fast

BATCH = 32  # CS230's batch size
SIGNS = Path(__file__).resolve().parents[2] / "shared" / "data" / "signs"
N_CLASSES = 6  # generated labels 0..5, like SIGNS
OUT = Path(__file__).resolve().parent / "out"  # git-ignored


# ---------------------------------------------------------------------------------------------
# Data: SIGNS manifests and generated images


def signs_data(signs: Path, out: Path) -> Path:
    data_dir = out / "signs"
    if not (data_dir / "train.csv").exists():
        make_manifests(signs / "train", data_dir, test_src=signs / "test")
    return data_dir


def smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: coarse noise upsampled bicubically plus a little grain. At quality 90
    a 64 px one is ~2.2 KB of JPEG (a SIGNS image: ~1.2 KB), so decoding does real work."""
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), np.int16)
    grain = rng.normal(0, 6, smooth.shape)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def generated_data(out: Path, n_images: int, size: int) -> Path:
    """A data dir with train.csv of `n_images` JPEGs, label = first char of the name; reused."""
    data_dir = out / f"gen-{n_images}x{size}px"
    if (data_dir / "train.csv").exists():
        return data_dir
    img_dir = data_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([n_images, size])
    paths, labels = [], []
    t0 = time.perf_counter()
    for i in range(n_images):
        label = str(i % N_CLASSES)
        p = img_dir / f"{label}_{i:06d}.jpg"
        Image.fromarray(smooth_noise(rng, size)).save(p, quality=90)
        paths.append(p)
        labels.append(label)
    atomic_write_json(data_dir / "classes.json", [str(c) for c in range(N_CLASSES)])
    write_csv(data_dir / "train.csv", paths, labels)  # last: its presence means the set is complete
    print(f"generated {n_images} images of {size}x{size} in {time.perf_counter() - t0:.1f}s "
          f"({data_dir})", file=sys.stderr)
    return data_dir


# ---------------------------------------------------------------------------------------------
# The course's loaders (a, b)


def read_csv(csv_path: Path) -> tuple[list[Path], list[int]]:
    """The course reads its file list once; labels are indices into the sorted label names."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = sorted({r["label"] for r in rows})
    return [csv_path.parent / r["path"] for r in rows], [names.index(r["label"]) for r in rows]


class CourseImages(Dataset):
    """CS230's loader: decode and resize every item on every epoch."""

    def __init__(self, csv_path: Path, size: int) -> None:
        self.paths, self.labels = read_csv(csv_path)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        im = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        return to_tensor(np.asarray(im)), self.labels[i]


class CourseNpz(CourseImages):
    """The course's cache: one .npz per image, written by build_cache(fmt="npz")."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_tensor(np.load(self.paths[i])["image"]), self.labels[i]


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 → (C, H, W) float32 in 0..1, as torchvision's ToTensor."""
    return torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255.0)


def dataloader_stream(dataset) -> Iterator[int]:
    """Consecutive epochs of the course's DataLoader; yields batch sizes."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=os.cpu_count() or 1)
    for _ in count():
        for x, _y in loader:
            yield len(x)


# ---------------------------------------------------------------------------------------------
# imgclf's packed loader (c) and the numpy limit (d)


AUG = Augment(crop_pad=4, brightness=0.1, contrast=0.1)  # the training default at 64 px
CHANNELS_LAST = bf16_is_fast(torch.device("cpu"))  # the Trainer's default layout on this CPU (precision=auto)


def packed_stream(source, mean, std, stage: str) -> Iterator[int]:
    """stage: 'load' (BatchLoader only), 'float' (+normalize) or 'augment' (+augment_and_normalize)."""
    loader, gen = BatchLoader(source, BATCH, shuffle=True), torch.Generator().manual_seed(0)
    for epoch in count():
        loader.set_epoch(epoch)
        for x, _y in loader:  # (B, H, W, C) uint8
            if stage == "float":
                x = normalize(x, mean, std, channels_last=CHANNELS_LAST)  # (B, C, H, W) float32
            elif stage == "augment":  # crop on uint8, jitter fused into the float pass
                x = augment_and_normalize(x, mean, std, gen, AUG, channels_last=CHANNELS_LAST)
            yield len(x)


def copy_stream(x_ram: np.ndarray, source) -> Iterator[int]:
    """The same permutation and batches as c, as bare numpy gathers from RAM."""
    loader = BatchLoader(source, BATCH, shuffle=True)
    for epoch in count():
        loader.set_epoch(epoch)
        for idx in loader.batches():
            yield len(x_ram[np.sort(idx)])


def profile_stages(source, mean, std, n_batches: int) -> dict[str, float]:
    """Median µs per batch of each step of c, run one after another in this thread.

    augment_and_normalize is random_crop on the uint8 batch, then normalize with the colour jitter
    folded into its multiply-add.
    """
    gen = torch.Generator().manual_seed(0)
    steps: dict[str, list[float]] = {"gather": [], "normalize": [], "random_crop": [], "jitter+normalize": []}
    batches = BatchLoader(source, BATCH, shuffle=True).batches()[:n_batches]
    before = resource.getrusage(resource.RUSAGE_SELF)
    for idx in batches:
        t = [time.perf_counter()]
        x = torch.from_numpy(np.ascontiguousarray(source.get(idx)[0]))  # (B, H, W, C) uint8
        t.append(time.perf_counter())
        normalize(x, mean, std, channels_last=CHANNELS_LAST)  # (B, C, H, W) float32, no augmentation
        t.append(time.perf_counter())
        x = random_crop(x, 4, gen)  # (B, H, W, C) uint8
        t.append(time.perf_counter())
        normalize(x, mean, std, gen, brightness=0.1, contrast=0.1, channels_last=CHANNELS_LAST)
        t.append(time.perf_counter())
        for k, t0, t1 in zip(steps, t, t[1:]):
            steps[k].append((t1 - t0) * 1e6)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out = {k: statistics.median(v) for k, v in steps.items()}
    # Fresh multi-MB float temporaries that the allocator hands back to the kernel fault in anew.
    out["page_faults"] = (after.ru_minflt - before.ru_minflt) / len(batches)
    out["sys_share"] = (after.ru_stime - before.ru_stime) / max(
        after.ru_stime - before.ru_stime + after.ru_utime - before.ru_utime, 1e-9)
    return out


# ---------------------------------------------------------------------------------------------
# Measuring


def measure(make_stream: Callable[[], Iterator[int]], n_warm: int, max_batches: int, repeats: int,
            window_s: float) -> tuple[list[float], int]:
    """(images/s of each of `repeats` windows, batches per window), after n_warm warm-up batches.

    A window is max_batches, or fewer when the warm-up says that would take over window_s
    (a slow loader on a busy machine must not stretch the run); never fewer than 10.
    """
    stream = make_stream()
    try:
        next(stream)  # start-up: DataLoader workers, the prefetch thread
        t0 = time.perf_counter()
        for _ in range(n_warm):
            next(stream)
        per_batch = (time.perf_counter() - t0) / n_warm
        n_batches = max(10, min(max_batches, int(window_s / max(per_batch, 1e-9))))
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            n_images = sum(next(stream) for _ in range(n_batches))
            rates.append(n_images / (time.perf_counter() - t0))
        return rates, n_batches
    finally:
        stream.close()  # stops DataLoader workers before the next loader is timed


@contextmanager
def torch_threads(n: int | None):
    """Run with n torch intra-op threads (None: leave torch's default), then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(n or old)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# A fresh interpreter whose __main__ is not this file: the cache's spawned workers re-import
# __main__, and this file imports torch, which the `imgclf cache` CLI path never does.
BUILD = """import sys, time
from imgclf.data.cache import build_cache
t0 = time.perf_counter()
info = build_cache(sys.argv[1], int(sys.argv[2]), fmt="packed", workers=int(sys.argv[3]), cache_root=sys.argv[4])
assert not info.reused
print(sum(info.meta["counts"].values()) / (time.perf_counter() - t0))
"""


def build_rate(data_dir: Path, size: int, workers: int, scratch: Path) -> float:
    """images/s of a packed cache build from scratch (a fresh cache root, nothing reused)."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix="build-") as root:
        cmd = [sys.executable, "-c", BUILD, str(data_dir), str(size), str(workers), root]
        return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def rss_child(cache_dir: str) -> None:
    """Run in a fresh process: memmap the packed train split, iterate one epoch, report RSS."""
    source = ArraySource(*open_packed(cache_dir, "train"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    n_images = sum(len(x) for x, _y in BatchLoader(source, BATCH, shuffle=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak, "n_images": n_images,
                      "npy_resident_kib": mapped_kib(Path(cache_dir) / "train.npy")}))


def mapped_kib(path: Path) -> int:
    """KiB of `path` resident in this process's mappings now (Rss lines of /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:  # a mapping header: "start-end perms offset dev inode path"
            inside = line.endswith(str(path.resolve()))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def rss_report(cache_dir: Path) -> dict:
    # Linux keeps ru_maxrss across execve, so a child forked from this big process would start
    # at our peak; a shell in between forks the child from its own small footprint instead.
    cmd = ["sh", "-c", '"$@"; exit $?', "sh", sys.executable, __file__, "--rss-child", str(cache_dir)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# One data set, and the report


def bench_set(data_dir: Path, size: int, cfg: argparse.Namespace) -> dict:
    """Time a, b, c (and its parts) and d on the train split of `data_dir`."""
    packed = build_cache(data_dir, size, fmt="packed", cache_root=cfg.out / "cache")
    npz = build_cache(data_dir, size, fmt="npz", cache_root=cfg.out / "cache")
    source = ArraySource(*open_packed(packed.path, "train"))
    mean, std = (torch.tensor(packed.meta[k]) for k in ("mean", "std"))
    n_epoch = -(-len(source) // BATCH)
    k_fast = max(n_epoch, cfg.min_fast_batches)  # c and d: one epoch per window unless too slow
    x_ram = np.array(source.x)  # (N, H, W, C) uint8, in RAM, for d
    timing = {  # key: (stream factory, warm-up batches, most batches per window)
        "a": (lambda: dataloader_stream(CourseImages(data_dir / "train.csv", size)), 5, cfg.course_batches),
        "b": (lambda: dataloader_stream(CourseNpz(npz.path / "train.csv", size)), 5, 2 * cfg.course_batches),
        "c": (lambda: packed_stream(source, mean, std, "augment"), 10, k_fast),
        "c1": (lambda: packed_stream(source, mean, std, "augment"), 10, k_fast),
        "c0": (lambda: packed_stream(source, mean, std, "float"), 10, k_fast),
        "c_load": (lambda: packed_stream(source, mean, std, "load"), 20, k_fast),
        "d": (lambda: copy_stream(x_ram, source), 20, k_fast),
    }
    rates, windows = {}, {}
    for key, (make, n_warm, max_batches) in timing.items():
        with torch_threads(1 if key == "c1" else None):
            rates[key], windows[key] = measure(make, n_warm, max_batches, cfg.repeats, cfg.window_s)
    del x_ram
    n_prof = min(n_epoch, cfg.min_fast_batches)
    stages = {}
    for threads in (None, 1):
        with torch_threads(threads):
            stages[torch.get_num_threads()] = profile_stages(source, mean, std, n_prof)
    return {"n": len(source), "size": size, "rates": rates, "windows": windows, "packed": packed.path,
            "stages": stages}


def print_table(rows: dict[str, dict]) -> None:
    med = {name: {k: statistics.median(v) for k, v in r["rates"].items()} for name, r in rows.items()}
    print("| data (train split) | a course PIL | b course .npz | c imgclf packed+aug | d numpy copy "
          "| c/a | c/b | c/d |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, m in med.items():
        print(f"| {name} | {m['a']:,.0f} | {m['b']:,.0f} | {m['c']:,.0f} | {m['d']:,.0f} "
              f"| {m['c'] / m['a']:.1f} | {m['c'] / m['b']:.1f} | {m['c'] / m['d']:.2f} |")
    print("\nWhere c's time goes, images/s of each prefix of c, and of c with torch.set_num_threads(1)"
          f" instead of torch's default {torch.get_num_threads()} threads:\n")
    print("| data | c_load: BatchLoader | c0: + normalize | c: + augment_and_normalize | c, 1 torch thread |")
    print("|---|--:|--:|--:|--:|")
    for name, m in med.items():
        print(f"| {name} | {m['c_load']:,.0f} | {m['c0']:,.0f} | {m['c']:,.0f} | {m['c1']:,.0f} |")
    print("\nEach step of c run in turn in this thread (augment_and_normalize = random_crop + jitter+normalize):"
          " median µs per batch of 32, minor page faults per batch, kernel share of CPU time:\n")
    print("| data | torch threads | gather | normalize | random_crop | jitter+normalize | page faults | sys |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, r in rows.items():
        for threads, st in r["stages"].items():
            print(f"| {name} | {threads} | {st['gather']:,.0f} | {st['normalize']:,.0f} "
                  f"| {st['random_crop']:,.0f} | {st['jitter+normalize']:,.0f} | {st['page_faults']:,.0f} "
                  f"| {st['sys_share']:.0%} |")
    print("\nEach repeat, images/s (batches per window):")
    for name, r in rows.items():
        print(f"- {name}: " + "; ".join(f"{k} " + ", ".join(f"{v:,.0f}" for v in vs) + f" ({r['windows'][k]})"
                                       for k, vs in r["rates"].items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke check: --n 2000, fewer batches (default: off)")
    p.add_argument("--n", type=int, default=None, help="generated images per size (default: 20000; 2000 with --quick)")
    p.add_argument("--sizes", default="64,128", help="generated image sizes in px, comma-separated (default: 64,128)")
    p.add_argument("--out", type=Path, default=OUT, help="scratch dir, reused (default: bench/out)")
    p.add_argument("--signs", type=Path, default=SIGNS, help=f"SIGNS folder, skipped if absent (default: {SIGNS})")
    p.add_argument("--repeats", type=int, default=3, help="timed windows per loader; median reported (default: 3)")
    p.add_argument("--window", type=float, default=None,
                   help="cap in seconds on one timed window of a slow loader (default: 3; 1 with --quick)")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    cfg = p.parse_args(argv)
    cfg.n = cfg.n or (2000 if cfg.quick else 20000)
    cfg.course_batches = 20 if cfg.quick else 100  # a's window; b's is twice this
    cfg.min_fast_batches = 20 if cfg.quick else 100  # c and d: max(one epoch, this)
    cfg.window_s = cfg.window or (1.0 if cfg.quick else 3.0)
    cfg.sizes = [int(s) for s in cfg.sizes.split(",")]
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    if cfg.rss_child:
        return rss_child(cfg.rss_child)
    cfg.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}; "
          f"os.cpu_count()={os.cpu_count()}, torch threads {torch.get_num_threads()}; c's float layout "
          f"{'channels_last' if CHANNELS_LAST else 'contiguous NCHW'}; "
          f"load average at start {os.getloadavg()[0]:.2f}\n")
    sets: dict[str, tuple[Path, int]] = {}
    if cfg.signs.is_dir():
        sets["SIGNS 64×64"] = (signs_data(cfg.signs, cfg.out), 64)
    else:
        print(f"SIGNS not found at {cfg.signs}: skipped", file=sys.stderr)
    for size in cfg.sizes:
        sets[f"generated {size}×{size}"] = (generated_data(cfg.out, cfg.n, size), size)
    rows = {}
    for name, (data_dir, size) in sets.items():
        r = bench_set(data_dir, size, cfg)
        rows[f"{name}, {r['n']:,} imgs"] = r
    print_table(rows)
    print("\nCache build (packed, from JPEG, all splits, fresh cache root), images/s:")
    for name, (data_dir, size) in sets.items():
        r1, r2 = (build_rate(data_dir, size, w, cfg.out) for w in (1, 2))
        print(f"- {name}: workers=1 {r1:,.0f}, workers=2 {r2:,.0f}")
    largest = max(rows.values(), key=lambda r: r["n"] * r["size"] ** 2)
    rss = rss_report(largest["packed"])
    npy_mib = (largest["packed"] / "train.npy").stat().st_size / 2**20
    print(f"\nPeak RSS, fresh process iterating one epoch of the packed loader over {largest['n']:,} "
          f"images of {largest['size']}×{largest['size']}: train.npy is {npy_mib:,.0f} MiB; RSS before "
          f"iterating {rss['before_kib'] / 1024:,.0f} MiB (mostly torch), peak {rss['peak_kib'] / 1024:,.0f} MiB, "
          f"of which train.npy pages mapped at the end: {rss['npy_resident_kib'] / 1024:,.0f} MiB "
          "(clean file-backed pages, which the kernel can drop under memory pressure)")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
