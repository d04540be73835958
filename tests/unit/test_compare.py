"""`imgclf compare`: three tiny real runs, tabulated, sorted and plotted."""
import json
import shutil

import pytest
from PIL import Image

from conftest import TINY, make_image_folder
from imgclf import evaluate, fit, load_config
from imgclf.cli import main
from imgclf.evaluation.compare import MISSING, PLOT_DPI, PLOT_SIZE, compare

# name -> overrides; lr_c sits one level deeper, so finding it needs the recursive walk
RUNS = {"lr_a": {"learning_rate": 0.01},
        "lr_b": {"learning_rate": 0.001, "dropout_rate": 0.2},
        "deeper/lr_c": {"learning_rate": 0.003, "num_epochs": 1}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder of three trained runs (lr_a evaluated on test), plus a folder that is not a run."""
    from imgclf.data.manifest import make_manifests

    root = tmp_path_factory.mktemp("compare")
    data = root / "data"
    make_manifests(make_image_folder(root / "images"), data, labels="filename", split="0.6,0.2,0.2", seed=1)
    parent = root / "runs"
    for name, overrides in RUNS.items():
        fit(data, parent / name, load_config(overrides={**TINY, **overrides}), report=False)  # evaluates nothing
    evaluate(parent / "lr_a", "test")
    (parent / "notes").mkdir()
    (parent / "notes" / "todo.txt").write_text("not a run")
    return parent


def _parse(table: str) -> list[dict]:
    """The rows of a markdown table as {header: cell}."""
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]
    header, body = lines[0], lines[2:]
    return [dict(zip(header, cells)) for cells in body]


def _best_valid_acc(run) -> float:
    return json.loads((run / "best.json").read_text())["metrics"]["valid_acc"]


def test_table_lists_runs_and_only_the_differing_keys(runs, tmp_path):
    result = compare(runs, out=tmp_path)
    assert result["differing_keys"] == ["dropout_rate", "learning_rate", "num_epochs"]
    assert result["constant"]["batch_size"] == TINY["batch_size"]
    rows = _parse(result["table"])
    assert sorted(r["run"] for r in rows) == sorted(RUNS)
    header = list(rows[0])
    assert header[:5] == ["run", "dropout_rate", "learning_rate", "num_epochs", "valid_acc"]
    assert "batch_size" not in header and "seed" not in header
    by_name = {r["run"]: r for r in rows}
    assert by_name["lr_b"]["dropout_rate"] == "0.2" and by_name["lr_a"]["learning_rate"] == "0.01"
    assert by_name["deeper/lr_c"]["epochs"] == "1" and by_name["lr_a"]["epochs"] == "2"
    best_a = json.loads((runs / "lr_a" / "best.json").read_text())
    assert by_name["lr_a"]["best_epoch"] == str(best_a["epoch"])
    assert by_name["lr_a"]["valid_acc"] == f"{100 * best_a['metrics']['valid_acc']:.2f}%"


def test_sorted_best_first_by_valid_acc_and_by_valid_loss(runs, tmp_path):
    acc = {name: _best_valid_acc(runs / name) for name in RUNS}
    expected = sorted(RUNS, key=lambda n: (-acc[n], n))  # ties: by name
    assert [r["run"] for r in _parse(compare(runs, sort="valid_acc", out=tmp_path)["table"])] == expected
    loss = {n: json.loads((runs / n / "best.json").read_text())["metrics"]["valid_loss"] for n in RUNS}
    by_loss = compare(runs, sort="valid_loss", out=tmp_path)
    assert [r["name"] for r in by_loss["rows"]] == sorted(RUNS, key=lambda n: (loss[n], n))


def test_test_columns_only_for_the_evaluated_run_and_missing_sorts_last(runs, tmp_path):
    result = compare(runs, metric="test_acc", out=tmp_path)
    rows = _parse(result["table"])
    assert list(rows[0])[4] == "test_acc"  # the headline column comes right after the config keys
    assert rows[0]["run"] == "lr_a"  # the only run with a test number sorts first
    test = json.loads((runs / "lr_a" / "metrics_test.json").read_text())
    assert rows[0]["test_acc"].startswith(f"{100 * test['accuracy']:.2f}%")
    assert rows[0]["test_loss"] == f"{test['loss']:.4f}"
    assert [r["test_acc"] for r in rows[1:]] == [MISSING, MISSING]
    assert [r["test_loss"] for r in rows[1:]] == [MISSING, MISSING]


def test_without_evaluations_there_is_no_test_column(runs, tmp_path):
    result = compare([runs / "lr_b", runs / "deeper" / "lr_c"], out=tmp_path)
    assert "test_acc" not in _parse(result["table"])[0]
    assert [r["name"] for r in result["rows"]] == sorted(["lr_b", "deeper/lr_c"],
                                                         key=lambda n: (-_best_valid_acc(runs / n), n))


def test_confidence_interval_column_and_its_absence(runs, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs / "lr_a", copy / "a")
    shutil.copytree(runs / "lr_b", copy / "b")
    metrics = json.loads((copy / "a" / "metrics_test.json").read_text())
    metrics["accuracy_ci95"] = [0.5, 0.9]
    (copy / "a" / "metrics_test.json").write_text(json.dumps(metrics))
    rows = {r["run"]: r for r in _parse(compare(copy)["table"])}
    assert rows["a"]["test_acc_ci95"] == "[50.0%, 90.0%]" and rows["b"]["test_acc_ci95"] == MISSING
    metrics.pop("accuracy_ci95")
    (copy / "a" / "metrics_test.json").write_text(json.dumps(metrics))
    assert "test_acc_ci95" not in _parse(compare(copy)["table"])[0]


def test_writes_markdown_and_a_fixed_size_plot(runs, tmp_path):
    result = compare(runs, out=tmp_path / "out")
    md, png = tmp_path / "out" / "compare.md", tmp_path / "out" / "compare_valid.png"
    assert result["files"] == {"markdown": str(md), "plot": str(png)}
    text = md.read_text()
    assert result["table"] in text and "`batch_size=8`" in text and "`deeper/lr_c`" in text
    assert png.stat().st_size > 0
    assert Image.open(png).size == (PLOT_SIZE[0] * PLOT_DPI, PLOT_SIZE[1] * PLOT_DPI)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temp files behind


def test_default_out_is_the_folder_given_or_the_common_parent(runs, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    assert compare(copy)["files"]["markdown"] == str(copy / "compare.md")
    result = compare([copy / "deeper" / "lr_c", copy / "lr_a"])
    assert result["files"]["markdown"] == str(copy / "compare.md")
    assert sorted(r["name"] for r in result["rows"]) == ["deeper/lr_c", "lr_a"]


def test_cli_prints_the_table(runs, tmp_path, capsys):
    assert main(["compare", str(runs), "--sort", "valid_loss", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = _parse(out.strip())
    assert sorted(r["run"] for r in rows) == sorted(RUNS)
    assert (tmp_path / "compare.md").is_file() and (tmp_path / "compare_valid.png").is_file()


def test_cli_no_runs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main(["compare", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no imgclf runs in" in err and "config.json" in err
    assert not (tmp_path / "empty" / "compare.md").exists()
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_cli_rejects_an_unknown_metric(runs):
    with pytest.raises(SystemExit) as e:
        main(["compare", str(runs), "--metric", "f1"])
    assert e.value.code == 2
