"""The learning-rate range test (Smith 2015): raise the LR exponentially, watch the loss.

It trains a throw-away copy of the configured model, so no run's weights ever change, and
writes nothing but the plot (and a JSON of the curve beside it).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..data.pipeline import prepare
from ..fileio import atomic_write_json
from .trainer import build_model, resolve_device, train_loader
from .loop import ToDevice, augment_of, resolve_precision
from .optim import create_optimizer
from .schedule import apply_lr

log = logging.getLogger(__name__)


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, str]:
    """The LR where the smoothed loss falls fastest per decade of LR, before its minimum."""
    end = int(np.argmin(smoothed))
    if end < 3:
        lr = float(lrs[max(end, 0)]) / 10
        return lr, f"the loss was lowest almost at once, so one tenth of that LR ({lr:.2e})"
    slope = np.gradient(smoothed[:end + 1], np.log10(lrs[:end + 1]))
    i = int(np.argmin(slope))
    return float(lrs[i]), (f"steepest descent of the smoothed loss ({slope[i]:.3f} per decade at {lrs[i]:.2e}); "
                           f"the minimum was at {lrs[end]:.2e}")


def lr_find(data_dir: str | Path, config: Config | None = None, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_steps: int = 100, out: str | Path = "lr_find.png", beta: float = 0.98) -> dict:
    """Run the range test; returns {suggested_lr, reason, lrs, losses, plot}."""
    cfg = config or Config()
    device = resolve_device(cfg.device)
    data = prepare(data_dir, ("train",), cfg.image_size, cfg.channels, cfg.resize, cfg.cache)
    model = build_model(cfg, len(data.classes))
    model.to(device).train()
    opt = create_optimizer(model, cfg.optimizer, start_lr, cfg.weight_decay, cfg.momentum, cfg.nesterov)
    prec = resolve_precision(cfg.precision, device)
    to_dev = ToDevice(device, torch.tensor(data.mean, device=device), torch.tensor(data.std, device=device))
    loader = train_loader(data.sources["train"], cfg, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    factor = (end_lr / start_lr) ** (1 / max(num_steps - 1, 1))
    lrs, losses, smoothed, avg, best = [], [], [], 0.0, math.inf
    epoch = 0
    while len(lrs) < num_steps:
        loader.set_epoch(epoch := epoch + 1)
        for xb, yb in loader:
            lr = start_lr * factor ** len(lrs)
            apply_lr(opt, lr)
            x, y = to_dev(xb, gen, augment_of(cfg)), yb.to(device)
            with prec.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()  # the range test needs every loss on the host
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (len(lrs) + 1))  # bias-corrected running mean
            lrs.append(lr), losses.append(value), smoothed.append(s)
            best = min(best, s)
            if not math.isfinite(s) or s > 4 * best or len(lrs) >= num_steps:
                break
        if not math.isfinite(smoothed[-1]) or smoothed[-1] > 4 * best:
            break
    lr_arr, sm_arr = np.array(lrs), np.array(smoothed)
    finite = np.isfinite(sm_arr)
    lr_s, reason = suggest(lr_arr[finite], sm_arr[finite])
    out = Path(out)
    _plot(lr_arr, np.array(losses), sm_arr, lr_s, out)
    result = {"suggested_lr": lr_s, "reason": reason, "lrs": lrs, "losses": losses, "smoothed": smoothed,
              "plot": str(out)}
    atomic_write_json(out.with_suffix(".json"), result)
    log.info("lr-find: suggested learning_rate %.2e (%s); plot in %s", lr_s, reason, out)
    return result


def _plot(lrs: np.ndarray, losses: np.ndarray, smoothed: np.ndarray, suggested: float, out: Path) -> None:
    from ..evaluation.plots import _figure, _save

    fig, ax = _figure(7, 4.5)
    ax.plot(lrs, losses, color="0.75", lw=1, label="loss per step")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="smoothed loss")
    ax.axvline(suggested, color="C3", ls="--", label=f"suggested {suggested:.2e}")
    ax.set_xscale("log")
    finite = smoothed[np.isfinite(smoothed)]
    if len(finite):
        ax.set_ylim(finite.min() * 0.9, min(finite[0] * 1.5, finite.max()) * 1.05)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.legend()
    fig.tight_layout()
    _save(fig, out)
