"""Learning-rate schedules as functions of the optimizer step, plus the one stateful exception.

lr(step) = learning_rate · warmup(step) · main(step − warmup_steps) · plateau_scale
- warmup: linear from 1/W to 1 over the first W = warmup_epochs·steps_per_epoch steps.
- constant: 1.
- step: gamma^⌊epoch / step_size⌋ (torch's StepLR, counted in epochs).
- cosine: m + (1 − m)·(1 + cos(π·t/T))/2 with m = min_lr/learning_rate (CosineAnnealingLR).
- onecycle: cosine up from lr/25 to lr over the first 30% of steps, then cosine down to lr/25e4
  (OneCycleLR's defaults, which bring their own warm-up).
- plateau: ×gamma after `plateau_patience` epochs without a relative improvement of 1e-4 in the
  early-stopping metric (ReduceLROnPlateau's rule), floored at min_lr.
The tests compare each curve with torch's own scheduler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def onecycle_factor(step: int, total: int, pct_start: float = 0.3, div: float = 25.0,
                    final_div: float = 1e4) -> float:
    initial, minimum = 1.0 / div, 1.0 / div / final_div
    up_end, down_end = pct_start * total - 1, total - 1
    if step <= up_end:
        return _cos_anneal(initial, 1.0, step / up_end if up_end > 0 else 1.0)
    return _cos_anneal(1.0, minimum, (step - up_end) / max(down_end - up_end, 1e-12))


@dataclass
class Schedule:
    name: str
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int = 0
    step_size: int = 10  # epochs, for `step`
    gamma: float = 0.1  # decay factor of `step` and `plateau`
    min_factor: float = 0.0  # min_lr / learning_rate
    patience: int = 3  # epochs, for `plateau`
    mode: str = "max"  # plateau: is a larger metric better?
    # plateau state (saved with the resume state)
    scale: float = 1.0
    best: float | None = None
    bad_epochs: int = 0

    def factor(self, step: int) -> float:
        """The multiplier of learning_rate at optimizer step `step` (0-based)."""
        w = self.warmup_steps
        warm = min(1.0, (step + 1) / w) if w > 0 else 1.0
        t, span = max(step - w, 0), max(self.total_steps - w, 1)
        if self.name == "step":
            main = self.gamma ** (t // (self.step_size * self.steps_per_epoch))
        elif self.name == "cosine":
            main = self.min_factor + (1 - self.min_factor) * (1 + math.cos(math.pi * min(t, span) / span)) / 2
        elif self.name == "onecycle":
            main = onecycle_factor(min(t, span - 1), span)
        else:
            main = 1.0
        return warm * main * self.scale

    def end_epoch(self, metric: float) -> None:
        """Feed the epoch's monitored valid metric (used by `plateau` only)."""
        if self.name != "plateau":
            return
        better = self.best is None or (metric > self.best * (1 + 1e-4) if self.mode == "max"
                                       else metric < self.best * (1 - 1e-4))
        if better:
            self.best, self.bad_epochs = metric, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale = max(self.scale * self.gamma, self.min_factor)
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = state["scale"], state["best"], state["bad_epochs"]


def apply_lr(optimizer, lr: float) -> None:
    """Set every group's lr (a Python float: no device sync)."""
    for g in optimizer.param_groups:
        g["lr"] = lr
