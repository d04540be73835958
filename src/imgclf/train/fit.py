"""The training loop: train on train, select on valid, keep the last and the best checkpoint."""
from __future__ import annotations

import csv
import io
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import __version__, dist
from ..config import Config
from ..data.augment import augment_batch
from ..data.loader import BatchLoader, to_device_float
from ..data.pipeline import Prepared, prepare
from ..errors import ImgclfError
from ..fileio import atomic_write_json, atomic_write_text
from ..models import create_model, init_weights
from .checkpoint import save_checkpoint
from .optim import create_optimizer

log = logging.getLogger("imgclf.train")

METRICS_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ImgclfError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ImgclfError(f"device {name!r} asked for, but this torch has no CUDA; use device=cpu or "
                          "install a CUDA build of torch (README, 'Using a GPU')")
    return dev


def model_args(cfg: Config) -> dict:
    """The keyword arguments create_model needs beyond the data's shape (stored in checkpoints)."""
    return {"num_channels": cfg.num_channels, "fc_units": cfg.fc_units, "hidden_units": list(cfg.hidden_units),
            "dropout": cfg.dropout_rate, "batch_norm": cfg.batch_norm}


@dataclass
class Batches:
    """What one step needs to turn a uint8 batch into a normalised float batch on the device."""
    device: torch.device
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return to_device_float(x, self.mean, self.std, self.device)  # (B, C, H, W) float32


def run_epoch(model: nn.Module, loader: BatchLoader, prep: Batches, cfg: Config,
              optimizer: torch.optim.Optimizer | None = None, gen: torch.Generator | None = None
              ) -> tuple[float, float]:
    """One pass; trains when `optimizer` is given. Returns sample-weighted (loss, accuracy).

    Sums stay on the device; the single .item() at the end is the epoch's only host sync.
    """
    training = optimizer is not None
    model.train(training)
    loss_sum = torch.zeros((), device=prep.device, dtype=torch.float64)
    correct = torch.zeros((), device=prep.device, dtype=torch.int64)
    n = 0
    with torch.set_grad_enabled(training):
        for xb, yb in loader:
            x, y = prep(xb), yb.to(prep.device, non_blocking=True)
            if training and cfg.augment:
                x = augment_batch(x, gen, cfg.resolved_crop_pad(), cfg.flip, cfg.brightness, cfg.contrast)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing if training else 0.0)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            n += len(y)
    if n == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / n, correct.item() / n


def _check_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Whether RUN holds an earlier run that --overwrite will replace; refuses anything else."""
    if not (run_dir.exists() and any(run_dir.iterdir())):
        return False
    if not overwrite:
        raise ImgclfError(f"{run_dir}: already holds a run; pass --overwrite to replace it, or choose "
                          "another --run (the existing run was left untouched)")
    if not (run_dir / "config.json").exists():
        raise ImgclfError(f"{run_dir}: is not an imgclf run (no config.json), so --overwrite will not "
                          "delete it; choose another --run")
    return True


def _log_to_file(run_dir: Path) -> logging.Handler:
    h = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.INFO)
    root = logging.getLogger("imgclf")
    root.addHandler(h)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return h


def _metrics_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, METRICS_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _run_info(data_dir: Path, data: Prepared, cfg: Config, device: torch.device) -> dict:
    return {"data_dir": str(data_dir.resolve()), "cache": str(data.cache.path) if data.cache else None,
            "classes": list(data.classes), "mean": data.mean, "std": data.std,
            "counts": {s: len(src) for s, src in data.sources.items()}, "device": str(device),
            "imgclf": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": cfg.seed}


def fit(data_dir: str | Path, run_dir: str | Path, config: Config | None = None, overwrite: bool = False,
          progress: bool = False) -> dict:
    """Fit a model on DATA/train.csv, select on valid.csv, and write the run directory.

    Returns a summary: the best epoch and its valid metrics, and the run directory.
    """
    cfg = config or Config()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    replace = _check_run_dir(run_dir, overwrite)
    device = resolve_device(cfg.device)
    data = prepare(data_dir, ("train", "valid"), cfg.image_size, cfg.channels, cfg.resize, cfg.cache, progress)
    cfg = cfg.model_copy(update={"crop_pad": cfg.resolved_crop_pad()})
    if dist.is_main():
        if replace:  # only now that the data has loaded: a bad input must not cost the old run
            log.warning("--overwrite: replacing the run in %s", run_dir)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = _log_to_file(run_dir)
        atomic_write_json(run_dir / "config.json", cfg.model_dump())
        atomic_write_json(run_dir / "run.json", _run_info(data_dir, data, cfg, device))
    try:
        return _fit(cfg, data, run_dir, device, progress)
    finally:
        if dist.is_main():
            logging.getLogger("imgclf").removeHandler(handler)
            handler.close()


def _fit(cfg: Config, data: Prepared, run_dir: Path, device: torch.device, progress: bool) -> dict:
    torch.manual_seed(cfg.seed)  # dropout draws; init, data order and augmentation have their own
    model = create_model(cfg.model, len(data.classes), cfg.channels, cfg.image_size, **model_args(cfg))
    init_weights(model, cfg.init, cfg.init_std, torch.Generator().manual_seed(cfg.seed))
    model.to(device)
    optimizer = create_optimizer(model, cfg.optimizer, cfg.learning_rate, cfg.weight_decay, cfg.momentum)
    prep = Batches(device, torch.tensor(data.mean, device=device), torch.tensor(data.std, device=device))
    train_loader = BatchLoader(data.sources["train"], cfg.batch_size, shuffle=True, seed=cfg.seed,
                               drop_last=len(data.sources["train"]) % cfg.batch_size == 1,  # BN needs ≥ 2
                               rank=dist.rank(), world_size=dist.world_size())
    valid_loader = BatchLoader(data.sources["valid"], max(cfg.batch_size, 256), shuffle=False)
    gen = torch.Generator(device=device)
    meta = {"model": cfg.model, "model_args": model_args(cfg), "classes": list(data.classes),
            "input": {"size": cfg.image_size, "channels": cfg.channels, "resize": cfg.resize},
            "normalization": {"mean": data.mean, "std": data.std}, "config": cfg.model_dump(), "seed": cfg.seed,
            "manifest_sha256": data.cache.meta["parts"]["manifests"] if data.cache else None}
    log.info("training %s on %d images (%d classes), validating on %d, %d epochs, device %s", cfg.model,
             len(data.sources["train"]), len(data.classes), len(data.sources["valid"]), cfg.num_epochs, device)
    rows: list[dict] = []
    best, best_epoch = -1.0, 0
    for epoch in range(1, cfg.num_epochs + 1):
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)
        gen.manual_seed(cfg.seed * 1_000_003 + epoch)  # augmentation draws: a function of (seed, epoch)
        tr_loss, tr_acc = run_epoch(model, train_loader, prep, cfg, optimizer, gen)
        va_loss, va_acc = run_epoch(model, valid_loader, prep, cfg)
        row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "valid_loss": va_loss,
               "valid_acc": va_acc, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - t0, 3)}
        rows.append(row)
        log.info("epoch %d/%d train_loss %.4f train_acc %.4f valid_loss %.4f valid_acc %.4f lr %.2e %.1fs",
                 epoch, cfg.num_epochs, tr_loss, tr_acc, va_loss, va_acc, row["lr"], row["seconds"])
        if not np.isfinite(tr_loss):
            raise ImgclfError(f"epoch {epoch}: the training loss is {tr_loss}; lower learning_rate (now "
                              f"{cfg.learning_rate}) or check the data. Checkpoints so far are kept in {run_dir}")
        improved = va_acc > best
        if improved:
            best, best_epoch = va_acc, epoch
        if dist.is_main():
            atomic_write_text(run_dir / "metrics.csv", _metrics_csv(rows))
            ep_meta = {**meta, "epoch": epoch, "metrics": row}
            save_checkpoint(run_dir, "last", model, ep_meta)
            if improved:
                save_checkpoint(run_dir, "best", model, ep_meta)
        if cfg.early_stopping_patience and epoch - best_epoch >= cfg.early_stopping_patience:
            log.info("early stopping: no better valid accuracy for %d epochs (best %.4f at epoch %d)",
                     cfg.early_stopping_patience, best, best_epoch)
            break
    log.info("best valid accuracy %.4f at epoch %d; checkpoints in %s", best, best_epoch, run_dir)
    return {"run_dir": str(run_dir), "best_epoch": best_epoch, "best_valid_acc": best, "epochs": len(rows)}
