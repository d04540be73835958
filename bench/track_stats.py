"""Overhead of --track-stats (issue 6): the same SIGNS training with layer statistics off, every
27 batches (once an epoch) and every batch, alternating, in one process.

    .venv/bin/python bench/track_stats.py [--rounds 3] [--epochs 4]

Each configuration trains with imgclf's defaults; an epoch's time is metrics.csv's `seconds`
(train + valid pass), the first epoch of each run dropped. Prints medians and ratios to "off".
"""
from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from imgclf import fit, load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_overhead import OUT, data_dir  # noqa: E402  (the same SIGNS manifests)


def epoch_seconds(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)][1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    logging.getLogger("imgclf").setLevel(logging.WARNING)
    d = data_dir(OUT)
    variants = {"off": 0, "every 27 batches": 27, "every batch": 1}
    times: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, every in variants.items():
                run = Path(tmp) / f"{r}-{every}"
                fit(d, run, load_config(overrides={"num_epochs": args.epochs, "track_stats": every}), report=False)
                times[name] += epoch_seconds(run)
    off = statistics.median(times["off"])
    print(f"SIGNS, imgclf defaults, {args.rounds} rounds × {args.epochs} epochs (first dropped)\n")
    print("| track_stats | median s/epoch | ratio to off |")
    print("|---|--:|--:|")
    for name, v in times.items():
        print(f"| {name} | {statistics.median(v):.3f} | {statistics.median(v) / off:.3f} |")


if __name__ == "__main__":
    main()
