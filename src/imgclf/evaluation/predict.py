"""Predict the class of new images with a run's checkpoint; only the run directory is needed.

Inputs are image files, folders (every image below, as `imgclf manifest` finds them) and CSVs
with a `path` column (a `label` column, when present, is echoed as `true_label`). Each image is
decoded exactly as for training (`data.images.decode` with the checkpoint's size, channels and
resize policy) and normalised with the checkpoint's mean/std by the same `normalize`, in batches
of `batch_size`, so memory stays bounded however many inputs there are.

An input that is missing or cannot be decoded is skipped and reported, never fatal: `predict`
returns the rows it could predict and the (path, reason) of every skipped input.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from ..data.augment import normalize
from ..data.images import ImageReadError, decode
from ..data.manifest import IMAGE_EXTS, find_images
from ..errors import ImgclfError, where
from ..fileio import atomic_write_text
from ..train.checkpoint import load_checkpoint
from ..train.trainer import resolve_device

log = logging.getLogger(__name__)


class Classifier(nn.Module):
    """A checkpoint's model with its preprocessing inside: (B, H, W, C) uint8 → (B, K) float32 probabilities.

    The input is what `decode` returns, stacked: resized, RGB or grey, not yet normalised. The
    normalisation is `data.augment.normalize` itself, so training, `predict` and the exported
    models (`evaluation.export`) share one definition of it.
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))  # (C,) pixel/255 units
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(normalize(image, self.mean, self.std))  # (B, K)
        return torch.softmax(logits.float(), dim=1)


def load_classifier(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
                    ) -> tuple[Classifier, dict]:
    """(the eval-mode Classifier of RUN/<checkpoint>, its checkpoint metadata)."""
    model, meta = load_checkpoint(run_dir, checkpoint, device)
    norm = meta["normalization"]
    return Classifier(model, norm["mean"], norm["std"]).to(device).eval(), meta


@dataclass(frozen=True)
class Item:
    path: Path
    true_label: str | None = None


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Image files, folders (every image below, sorted) and CSVs with a `path` column → items to
    predict, plus (input, reason) for each input that yields nothing."""
    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            found = find_images(p)
            items += [Item(f) for f in found]
            if not found:
                skipped.append((str(p), f"no images in this folder ({', '.join(IMAGE_EXTS)})"))
        elif p.suffix.lower() == ".csv" and p.is_file():
            try:
                items += read_path_csv(p)
            except ImgclfError as e:
                skipped.append((str(p), str(e)))
        else:
            items.append(Item(p))  # a missing or unreadable file is reported when it is decoded
    return items, skipped


def read_path_csv(csv_path: Path) -> list[Item]:
    """The rows of a CSV with a `path` column (any case) and an optional `label` column; relative
    paths resolve against the CSV's folder (as in manifests). Rows with an empty path are ignored."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ImgclfError(f"not UTF-8 text ({e})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, None) or []]
    if "path" not in header:
        raise ImgclfError(f"{where(csv_path, 1)}: no 'path' column in the header {header!r}")
    i_path = header.index("path")
    i_label = header.index("label") if "label" in header else None
    items = []
    for row in reader:
        if len(row) <= i_path or not row[i_path].strip():
            continue
        label = row[i_label].strip() if i_label is not None and len(row) > i_label else None
        items.append(Item((csv_path.parent / row[i_path].strip()).resolve(), label or None))
    return items


def _decode_batch(items: list[Item], size: int, channels: int, resize: str
                  ) -> tuple[np.ndarray, list[Item], list[tuple[str, str]]]:
    """(B', H, W, C) uint8 of the items that decode, those items, and (path, reason) for the rest."""
    x = np.empty((len(items), size, size, channels), np.uint8)
    ok, skipped = [], []
    for item in items:
        if not item.path.is_file():
            skipped.append((str(item.path), "a folder, not an image" if item.path.is_dir() else "no such file"))
            continue
        try:
            img = decode(item.path, size, channels, resize)
        except ImageReadError as e:
            skipped.append((str(item.path), str(e).replace(f"image {item.path}", "image", 1)))
            continue
        if img.shape != x.shape[1:]:
            skipped.append((str(item.path), f"decodes to shape {img.shape}, expected {x.shape[1:]}"))
            continue
        x[len(ok)] = img
        ok.append(item)
    return x[:len(ok)], ok, skipped


def iter_predictions(classifier: nn.Module, meta: dict, items: list[Item], top_k: int = 3,
                     batch_size: int = 256, device: str | torch.device = "cpu") -> Iterator[tuple[list, list]]:
    """For each batch of `items`: (its prediction rows, its skipped (path, reason))."""
    classes, inp = meta["classes"], meta["input"]
    k = min(top_k, len(classes))
    for start in range(0, len(items), batch_size):
        x, ok, skipped = _decode_batch(items[start:start + batch_size], inp["size"], inp["channels"], inp["resize"])
        rows = []
        if ok:
            with torch.no_grad():
                probs = classifier(torch.from_numpy(x).to(device)).float().cpu()  # (B', K)
            top_p, top_i = probs.topk(k, dim=1)
            for item, ps, ids in zip(ok, top_p.tolist(), top_i.tolist()):
                row = {"path": str(item.path), "label": classes[ids[0]], "probability": ps[0]}
                for j in range(k):
                    row[f"label_{j + 1}"], row[f"probability_{j + 1}"] = classes[ids[j]], ps[j]
                if item.true_label is not None:
                    row["true_label"] = item.true_label
                rows.append(row)
        yield rows, skipped


def predict(run_dir: str | Path, inputs: Iterable[str | Path], top_k: int = 3, checkpoint: str = "best",
            batch_size: int = 256, device: str | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Predict every image of `inputs` with RUN/<checkpoint>.

    Returns (rows, skipped). A row has `path`, `label` and `probability` (the top-1 class and its
    softmax probability), `label_j`/`probability_j` for j = 1..min(top_k, n_classes), and
    `true_label` when it came from a CSV with a label column. `skipped` holds (path, reason) for
    every input that is missing or could not be decoded. `device` defaults to the run's.
    """
    if top_k < 1:
        raise ImgclfError(f"--top-k {top_k}: must be at least 1")
    if batch_size < 1:
        raise ImgclfError(f"--batch-size {batch_size}: must be at least 1")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ImgclfError(f"{run_dir}: no such run directory; pass the --run of `imgclf train`")
    classifier, meta = load_classifier(run_dir, checkpoint)
    dev = resolve_device(device or meta.get("config", {}).get("device", "auto"))
    classifier.to(dev)
    items, skipped = expand_inputs(inputs)
    rows: list[dict] = []
    for batch_rows, batch_skipped in iter_predictions(classifier, meta, items, top_k, batch_size, dev):
        rows += batch_rows
        skipped += batch_skipped
    log.debug("%s: predicted %d image(s), skipped %d", run_dir, len(rows), len(skipped))
    return rows, skipped


def columns(rows: list[dict]) -> list[str]:
    """path, label, probability, label_1, probability_1, …, then true_label if any row has one."""
    cols = list(rows[0]) if rows else ["path", "label", "probability"]
    cols = [c for c in cols if c != "true_label"]
    return cols + (["true_label"] if any("true_label" in r for r in rows) else [])


def _fmt(v) -> str | float:
    return float(f"{v:.6g}") if isinstance(v, float) else v


def format_predictions(rows: list[dict], skipped: list[tuple[str, str]] = (), as_json: bool = False) -> str:
    """CSV text (a header, one line per row; probabilities to 6 significant digits), or with
    `as_json` a JSON object {"predictions": [rows], "skipped": [{"path", "reason"}]}."""
    cols = columns(rows)
    if as_json:
        preds = [{c: _fmt(r.get(c)) for c in cols} for r in rows]
        return json.dumps({"predictions": preds, "skipped": [{"path": p, "reason": why} for p, why in skipped]},
                          indent=2) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r.get(c, "")) for c in cols])
    return buf.getvalue()


def write_predictions(text: str, out: str | Path) -> None:
    """Write formatted predictions to `out`, atomically."""
    atomic_write_text(out, text)
