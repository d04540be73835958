import json

import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.models import create_model
from imgclf.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

META = {"model": "cnn", "model_args": {"num_channels": 4, "fc_units": 8, "dropout": 0.5, "batch_norm": True},
        "classes": ["a", "b", "c"], "input": {"size": 16, "channels": 3, "resize": "squash"},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "epoch": 3}


def _model():
    torch.manual_seed(0)
    m = create_model("cnn", 3, 3, 16, num_channels=4, fc_units=8)
    m.train()
    m(torch.randn(4, 3, 16, 16))  # move the batch-norm running stats away from their init
    return m.eval()


def test_round_trip_restores_weights_buffers_and_predictions(tmp_path):
    model = _model()
    save_checkpoint(tmp_path, "best", model, META)
    loaded, meta = load_checkpoint(tmp_path, "best")
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(5, 3, 16, 16)
    assert torch.equal(model(x), loaded(x))
    assert meta["classes"] == ["a", "b", "c"] and meta["epoch"] == 3 and not loaded.training
    sidecar = json.loads((tmp_path / "best.json").read_text())
    assert sidecar["format"] == "imgclf-checkpoint" and len(sidecar["weights_sha256"]) == 64


def test_a_torn_pair_is_detected(tmp_path):
    save_checkpoint(tmp_path, "last", _model(), META)
    other = create_model("cnn", 3, 3, 16, num_channels=4, fc_units=8)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "last.safetensors")
    with pytest.raises(ImgclfError, match="does not match"):
        read_checkpoint(tmp_path, "last")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ImgclfError, match="no best checkpoint"):
        read_checkpoint(tmp_path, "best")
