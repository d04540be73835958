"""The Trainer: model, optimizer, schedule, early stopping, loaders and the position of a run.

It owns every piece of state that an exact resume needs (`Trainer.state_dict`); `fit` sets up the
run directory around it.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .. import dist
from ..config import Config
from ..data.loader import BatchLoader, prefetch_depth
from ..data.pipeline import Prepared
from ..errors import ImgclfError
from ..fileio import BackgroundWriter, atomic_write_json, atomic_write_text
from ..models import create_model, init_weights
from .checkpoint import read_checkpoint, save_checkpoint, save_resume
from .loop import Position, Sums, ToDevice, eval_epoch, resolve_precision, train_epoch
from .monitor import EpochBar
from .optim import create_optimizer
from .rng import get_rng_state, set_rng_state
from .schedule import Schedule
from .stopping import EarlyStopping
from ..studies.layer_stats import LayerStats

log = logging.getLogger("imgclf.train")

METRICS_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds")
FAULT_ENV = "IMGCLF_FAULT_KILL_AT_BATCH"  # tests: SIGKILL this process after that many batches


class TrainingDiverged(ImgclfError):
    """A NaN or infinite training loss; the last good checkpoints are kept."""


class TrainingInterrupted(ImgclfError):
    """Ctrl-C: the state was saved and the run can be resumed."""


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


def build_model(cfg: Config, n_classes: int) -> nn.Module:
    """The configured model, initialised from the seed; also seeds dropout (torch's global RNG)."""
    torch.manual_seed(cfg.seed)  # dropout draws; init, data order and augmentation have their own
    model = create_model(cfg.model, n_classes, cfg.channels, cfg.image_size, **model_args(cfg))
    return init_weights(model, cfg.init, cfg.init_std, torch.Generator().manual_seed(cfg.seed))


def train_loader(source, cfg: Config, device: torch.device) -> BatchLoader:
    """Shuffled, rank-sharded batches; a last batch of one is dropped (batch norm needs ≥ 2)."""
    return BatchLoader(source, cfg.batch_size, shuffle=True, seed=cfg.seed,
                       drop_last=len(source) % cfg.batch_size == 1, rank=dist.rank(), world_size=dist.world_size(),
                       prefetch=prefetch_depth(source, device))


def _metrics_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, METRICS_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


class Trainer:
    """Model, optimizer, schedule, early stopping, loaders and position of one training run."""

    def __init__(self, cfg: Config, data: Prepared, run_dir: Path, device: torch.device, progress: bool = False,
                 on_epoch_end: Callable[[dict], None] | None = None):
        self.cfg, self.data, self.run_dir, self.device, self.progress = cfg, data, run_dir, device, progress
        self.on_epoch_end = on_epoch_end
        self.module = build_model(cfg, len(data.classes))
        self.prec = resolve_precision(cfg.precision, device)
        channels_last = cfg.channels_last
        if channels_last is None:  # measured in BENCHMARKS.md: bf16 + channels_last ≈ 2.5× fp32 on this CPU
            channels_last = device.type == "cuda" or self.prec.dtype == torch.bfloat16
        self.module.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        self.model = torch.compile(self.module) if cfg.compile else self.module
        self.optimizer = create_optimizer(self.module, cfg.optimizer, cfg.learning_rate, cfg.weight_decay,
                                          cfg.momentum, cfg.nesterov)
        self.to_dev = ToDevice(device, torch.tensor(data.mean, device=device), torch.tensor(data.std, device=device),
                               channels_last)
        self.train_loader = train_loader(data.sources["train"], cfg, device)
        valid = data.sources["valid"]
        self.valid_loader = BatchLoader(valid, max(cfg.batch_size, 256), shuffle=False,
                                        prefetch=prefetch_depth(valid, device))
        steps_per_epoch = -(-len(self.train_loader) // cfg.accumulate)
        mode = "max" if cfg.monitor == "valid_acc" else "min"
        self.schedule = Schedule(cfg.schedule, steps_per_epoch, steps_per_epoch * cfg.num_epochs,
                                 round(cfg.warmup_epochs * steps_per_epoch), cfg.step_size, cfg.gamma,
                                 cfg.min_lr / cfg.learning_rate, cfg.plateau_patience, mode)
        self.stopper = EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta, mode)
        self.gen = torch.Generator(device=device)
        self.pos, self.sums, self.rows = Position(), Sums.zeros(device), []
        self.finished = False
        self.epoch_seconds = 0.0
        self.interrupt_requested = False
        self.kill_at = int(os.environ.get(FAULT_ENV, "0"))
        self.writer = BackgroundWriter()  # checkpoints are written while training goes on
        self.stats = LayerStats(self.module, cfg.track_stats) if cfg.track_stats else None
        self.meta = {"model": cfg.model, "model_args": model_args(cfg), "classes": list(data.classes),
                     "input": {"size": cfg.image_size, "channels": cfg.channels, "resize": cfg.resize},
                     "normalization": {"mean": data.mean, "std": data.std}, "config": cfg.model_dump(),
                     "seed": cfg.seed, "manifest_sha256": data.cache.meta["parts"]["manifests"] if data.cache else None}

    # --- resume state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything but the weights that an exact resume needs (plain tensors and containers)."""
        return {"epoch": self.pos.epoch, "batch": self.pos.batch, "opt_step": self.pos.opt_step,
                "finished": self.finished, "sums": self.sums.state_dict(), "rows": self.rows,
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "stopper": self.stopper.state_dict(),
                "scaler": self.prec.scaler.state_dict() if self.prec.scaler else None,
                "rng": get_rng_state(self.gen), "layer_stats": self.stats.records if self.stats else []}

    def load_state_dict(self, weights: dict, state: dict) -> None:
        self.module.load_state_dict(weights)
        self.pos = Position(state["epoch"], state["batch"], state["opt_step"])
        self.finished = state["finished"]
        self.sums.load_state_dict(state["sums"])
        self.rows = state["rows"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.stopper.load_state_dict(state["stopper"])
        if self.prec.scaler and state["scaler"]:
            self.prec.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.gen)
        if self.stats:
            self.stats.records = list(state.get("layer_stats", []))
            self.stats.active = self.stats.wants(self._global_batch())

    def save_resume(self) -> None:
        if not torch.isfinite(self.sums.loss):  # never replace a good resume point with a diverged one
            raise self._diverged(float("nan"))
        if dist.is_main():
            tag = self._global_batch()
            save_resume(self.run_dir, tag, self.module, self.state_dict(), self.writer)

    # --- the loop --------------------------------------------------------------------------
    def train(self) -> dict:
        with self._sigint_saves():
            while not self.finished and self.pos.epoch <= self.cfg.num_epochs:
                self._train_epoch()
                self._end_epoch()
        self.writer.flush()
        if self.stopper.should_stop and dist.is_main():
            weights, _ = read_checkpoint(self.run_dir, "best")
            self.module.load_state_dict(weights)  # early stopping hands back the best weights
        best = self.stopper.best if self.stopper.best is not None else float("nan")
        log.info("best %s %.4f at epoch %d; checkpoints in %s", self.cfg.monitor, best, self.stopper.best_epoch,
                 self.run_dir)
        best_row = self.rows[self.stopper.best_epoch - 1] if self.stopper.best_epoch else {}
        return {"run_dir": str(self.run_dir), "best_epoch": self.stopper.best_epoch,
                "best_valid_acc": best_row.get("valid_acc"), "best_valid_loss": best_row.get("valid_loss"),
                "epochs": len(self.rows), "stopped_early": self.stopper.should_stop}

    def _train_epoch(self) -> None:
        epoch, t0 = self.pos.epoch, time.perf_counter()
        self.train_loader.set_epoch(epoch)
        if self.pos.batch == 0:  # a resumed epoch restored these from the state instead
            self.gen.manual_seed(self.cfg.seed * 1_000_003 + epoch)  # augmentation: a function of (seed, epoch)
            self.sums = Sums.zeros(self.device)
            self.epoch_seconds = 0.0
        n_images = len(self.train_loader.indices())
        bar = EpochBar(self.progress, epoch, self.cfg.num_epochs, n_images, min(self.pos.batch * self.cfg.batch_size,
                                                                                 n_images))
        def on_batch(n: int, loss: torch.Tensor) -> None:
            bar.update(n, loss)
            if self.stats is not None:
                self._track(self._global_batch() - 1)

        try:
            train_epoch(self.model, self.train_loader, self.to_dev, self.cfg, self.optimizer, self.schedule,
                        self.prec, self.gen, self.pos, self.sums, self._after_step, on_batch)
        finally:
            bar.close()
        self.epoch_seconds += time.perf_counter() - t0

    def _global_batch(self) -> int:
        """Training batches done since the start (the index of the next one)."""
        return (self.pos.epoch - 1) * len(self.train_loader) + self.pos.batch

    def _track(self, step: int) -> None:
        """After a batch's backward: record its layer statistics if armed, then arm for the next."""
        if self.stats.active:
            self.stats.collect(step, self.pos.epoch)
            if dist.is_main():
                self.writer.submit(atomic_write_json, self.run_dir / "layer_stats.json", list(self.stats.records))
        self.stats.active = self.stats.wants(step + 1)

    def _after_step(self) -> None:
        every = self.cfg.checkpoint_every
        if self.interrupt_requested:
            self.save_resume()
            self.writer.flush()
            raise TrainingInterrupted(
                f"interrupted at epoch {self.pos.epoch}, batch {self.pos.batch}; the state is saved. "
                f"Continue with: imgclf train --run {self.run_dir} --resume")
        if every and self.pos.opt_step % every == 0 and self.pos.batch < len(self.train_loader):
            self.save_resume()
        if self.kill_at and self._global_batch() >= self.kill_at:
            self.writer.flush()  # so a test knows which saved state survives the kill
            os.kill(os.getpid(), signal.SIGKILL)

    def _end_epoch(self) -> None:
        cfg, epoch, t0 = self.cfg, self.pos.epoch, time.perf_counter()
        tr_loss, tr_acc = self.sums.result()
        if not np.isfinite(tr_loss):
            raise self._diverged(tr_loss)
        va_loss, va_acc = eval_epoch(self.model, self.valid_loader, self.to_dev, self.prec)
        row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "valid_loss": va_loss,
               "valid_acc": va_acc, "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": round(self.epoch_seconds + time.perf_counter() - t0, 3)}
        self.rows.append(row)
        log.info("epoch %d/%d train_loss %.4f train_acc %.4f valid_loss %.4f valid_acc %.4f lr %.2e %.1fs",
                 epoch, cfg.num_epochs, tr_loss, tr_acc, va_loss, va_acc, row["lr"], row["seconds"])
        monitored = row[cfg.monitor]
        improved = self.stopper.update(monitored, epoch)
        self.schedule.end_epoch(monitored)
        if self.stopper.should_stop:
            log.info("early stopping: no better %s for %d epochs (best %.4f at epoch %d)", cfg.monitor,
                     self.stopper.patience, self.stopper.best, self.stopper.best_epoch)
        self.pos = Position(epoch + 1, 0, self.pos.opt_step)
        self.finished = self.stopper.should_stop or epoch >= cfg.num_epochs
        if dist.is_main():
            self.writer.submit(atomic_write_text, self.run_dir / "metrics.csv", _metrics_csv(self.rows))
            ep_meta = {**self.meta, "epoch": epoch, "metrics": row}
            save_checkpoint(self.run_dir, "last", self.module, ep_meta, self.writer)
            if improved:
                save_checkpoint(self.run_dir, "best", self.module, ep_meta, self.writer)
            self.tensorboard.epoch(row)
        self.save_resume()
        if self.on_epoch_end is not None:  # e.g. a search's pruner; may raise to stop the run
            self.on_epoch_end(dict(row))

    def _diverged(self, value: float) -> ImgclfError:
        return TrainingDiverged(f"epoch {self.pos.epoch}: the training loss is {value}; lower learning_rate (now "
                           f"{self.cfg.learning_rate}), set grad_clip, or check the data. The last good "
                           f"checkpoints are kept in {self.run_dir}")

    def _sigint_saves(self):
        """First Ctrl-C: finish the step, save, stop. Second: stop at once (KeyboardInterrupt)."""
        trainer = self

        class _Handler:
            def __enter__(self):
                self.old = None
                if threading.current_thread() is threading.main_thread():
                    self.old = signal.signal(signal.SIGINT, self.handle)

            def handle(self, signum, frame):
                if trainer.interrupt_requested:
                    raise KeyboardInterrupt
                trainer.interrupt_requested = True
                log.warning("interrupt: saving the state after this step (Ctrl-C again to stop at once)")

            def __exit__(self, *exc):
                if self.old is not None:
                    signal.signal(signal.SIGINT, self.old)

        return _Handler()
