"""Layer statistics against hand-computed values, and their place in a run."""
import json

import pytest
import torch
import torch.nn as nn

from imgclf import fit, load_config
from imgclf.studies.layer_stats import LayerStats
from conftest import TINY


def _net():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 1.0, -0.5]))
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]]))
        net[2].bias.zero_()
    return net


X = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0], [-2.0, 0.5]])


def test_stats_match_hand_computed_values():
    net = _net().train()
    stats = LayerStats(net, every=1)
    out = net(X)
    out.pow(2).sum().backward()
    rec = stats.collect(step=0, epoch=1)["layers"]
    h = X @ net[0].weight.T + net[0].bias  # first layer output, by hand
    y = torch.relu(h) @ net[2].weight.T
    assert rec["0"]["act_mean"] == pytest.approx(h.mean().item()) and rec["0"]["act_std"] == pytest.approx(h.std().item())
    assert rec["2"]["act_mean"] == pytest.approx(y.mean().item()) and rec["2"]["act_std"] == pytest.approx(y.std().item())
    g2 = 2 * y.T @ torch.relu(h)  # d(sum y²)/dW2
    assert rec["2"]["grad_norm"] == pytest.approx(g2.norm().item())
    g1 = ((2 * y @ net[2].weight) * (h > 0)).T @ X  # back through the ReLU
    assert rec["0"]["grad_norm"] == pytest.approx(g1.norm().item())
    assert rec["0"]["weight_std"] == pytest.approx(net[0].weight.std().item())
    assert rec["0"]["in_std"] == pytest.approx(X.std().item())  # what each layer received
    assert rec["2"]["in_std"] == pytest.approx(torch.relu(h).std().item())


def test_records_only_when_armed_and_training():
    net = _net()
    stats = LayerStats(net, every=3)
    assert stats.active and stats.wants(3) and not stats.wants(4)
    net.eval()
    net(X)
    assert not stats._acts  # eval passes (validation) are never recorded
    stats.active = False
    net.train()
    net(X)
    assert not stats._acts
    stats.close()
    assert not net[0]._forward_hooks


def test_a_run_records_every_n_batches_and_costs_nothing_when_off(data_dir, tmp_path, monkeypatch):
    fit(data_dir, tmp_path / "on", load_config(overrides={**TINY, "track_stats": 2}), report=False)
    records = json.loads((tmp_path / "on" / "layer_stats.json").read_text())
    steps = [r["step"] for r in records]
    assert steps[0] == 0 and all(s % 2 == 0 for s in steps) and steps == sorted(set(steps))
    assert set(records[0]["layers"]) == {"features.0", "features.4", "features.8", "head.1", "head.5"}
    created = []
    monkeypatch.setattr("imgclf.train.trainer.LayerStats", lambda *a, **k: created.append(1))
    fit(data_dir, tmp_path / "off", load_config(overrides=TINY), report=False)
    assert not created and not (tmp_path / "off" / "layer_stats.json").exists()
