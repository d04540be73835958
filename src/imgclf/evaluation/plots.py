"""The run's figures, as PNG files of a fixed pixel size (matplotlib, Agg backend).

Each function takes plain arrays and a path, draws one figure and writes it atomically.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_bytes

DPI = 100


def _figure(width_in: float, height_in: float, *subplots: int):
    """A Figure of its own (not pyplot's), so a notebook's backend and open figures are left alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    return fig, fig.subplots(*(subplots or (1, 1)))


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # no bbox="tight": the pixel size stays what was asked
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def learning_curves(rows: list[dict], best_epoch: int, path: str | Path) -> Path:
    """Loss and accuracy per epoch, train vs valid, the best epoch marked. 1000×400 px."""
    fig, (ax_loss, ax_acc) = _figure(10, 4, 1, 2)
    epochs = [int(r["epoch"]) for r in rows]
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [float(r[f"train_{key}"]) for r in rows], "o-", ms=3, label="train")
        ax.plot(epochs, [float(r[f"valid_{key}"]) for r in rows], "o-", ms=3, label="valid")
        if best_epoch:
            ax.axvline(best_epoch, color="0.5", ls="--", lw=1, label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(cm: np.ndarray, classes: list[str], path: str | Path) -> Path:
    """Raw counts and row-normalised (recall) side by side; rows are the true class. 1100×500 px."""
    cm = np.asarray(cm, dtype=np.int64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, axes = _figure(11, 5, 1, 2)
    for ax, data, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised", ".2f")):
        ax.imshow(data, cmap="Blues", vmin=0)
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=45 if len(classes) > 6 else 0)
        ax.set_yticks(ticks, classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if len(classes) <= 20:
            top = data.max() if data.size else 0
            for i in range(len(classes)):
                for j in range(len(classes)):
                    ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=8,
                            color="white" if top and data[i, j] > top / 2 else "black")
    fig.tight_layout()
    return _save(fig, path)


def image_grid(images: np.ndarray, titles: list[str], path: str | Path, columns: int = 8,
               colors: list[str] | None = None) -> Path:
    """(N, H, W, C) uint8 images in a grid with a title each; 2 in per column, 2.3 in per row."""
    n = max(len(images), 1)
    rows = -(-n // columns)
    fig, axes = _figure(2 * columns, 2.3 * rows, rows, columns)
    for i, ax in enumerate(np.asarray(axes).ravel()):
        ax.axis("off")
        if i < len(images):
            img = images[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8, color=(colors[i] if colors else "black"))
    fig.tight_layout()
    return _save(fig, path)


def per_class_f1(classes: list[str], f1: list[float], support: list[int], path: str | Path) -> Path:
    """F1 per class as horizontal bars, with each class's support. 800 px wide."""
    fig, ax = _figure(8, max(2.5, 0.35 * len(classes) + 1))
    y = np.arange(len(classes))
    ax.barh(y, f1, color="C0")
    ax.set_yticks(y, [f"{c} (n={s})" for c, s in zip(classes, support)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    for yi, v in zip(y, f1):
        ax.text(min(v + 0.01, 0.93), yi, f"{v:.2f}", va="center", fontsize=8)
    ax.set_title("per-class F1")
    fig.tight_layout()
    return _save(fig, path)
