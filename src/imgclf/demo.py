"""`imgclf demo`: scikit-learn's bundled digits → PNG files + CSV → manifests → train → evaluate."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .config import load_config
from .data.manifest import make_manifests
from .fileio import atomic_write_text, read_json
from .train.fit import fit

log = logging.getLogger(__name__)

# Digits are 8×8 greyscale. Upsampling to 16 px gives the CNN's three poolings room to work
# (8 px would pool down to 1×1 after the second block's receptive field barely covers a stroke).
DEMO_CONFIG = {"image_size": 16, "channels": 1, "num_epochs": 15, "batch_size": 32, "learning_rate": 2e-3}


def export_digits(out: Path) -> Path:
    """Write the 1,797 digits as PNGs plus `labels.csv` (path,label); reuses an earlier export."""
    labels_csv = out / "labels.csv"
    if labels_csv.exists():
        return labels_csv
    from sklearn.datasets import load_digits

    digits = load_digits()
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 → 0..255
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label"])
    for i, (img, y) in enumerate(zip(pixels, digits.target)):
        name = f"images/{i:04d}.png"
        Image.fromarray(img, "L").save(out / name)
        w.writerow([name, int(y)])
    atomic_write_text(labels_csv, buf.getvalue())  # last: its presence means the export is complete
    return labels_csv


def next_run_dir(root: Path) -> Path:
    """runs/demo/run-1, run-2, …: a new demo never replaces an earlier one."""
    n = 1
    while (root / f"run-{n}").exists():
        n += 1
    return root / f"run-{n}"


def run_demo(out: str | Path = "runs/demo", overrides: dict | None = None, progress: bool = False) -> dict:
    """The whole pipeline on digits; returns {split: metrics} of the best checkpoint and the run dir."""
    out = Path(out)
    labels_csv = export_digits(out / "digits")
    data_dir = out / "data"
    make_manifests(labels_csv, data_dir, labels="csv", seed=230)
    cfg = load_config(base=DEMO_CONFIG, overrides=overrides)
    run_dir = next_run_dir(out)
    summary = fit(data_dir, run_dir, cfg, progress=progress)  # ends with report.html and metrics_<split>.json
    results = {s: read_json(run_dir / f"metrics_{s}.json") for s in ("train", "valid", "test")}
    return {"run_dir": str(run_dir), "results": results, "report": summary["report"]}


def format_table(results: dict) -> str:
    lines = ["split   n      loss     accuracy   95% CI", "-----   -----  -------  --------   ---------------"]
    for s, r in results.items():
        lo, hi = r["accuracy_ci95"]
        lines.append(f"{s:<7} {r['n']:<6} {r['loss']:<8.4f} {100 * r['accuracy']:6.2f}%    "
                     f"{100 * lo:.1f}% – {100 * hi:.1f}%")
    return "\n".join(lines)
