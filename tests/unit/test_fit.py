"""The training loop through the Python API."""
import csv

import pytest

from imgclf import fit, load_config
from imgclf.errors import ImgclfError
from conftest import TINY


def _epochs(run):
    with open(run / "metrics.csv", newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_early_stopping_stops_after_patience(data_dir, tmp_path):
    # A learning rate this small leaves the predictions, and so valid accuracy, unchanged.
    cfg = load_config(overrides={**TINY, "num_epochs": 6, "learning_rate": 1e-12, "batch_norm": False,
                                 "early_stopping_patience": 2})
    summary = fit(data_dir, tmp_path / "run", cfg)
    assert _epochs(tmp_path / "run") == [1, 2, 3] and summary["best_epoch"] == 1


def test_without_patience_all_epochs_run(data_dir, tmp_path):
    cfg = load_config(overrides={**TINY, "num_epochs": 3, "learning_rate": 1e-12, "batch_norm": False})
    fit(data_dir, tmp_path / "run", cfg)
    assert _epochs(tmp_path / "run") == [1, 2, 3]


def test_diverging_loss_stops_with_advice(data_dir, tmp_path):
    cfg = load_config(overrides={**TINY, "num_epochs": 3, "learning_rate": 1e30, "init": "normal",
                                 "init_std": 100.0, "batch_norm": False, "augment": False})
    with pytest.raises(ImgclfError, match="lower learning_rate"):
        fit(data_dir, tmp_path / "run", cfg)
