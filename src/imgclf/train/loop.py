"""The hot path: one epoch of training (accumulation, clipping, mixed precision) or evaluation.

Nothing here reads a value back from the device: loss and accuracy are summed on the device
and read once per epoch (or at a checkpoint), so the GPU is never made to wait for Python.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.augment import Augment, augment_and_normalize
from ..data.loader import BatchLoader
from ..errors import ImgclfError
from .schedule import Schedule, apply_lr


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and, for fp16, the gradient scaler."""
    device: torch.device
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 has native arithmetic here: Ampere+ GPUs, or CPUs with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(name: str, device: torch.device) -> Precision:
    if name == "auto":
        name = "bf16" if bf16_is_fast(device) else "fp32"
    if name == "fp32":
        return Precision(device)
    if name == "bf16":
        return Precision(device, torch.bfloat16)
    if device.type != "cuda":
        raise ImgclfError(f"precision=fp16 needs a CUDA device (device is {device}); use precision=bf16 or fp32")
    return Precision(device, torch.float16, torch.amp.GradScaler("cuda"))


@dataclass
class Sums:
    """An epoch's running totals, kept on the device: Σ loss·n (float64), Σ correct, n."""
    loss: torch.Tensor
    correct: torch.Tensor
    n: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> "Sums":
        return cls(torch.zeros((), dtype=torch.float64, device=device),
                   torch.zeros((), dtype=torch.int64, device=device))

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach().double() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.n += len(y)

    def result(self) -> tuple[float, float]:
        """(mean loss, accuracy); the epoch's one host sync."""
        if self.n == 0:
            return float("nan"), float("nan")
        return self.loss.item() / self.n, self.correct.item() / self.n

    def state_dict(self) -> dict:
        return {"loss": self.loss.cpu(), "correct": self.correct.cpu(), "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.loss.copy_(state["loss"])
        self.correct.copy_(state["correct"])
        self.n = state["n"]


@dataclass
class Position:
    epoch: int = 1  # the epoch in progress (1-based)
    batch: int = 0  # batches of it already done
    opt_step: int = 0  # optimizer steps since the start of training (drives the schedule)


@dataclass
class ToDevice:
    """uint8 host batch → (augmented) normalised float batch on the device."""
    device: torch.device
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    channels_last: bool = False

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None,
                 aug: Augment | None = None) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)  # (B, H, W, C) uint8: 4× fewer bytes than float
        return augment_and_normalize(x, self.mean, self.std, gen, aug, self.channels_last)  # (B, C, H, W)


def augment_of(cfg) -> Augment | None:
    if not cfg.augment:
        return None
    return Augment(cfg.resolved_crop_pad(), cfg.flip, cfg.brightness, cfg.contrast)


def train_epoch(model: nn.Module, loader: BatchLoader, to_dev: ToDevice, cfg, optimizer: torch.optim.Optimizer,
                schedule: Schedule, prec: Precision, gen: torch.Generator, pos: Position, sums: Sums,
                after_step: Callable[[], None], on_batch: Callable[[int, torch.Tensor], None]) -> None:
    """Train from pos.batch to the end of the epoch, advancing `pos` and `sums` as it goes.

    Micro-batches are grouped `cfg.accumulate` at a time; each group's losses are averaged
    (a last, shorter group by its own size) and make one optimizer step.
    """
    model.train()
    n_batches, k, aug = len(loader), cfg.accumulate, augment_of(cfg)
    for xb, yb in loader.iter_from(pos.batch):
        x, y = to_dev(xb, gen, aug), yb.to(to_dev.device, non_blocking=True)
        group_start = pos.batch // k * k
        group_size = min(k, n_batches - group_start)
        with prec.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        scaled = loss / group_size
        (prec.scaler.scale(scaled) if prec.scaler else scaled).backward()
        sums.add(loss, logits, y)
        pos.batch += 1
        on_batch(len(y), loss)
        if pos.batch - group_start == group_size:
            optimizer_step(model, optimizer, schedule, cfg, prec, pos.opt_step)
            pos.opt_step += 1
            after_step()


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule, cfg,
                   prec: Precision, opt_step: int) -> None:
    apply_lr(optimizer, cfg.learning_rate * schedule.factor(opt_step))
    if cfg.grad_clip > 0:
        if prec.scaler:
            prec.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # returns a tensor: no sync
    if prec.scaler:
        prec.scaler.step(optimizer)
        prec.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def eval_epoch(model: nn.Module, loader: BatchLoader, to_dev: ToDevice, prec: Precision) -> tuple[float, float]:
    """Sample-weighted (loss, accuracy) over a loader, in eval mode."""
    model.eval()
    sums = Sums.zeros(to_dev.device)
    for xb, yb in loader:
        y = yb.to(to_dev.device, non_blocking=True)
        with prec.autocast():
            logits = model(to_dev(xb))
        sums.add(F.cross_entropy(logits.float(), y), logits, y)
    return sums.result()
