"""Each figure is created, non-empty, and of the intended pixel size."""
import numpy as np
import pytest
from PIL import Image

from imgclf.evaluation import plots

ROWS = [{"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "train_acc": 1 - 0.5 / e, "valid_acc": 1 - 0.6 / e}
        for e in range(1, 6)]


def _size(path):
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        return im.size


def test_learning_curves(tmp_path):
    assert _size(plots.learning_curves(ROWS, 4, tmp_path / "c.png")) == (1000, 400)


def test_confusion_matrix(tmp_path):
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    assert _size(plots.confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm.png")) == (1100, 500)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid(tmp_path, channels):
    imgs = np.random.default_rng(0).integers(0, 256, (10, 16, 16, channels), dtype=np.uint8)
    out = plots.image_grid(imgs, [f"img {i}" for i in range(10)], tmp_path / "g.png", columns=8,
                           colors=["red"] * 10)
    assert _size(out) == (1600, 460)  # 8 columns × 2 in, 2 rows × 2.3 in, at 100 dpi


def test_per_class_f1(tmp_path):
    out = plots.per_class_f1(["a", "b", "c"], [0.9, 0.5, 0.7], [10, 12, 8], tmp_path / "f1.png")
    assert _size(out) == (800, 250)
