"""Studies: variant parsing, identical data across variants, readings backed by numbers, reuse."""
import json
import logging
import re

import numpy as np
import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.studies.interpret import (GROWTH, growth_per_layer, growth_reading, identical_unit_layers, init_readings,
                                      regularization_readings)
from imgclf.studies.study import parse_init_schemes, parse_reg_variants, run_study
from conftest import TINY


def test_parse_schemes_and_variants():
    assert parse_init_schemes("zeros,normal:1.0,he_normal") == {
        "zeros": {"init": "zeros"}, "normal_1.0": {"init": "normal", "init_std": 1.0}, "he_normal": {"init": "he_normal"}}
    v = parse_reg_variants("none,l2:1e-3,dropout:0.3,augment,early_stop:2")
    assert v["none"] == {"weight_decay": 0.0, "dropout_rate": 0.0, "augment": False, "early_stopping_patience": 0}
    assert v["l2_1e-3"]["weight_decay"] == 1e-3 and v["l2_1e-3"]["dropout_rate"] == 0.0
    assert v["dropout_0.3"]["dropout_rate"] == 0.3 and v["augment"]["augment"] is True
    assert v["early_stop_2"]["early_stopping_patience"] == 2
    for bad in ("glorot", "normal:big"):
        with pytest.raises(ImgclfError, match="--schemes"):
            parse_init_schemes(bad)
    with pytest.raises(ImgclfError, match="--variants"):
        parse_reg_variants("l1:0.1")


def test_variants_see_identical_data_and_augmentation(data_dir, tmp_path, monkeypatch):
    from imgclf.train import loop

    seen: dict[str, list] = {}
    current = {}
    real = loop.augment_and_normalize

    def spy(x, *args, **kw):
        out = real(x, *args, **kw)
        if kw.get("aug", args[3] if len(args) > 3 else None) is not None:
            seen.setdefault(current["name"], []).append(out.clone())
        return out

    monkeypatch.setattr(loop, "augment_and_normalize", spy)
    import imgclf.studies.study as study

    real_fit = study.fit

    def named_fit(data, run, cfg, **kw):
        current["name"] = run.name
        return real_fit(data, run, cfg, **kw)

    monkeypatch.setattr(study, "fit", named_fit)
    summary = run_study("init", data_dir, parse_init_schemes("xavier_uniform,he_normal"), tmp_path / "s",
                        epochs=2, overrides={k: v for k, v in TINY.items() if k != "num_epochs"})
    a, b = seen["xavier_uniform"], seen["he_normal"]
    assert len(a) == len(b) > 2 and all(torch.equal(x, y) for x, y in zip(a, b))  # same batches, same draws
    assert {r["variant"] for r in summary["rows"]} == {"xavier_uniform", "he_normal"}
    assert (tmp_path / "s" / "report.html").exists() and (tmp_path / "s" / "compare.md").exists()
    stats = summary["layer_stats"]["he_normal"]
    assert stats["0"] and stats["1"] and set(stats["0"]) == set(stats["1"])  # step 0 and the end of epoch 1
    html = (tmp_path / "s" / "report.html").read_text()
    assert "Per-layer statistics at step 0" in html and "at the end of epoch 1" in html


TINY1 = {k: v for k, v in TINY.items() if k != "num_epochs"}


def test_one_epoch_study_has_both_layer_tables(data_dir, tmp_path):
    summary = run_study("init", data_dir, parse_init_schemes("zeros,xavier_uniform"), tmp_path / "s", epochs=1,
                        overrides=TINY1)
    saved = json.loads((tmp_path / "s" / "summary.json").read_text())
    n_batches = -(-len((data_dir / "train.csv").read_text().splitlines()[1:]) // TINY["batch_size"])
    assert saved["layer_stats_steps"] == {"0": 0, "1": n_batches - 1}  # epoch 1's last batch
    for name in ("zeros", "xavier_uniform"):
        stats = saved["layer_stats"][name]
        assert stats["0"] and stats["1"] and stats["0"] != stats["1"]
    html = (tmp_path / "s" / "report.html").read_text()
    assert html.count("<h3>Per-layer statistics") == 2
    assert f"at the end of epoch 1 (its last batch, step {n_batches - 1})" in html
    md = (tmp_path / "s" / "summary.md").read_text()
    assert "## Per-layer statistics at step 0" in md and "## Per-layer statistics at the end of epoch 1" in md
    assert summary["rows"][0]["act_std_growth"] == 0.0  # zeros: the first layer outputs a constant


def _config(run):
    return json.loads((run / "config.json").read_text())


def test_rerun_reuses_only_identical_finished_runs(data_dir, tmp_path, caplog):
    out, schemes = tmp_path / "s", parse_init_schemes("xavier_uniform")
    run_study("init", data_dir, schemes, out, epochs=1, overrides=TINY1)
    first = (out / "xavier_uniform" / "metrics.csv").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="imgclf"):
        run_study("init", data_dir, schemes, out, epochs=1, overrides=TINY1)
    assert "reusing it" in caplog.text and (out / "xavier_uniform" / "metrics.csv").stat().st_mtime_ns == first
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imgclf"):
        summary = run_study("init", data_dir, schemes, out, epochs=1, overrides={**TINY1, "learning_rate": 0.05})
    assert "learning_rate=0.001" in caplog.text and "learning_rate=0.05" in caplog.text
    assert "training xavier_uniform again" in caplog.text
    assert _config(out / "xavier_uniform")["learning_rate"] == 0.05  # retrained with the new config
    assert _config(out / "xavier_uniform.replaced-1")["learning_rate"] == 0.001  # the old run is kept, whole
    assert (out / "xavier_uniform.replaced-1" / "best.safetensors").is_file()
    assert [r["variant"] for r in summary["rows"]] == ["xavier_uniform"]


def _run(rows, stats0=None, weights=None, crossed=None):
    return {"rows": rows, "stats": {0: stats0 or {}, 1: {}}, "weights": weights or {}, "crossed": crossed}


def test_init_readings_quote_their_numbers():
    ln6 = float(np.log(6))
    zeros = _run([{"epoch": 1, "train_loss": ln6, "valid_acc": 0.16}],
                 {"c1": {"act_std": 0.0, "grad_norm": 0.0}, "fc": {"act_std": 0.0, "grad_norm": 0.3}},
                 {"c1.weight": np.zeros((4, 3, 3, 3))})
    big = _run([{"epoch": 1, "train_loss": 9.0, "valid_acc": 0.5}],
               {"c1": {"act_std": 40.0, "grad_norm": 5.0}, "fc": {"act_std": 900.0, "grad_norm": 9.0}},
               {"c1.weight": np.random.default_rng(0).normal(size=(4, 3, 3, 3))}, crossed=None)
    ref = _run([{"epoch": 1, "train_loss": 0.5, "valid_acc": 0.9}],
               {"c1": {"act_std": 0.8, "grad_norm": 0.1}, "fc": {"act_std": 1.2, "grad_norm": 0.2}}, crossed=1)
    text = init_readings({"zeros": zeros, "normal_1.0": big, "xavier_uniform": ref}, 6, "xavier_uniform")
    joined = "\n".join(text)
    assert "zeros: valid accuracy 0.160" in joined and "chance" in joined
    assert "identical weights" in joined and "symmetry never broken" in joined
    assert re.search(r"normal_1.0: at step 0 layer fc's activation std is 900 against 1.2 .*×750.* exploding", joined)
    assert "normal_1.0: epoch-1 training cost 9.00 is 5.0× ln 6" in joined
    assert not any(t.startswith("xavier_uniform:") for t in text)  # nothing odd about the reference
    assert all(re.search(r"\d", t) for t in text)  # every sentence quotes a number


def _layers(gains):
    """Step-0 stats of a chain of layers, each with the given gain (output std / input std)."""
    out, std = {}, 1.0
    for k, g in enumerate(gains):
        out[f"l{k}"] = {"act_mean": 0.0, "act_std": std * g, "in_std": std, "grad_norm": 1.0}
        std *= g
    return out


@pytest.mark.parametrize("gains, verdict", [([5.0, 40.0, 40.0, 320.0], "exploding"),
                                            ([0.1, 0.2, 0.05], "vanishing"),
                                            ([1.0, 0.0], "vanishing"),  # a layer that outputs a constant
                                            ([0.5, 2.0, 1.5, 0.9], None)])
def test_growth_reading_from_one_runs_layer_gains(gains, verdict):
    stats = _layers(gains)
    growth = growth_per_layer(stats)
    assert growth == pytest.approx(float(np.prod(gains)) ** (1 / len(gains)))
    text = growth_reading("s", stats)
    if verdict is None:
        assert 1 / GROWTH <= growth <= GROWTH and text is None
    else:
        assert f"→ {verdict} activations" in text
        zero = "l1 turns an input of std 1 into an output of std 0"
        assert (f"×{growth:.3g} per layer" if growth else zero) in text
    runs = {"s": _run([{"epoch": 1, "train_loss": 1.0, "valid_acc": 0.5}], stats)}
    assert any(verdict in t for t in init_readings(runs, 6, None)) == (verdict is not None)  # no reference needed


def test_growth_is_per_layer_gain_not_output_ratio():
    # batch norm between layers: every output std is ~1 however large the weights, but each gain is ×30
    stats = {f"l{k}": {"act_mean": 0.0, "act_std": 30.0, "in_std": 1.0, "grad_norm": 1.0} for k in range(4)}
    assert growth_per_layer(stats) == pytest.approx(30.0)
    assert "grows ×30 per layer" in growth_reading("normal_1.0", stats)
    assert growth_per_layer({"l0": {"act_std": 0.0, "in_std": 0.0, "grad_norm": 0.0}}) is None


def test_first_to_the_threshold_groups_ties():
    row = [{"epoch": 1, "train_loss": 1.0, "valid_acc": 0.9}]
    runs = {"a": _run(row, crossed=2), "b": _run(row, crossed=2), "c": _run(row, crossed=3), "d": _run(row)}
    assert init_readings(runs, 6, None)[-1] == "first to valid accuracy 0.8: a, b (epoch 2); then c (epoch 3); never: d"


def test_identical_units_detects_only_identical_layers():
    w = np.ones((5, 2, 3, 3))
    assert identical_unit_layers({"a.weight": w, "b.weight": w + np.arange(5).reshape(5, 1, 1, 1)}) == [("a", 5, 0.0)]


def test_regularization_readings():
    runs = {"none": {"best_row": {"epoch": 5, "train_acc": 1.0, "valid_acc": 0.85}},
            "l2": {"best_row": {"epoch": 5, "train_acc": 0.80, "valid_acc": 0.78}},
            "dropout": {"best_row": {"epoch": 5, "train_acc": 0.96, "valid_acc": 0.95}}}
    text = regularization_readings(runs)
    assert "none: train 100.0%, valid 85.0% at epoch 5 → high variance (train−valid gap +15.0%" in text[0]
    assert "high bias (train error 20.0%" in text[1] and "variance" not in text[1]
    assert "good fit" in text[2]
