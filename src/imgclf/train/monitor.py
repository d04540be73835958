"""What a person watches: a tqdm bar per epoch (terminal only) and TensorBoard (optional extra)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

POSTFIX_EVERY = 20  # batches between loss read-backs; only when a bar is shown (each one syncs)


class EpochBar:
    """A per-epoch bar with loss and images/s; a no-op (and no device syncs) when disabled."""

    def __init__(self, enabled: bool, epoch: int, n_epochs: int, n_images: int, done: int = 0) -> None:
        self.bar = None
        self.count = 0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_images, initial=done, desc=f"epoch {epoch}/{n_epochs}", unit="img",
                            leave=False, dynamic_ncols=True)

    def update(self, n: int, loss: torch.Tensor) -> None:
        if self.bar is None:
            return
        self.bar.update(n)
        self.count += 1
        if self.count % POSTFIX_EVERY == 1:
            self.bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoard:
    """Scalars under RUN/tb/ when the `tensorboard` extra is installed; silently absent otherwise."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.debug("tensorboard is not installed; pip install 'imgclf[tensorboard]' for RUN/tb/")
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
