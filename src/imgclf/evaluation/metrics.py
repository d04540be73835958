"""Evaluate a run's checkpoint on a split, with test-set discipline built in.

Metrics (torchmetrics): loss, accuracy with a 95 % bootstrap interval, top-k accuracy, per-class
precision/recall/F1 with macro and weighted averages, and the confusion matrix. Written to
RUN/metrics_<split>.json with the keys the course's tools read (`accuracy`, `loss`).

Every test-set evaluation is recorded in RUN/test_evaluations.json. Evaluating the test set
again on different weights warns: choosing between test numbers makes the test set a second
validation set, and the number stops being an unbiased estimate.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import BatchLoader, prefetch_depth, to_device_float
from ..data.pipeline import Prepared, prepare
from ..errors import ImgclfError
from ..fileio import atomic_write_json, read_json
from ..train.checkpoint import load_checkpoint
from ..train.trainer import resolve_device

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")
N_BOOTSTRAP = 1000  # resamples for the accuracy interval; seeded, so the interval is reproducible


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


def bootstrap_ci(correct: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector."""
    if len(correct) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (n_boot, len(correct)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
                           top_k: tuple[int, ...] = (3, 5)) -> dict:
    """Every metric of a prediction set; `per_class_accuracy` (recall) is kept for older readers."""
    from torchmetrics.classification import (MulticlassAccuracy, MulticlassConfusionMatrix,  # ~1.5 s import:
                                             MulticlassF1Score, MulticlassPrecision,  # kept out of start-up
                                             MulticlassRecall)

    k = len(classes)
    counts = torch.bincount(labels, minlength=k)
    out = {"n": int(len(labels)), "loss": F.cross_entropy(logits, labels).item(),
           "accuracy": MulticlassAccuracy(num_classes=k, average="micro")(logits, labels).item()}
    correct = (logits.argmax(1) == labels).numpy().astype(np.float64)
    out["accuracy_ci95"] = bootstrap_ci(correct)
    out["top_k_accuracy"] = {str(t): MulticlassAccuracy(num_classes=k, top_k=t, average="micro")(logits, labels).item()
                             for t in top_k if t < k}
    per = {name: cls(num_classes=k, average="none")(logits, labels)
           for name, cls in (("precision", MulticlassPrecision), ("recall", MulticlassRecall), ("f1", MulticlassF1Score))}
    out["per_class"] = {c: {**{m: float(per[m][i]) for m in per}, "support": int(counts[i])}
                        for i, c in enumerate(classes)}
    for avg in ("macro", "weighted"):
        out[avg] = {name: float(cls(num_classes=k, average=avg)(logits, labels))
                    for name, cls in (("precision", MulticlassPrecision), ("recall", MulticlassRecall),
                                      ("f1", MulticlassF1Score))}
    out["confusion_matrix"] = MulticlassConfusionMatrix(num_classes=k)(logits, labels).tolist()  # rows: true
    out["classes"] = list(classes)
    out["per_class_accuracy"] = {c: (float(per["recall"][i]) if counts[i] > 0 else None) for i, c in enumerate(classes)}
    out["per_class_n"] = {c: int(counts[i]) for i, c in enumerate(classes)}
    return out


def split_predictions(run_dir: str | Path, splits: tuple[str, ...] = ("test",), checkpoint: str = "best",
                      data_dir: str | Path | None = None) -> tuple[dict, dict, Prepared]:
    """({split: (logits, labels)}, checkpoint meta, prepared data) of a checkpoint on some splits.

    The checkpoint is loaded and the data prepared (cache checked) once for all of them.
    """
    run_dir = Path(run_dir)
    for split in splits:
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
    data = prepare(data_dir, splits, inp["size"], inp["channels"], inp["resize"], cfg.get("cache", True))
    if list(data.classes) != meta["classes"]:
        raise ImgclfError(f"{data_dir}: classes {list(data.classes)} differ from the run's {meta['classes']}; "
                          "evaluate on the data the run was trained on, or retrain")
    norm = meta["normalization"]
    preds = {s: predict_logits(model, BatchLoader(data.sources[s], 256, shuffle=False,
                                                  prefetch=prefetch_depth(data.sources[s], device)),
                               norm["mean"], norm["std"], device) for s in splits}
    return preds, meta, data


def _record_test_evaluation(run_dir: Path, result: dict, meta: dict) -> None:
    """Append to RUN/test_evaluations.json; warn when earlier ones were on other weights."""
    path = run_dir / "test_evaluations.json"
    history = read_json(path) if path.exists() else []
    others = [h for h in history if h["weights_sha256"] != meta["weights_sha256"]]
    if others:
        first = history[0]
        log.warning("the test set was already evaluated on other weights (%s checkpoint of epoch %s: accuracy "
                    "%.4f). Choosing a model by comparing test numbers uses the test set for selection and makes "
                    "it optimistic: select on valid, and report the test number of the model you chose first.",
                    first["checkpoint"], first["epoch"], first["accuracy"])
    history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": result["checkpoint"],
                    "epoch": result["epoch"], "weights_sha256": meta["weights_sha256"],
                    "accuracy": result["accuracy"], "n": result["n"]})
    atomic_write_json(path, history)


def evaluate(run_dir: str | Path, split: str = "test", checkpoint: str = "best",
             data_dir: str | Path | None = None, write: bool = True) -> dict:
    """Metrics of RUN/<checkpoint> on DATA/<split>.csv; written to RUN/metrics_<split>.json.

    DATA defaults to the data directory the run was trained on (RUN/run.json).
    """
    preds, meta, _ = split_predictions(run_dir, (split,), checkpoint, data_dir)
    logits, labels = preds[split]
    return record_metrics(run_dir, split, checkpoint, logits, labels, meta, data_dir, write)


def record_metrics(run_dir: str | Path, split: str, checkpoint: str, logits: torch.Tensor, labels: torch.Tensor,
                   meta: dict, data_dir: str | Path | None = None, write: bool = True) -> dict:
    """Compute, log and (with `write`) save the metrics of predictions made by split_predictions."""
    run_dir = Path(run_dir)
    if split == "test" and checkpoint != "best":
        log.warning("evaluating the test set on the %s checkpoint; the number to report is the best "
                    "checkpoint's (selected on valid)", checkpoint)
    result = {"split": split, "checkpoint": checkpoint, "epoch": meta.get("epoch"),
              "data_dir": str(Path(data_dir or read_json(run_dir / "run.json")["data_dir"])),
              **classification_metrics(logits, labels, meta["classes"])}
    if write:
        atomic_write_json(run_dir / f"metrics_{split}.json", result)
        if split == "test":
            _record_test_evaluation(run_dir, result, meta)
    lo, hi = result["accuracy_ci95"]
    log.info("%s on %s: accuracy %.4f (95%% CI %.4f–%.4f), loss %.4f, n %d", checkpoint, split,
             result["accuracy"], lo, hi, result["loss"], result["n"])
    return result
