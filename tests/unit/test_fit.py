"""The training loop through the Python API."""
import csv

import pytest
import torch

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
    summary = fit(data_dir, tmp_path / "run", cfg, report=False)
    assert _epochs(tmp_path / "run") == [1, 2, 3] and summary["best_epoch"] == 1


def test_early_stopping_hands_back_the_best_weights(data_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from imgclf.train.trainer import Trainer

    kept = {}
    real_train = Trainer.train

    def spy(self):
        out = real_train(self)
        kept.update({k: v.detach().clone() for k, v in self.module.state_dict().items()})
        return out

    monkeypatch.setattr(Trainer, "train", spy)
    # No epoch can beat epoch 1 by 1.0 in accuracy: epoch 1 stays best while the weights keep training.
    cfg = load_config(overrides={**TINY, "num_epochs": 5, "early_stopping_patience": 2,
                                 "early_stopping_min_delta": 1.0})
    summary = fit(data_dir, tmp_path / "run", cfg, report=False)
    assert summary["stopped_early"] and summary["best_epoch"] == 1 and _epochs(tmp_path / "run") == [1, 2, 3]
    best, last = (load_file(tmp_path / "run" / f"{n}.safetensors") for n in ("best", "last"))
    assert any(not torch.equal(best[k], last[k]) for k in best)  # training did move the weights
    assert all(torch.equal(kept[k].cpu(), best[k]) for k in best)


def test_without_patience_all_epochs_run(data_dir, tmp_path):
    cfg = load_config(overrides={**TINY, "num_epochs": 3, "learning_rate": 1e-12, "batch_norm": False})
    fit(data_dir, tmp_path / "run", cfg, report=False)
    assert _epochs(tmp_path / "run") == [1, 2, 3]


def test_nan_in_epoch_two_keeps_epoch_one_checkpoints(data_dir, tmp_path, monkeypatch):
    import json

    import torch

    from imgclf.train import loop

    real, calls = loop.F.cross_entropy, []

    def poisoned(logits, y, **kw):  # from the 5th training batch on, the loss is NaN
        calls.append(1)
        loss = real(logits, y, **kw)
        return loss * float("nan") if len(calls) > 4 and logits.requires_grad else loss

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    cfg = load_config(overrides={**TINY, "num_epochs": 3, "batch_size": 6})  # 3 batches per epoch
    with pytest.raises(ImgclfError, match="lower learning_rate"):
        fit(data_dir, tmp_path / "run", cfg, report=False)
    run = tmp_path / "run"
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    assert json.loads((run / "resume" / "latest.json").read_text())["epoch"] == 2  # saved at epoch 1's end
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(run / "last.safetensors").values())
    assert _epochs(run) == [1]


def test_tensorboard_events_are_written(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    fit(data_dir, tmp_path / "run", load_config(overrides=TINY), report=False)
    events = list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_diverging_loss_stops_with_advice(data_dir, tmp_path):
    cfg = load_config(overrides={**TINY, "num_epochs": 3, "learning_rate": 1e30, "init": "normal",
                                 "init_std": 100.0, "batch_norm": False, "augment": False})
    with pytest.raises(ImgclfError, match="lower learning_rate"):
        fit(data_dir, tmp_path / "run", cfg, report=False)
