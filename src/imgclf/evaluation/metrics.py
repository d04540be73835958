"""Evaluate a run's checkpoint on a split: loss, accuracy, per-class accuracy, n."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.loader import BatchLoader, to_device_float
from ..data.pipeline import prepare
from ..errors import ImgclfError
from ..fileio import atomic_write_json, read_json
from ..train.checkpoint import load_checkpoint
from ..train.fit import resolve_device

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, loader: BatchLoader, mean: list[float], std: list[float],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, K) float32, labels (N,)) on the CPU, in the loader's order."""
    m, s = torch.tensor(mean, device=device), torch.tensor(std, device=device)
    outs, ys = [], []
    for xb, yb in loader:
        outs.append(model(to_device_float(xb, m, s, device)).float().cpu())
        ys.append(yb)
    return torch.cat(outs), torch.cat(ys)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Mean cross-entropy, accuracy and per-class accuracy (recall), via torchmetrics."""
    from torchmetrics.classification import MulticlassAccuracy  # here: its import costs ~1.5 s (scipy)

    k = len(classes)
    acc = MulticlassAccuracy(num_classes=k, average="micro")(logits, labels).item()
    per_class = MulticlassAccuracy(num_classes=k, average="none")(logits, labels)
    counts = torch.bincount(labels, minlength=k)
    return {
        "n": int(len(labels)),
        "loss": F.cross_entropy(logits, labels).item(),
        "accuracy": acc,
        "per_class_accuracy": {c: (per_class[i].item() if counts[i] > 0 else None) for i, c in enumerate(classes)},
        "per_class_n": {c: int(counts[i]) for i, c in enumerate(classes)},
    }


def evaluate(run_dir: str | Path, split: str = "test", checkpoint: str = "best",
             data_dir: str | Path | None = None, write: bool = True) -> dict:
    """Metrics of RUN/<checkpoint> on DATA/<split>.csv; written to RUN/metrics_<split>.json.

    DATA defaults to the data directory the run was trained on (RUN/run.json).
    """
    run_dir = Path(run_dir)
    if split not in SPLIT_NAMES:
        raise ImgclfError(f"--split {split!r} is not one of {', '.join(SPLIT_NAMES)}")
    if not (run_dir / "run.json").exists():
        raise ImgclfError(f"{run_dir}: not an imgclf run (no run.json); pass the --run of `imgclf train`")
    info = read_json(run_dir / "run.json")
    data_dir = Path(data_dir or info["data_dir"])
    cfg = read_json(run_dir / "config.json")
    device = resolve_device(cfg.get("device", "auto"))
    model, meta = load_checkpoint(run_dir, checkpoint, device)
    inp = meta["input"]
    data = prepare(data_dir, (split,), inp["size"], inp["channels"], inp["resize"], cfg.get("cache", True))
    if list(data.classes) != meta["classes"]:
        raise ImgclfError(f"{data_dir}: classes {list(data.classes)} differ from the run's {meta['classes']}; "
                          "evaluate on the data the run was trained on, or retrain")
    loader = BatchLoader(data.sources[split], 256, shuffle=False)
    norm = meta["normalization"]
    logits, labels = predict_logits(model, loader, norm["mean"], norm["std"], device)
    result = {"split": split, "checkpoint": checkpoint, "epoch": meta.get("epoch"), "data_dir": str(data_dir),
              **classification_metrics(logits, labels, meta["classes"])}
    if write:
        atomic_write_json(run_dir / f"metrics_{split}.json", result)
    log.info("%s on %s: accuracy %.4f, loss %.4f, n %d", checkpoint, split, result["accuracy"], result["loss"],
             result["n"])
    return result
