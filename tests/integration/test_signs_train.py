"""SIGNS end to end with the default config (skipped when ../shared/data/signs is absent)."""
import csv

import pytest

from imgclf import evaluate, fit, load_config, make_manifests


@pytest.fixture(scope="module")
def signs_data(tmp_path_factory):
    from conftest import SIGNS

    if not (SIGNS / "train").is_dir():
        pytest.skip("../shared/data/signs is not present")
    out = tmp_path_factory.mktemp("signs") / "data"
    make_manifests(SIGNS / "train", out, test_src=SIGNS / "test", seed=230)
    return out


def test_default_config_reaches_90_percent_on_test(signs_data, tmp_path):
    summary = fit(signs_data, tmp_path / "run")
    result = evaluate(tmp_path / "run", "test", "best")
    assert result["n"] == 120
    assert result["accuracy"] >= 0.90, result
    assert summary["best_valid_acc"] >= 0.85


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_cached_and_lazy_paths_train_identically(signs_data, tmp_path):
    cfg = load_config(overrides={"num_epochs": 2})
    fit(signs_data, tmp_path / "cached", cfg)
    fit(signs_data, tmp_path / "lazy", cfg.model_copy(update={"cache": False}))
    assert _rows(tmp_path / "cached") == _rows(tmp_path / "lazy")
