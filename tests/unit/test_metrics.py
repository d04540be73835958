"""Metrics against hand-computed values, and the test-set discipline."""
import json
import logging

import pytest
import torch

from imgclf.evaluation.metrics import bootstrap_ci, classification_metrics

# true:  0 0 1 1 2 2 2
# pred:  0 1 1 1 2 0 2   (second choice in brackets: 1 0 0 2 0 2 1)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 2])
PRED = [0, 1, 1, 1, 2, 0, 2]
SECOND = [1, 0, 0, 2, 0, 2, 1]


def _logits():
    x = torch.zeros(7, 3)
    for i, (p, s) in enumerate(zip(PRED, SECOND)):
        x[i, p], x[i, s] = 2.0, 1.0
    return x


def test_against_a_hand_computed_confusion_matrix():
    m = classification_metrics(_logits(), LABELS, ["a", "b", "c"], top_k=(2,))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    pc = m["per_class"]
    assert [pc[c]["precision"] for c in "abc"] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [pc[c]["recall"] for c in "abc"] == pytest.approx([1 / 2, 1.0, 2 / 3])
    assert [pc[c]["f1"] for c in "abc"] == pytest.approx([0.5, 0.8, 0.8])
    assert [pc[c]["support"] for c in "abc"] == [2, 2, 3]
    assert m["macro"]["f1"] == pytest.approx(0.7)
    assert m["weighted"]["f1"] == pytest.approx((0.5 * 2 + 0.8 * 2 + 0.8 * 3) / 7)
    assert m["top_k_accuracy"]["2"] == pytest.approx(1.0)  # every true class is first or second
    assert m["loss"] == pytest.approx(torch.nn.functional.cross_entropy(_logits(), LABELS).item())
    lo, hi = m["accuracy_ci95"]
    assert 0 <= lo <= m["accuracy"] <= hi <= 1


def test_bootstrap_interval_narrows_with_more_samples():
    import numpy as np

    small = bootstrap_ci(np.array([1.0, 0.0] * 10))
    large = bootstrap_ci(np.array([1.0, 0.0] * 1000))
    assert small[0] < 0.5 < small[1] and large[1] - large[0] < small[1] - small[0]
    assert bootstrap_ci(np.ones(50)) == [1.0, 1.0]


def test_test_set_discipline(data_dir, tmp_path, caplog, capsys):
    from imgclf import evaluate, fit, load_config
    from imgclf.cli import main
    from conftest import TINY

    run = tmp_path / "run"
    fit(data_dir, run, load_config(overrides=TINY), report=False)
    with caplog.at_level(logging.WARNING, logger="imgclf"):
        evaluate(run, "test")
        evaluate(run, "test")  # the same weights again: nothing is being selected
    assert "already evaluated" not in caplog.text
    history = json.loads((run / "test_evaluations.json").read_text())
    assert len(history) == 2 and history[0]["checkpoint"] == "best"
    # Retraining the run (--overwrite) keeps its test history: the test set was seen
    main(["train", "--data", str(data_dir), "--run", str(run), "--overwrite", "--no-report",
          *sum((["--set", f"{k}={v}"] for k, v in {**TINY, "seed": 7}.items()), [])])
    assert len(json.loads((run / "test_evaluations.json").read_text())) == 2
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--split", "test"]) == 0
    assert "already evaluated on other weights" in capsys.readouterr().err
    assert len(json.loads((run / "test_evaluations.json").read_text())) == 3
    saved = json.loads((run / "metrics_test.json").read_text())
    assert {"accuracy", "loss", "confusion_matrix", "per_class", "macro", "weighted"} <= set(saved)
