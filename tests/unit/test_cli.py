"""The CLI end to end on a tiny generated dataset, and every bad-input case of issue 2."""
import csv
import json
import subprocess
import sys

import pytest

from imgclf.cli import main
from conftest import TINY

SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def _metrics_without_time(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_manifest_train_evaluate(tmp_path, image_folder, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["manifest", str(image_folder), "--out", str(data), "--split", "0.6,0.2,0.2"]) == 0
    assert {p.name for p in data.iterdir()} >= {"train.csv", "valid.csv", "test.csv", "classes.json"}
    assert main(["train", "--data", str(data), "--run", str(run), *SETS]) == 0
    for f in ("config.json", "run.json", "metrics.csv", "train.log", "best.safetensors", "best.json",
              "last.safetensors", "last.json", "report.html", "metrics_train.json", "metrics_valid.json"):
        assert (run / f).is_file(), f
    rows = _metrics_without_time(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr"]
    assert json.loads((run / "config.json").read_text())["num_epochs"] == 2
    assert "epoch 2/2" in (run / "train.log").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "metrics_test.json").read_text())
    assert printed == saved
    assert saved["n"] == 6 and 0 <= saved["accuracy"] <= 1 and set(saved["per_class_accuracy"]) == {"a", "b", "c"}
    best = json.loads((run / "best.json").read_text())
    assert saved["epoch"] == best["epoch"]
    assert float(rows[best["epoch"] - 1]["valid_acc"]) == max(float(r["valid_acc"]) for r in rows)


def test_same_seed_same_metrics_and_weights(data_dir, tmp_path):
    runs = [tmp_path / "r1", tmp_path / "r2"]
    for run in runs:
        assert main(["train", "--no-report", "--data", str(data_dir), "--run", str(run), *SETS]) == 0
    assert _metrics_without_time(runs[0]) == _metrics_without_time(runs[1])
    assert (runs[0] / "last.safetensors").read_bytes() == (runs[1] / "last.safetensors").read_bytes()
    assert main(["train", "--no-report", "--data", str(data_dir), "--run", str(tmp_path / "r3"), *SETS,
                 "--set", "seed=1"]) == 0
    assert _metrics_without_time(runs[0]) != _metrics_without_time(tmp_path / "r3")


def test_lazy_path_matches_cached_path(data_dir, tmp_path):
    main(["train", "--no-report", "--data", str(data_dir), "--run", str(tmp_path / "c"), *SETS])
    main(["train", "--no-report", "--data", str(data_dir), "--run", str(tmp_path / "l"), *SETS, "--no-cache"])
    assert _metrics_without_time(tmp_path / "c") == _metrics_without_time(tmp_path / "l")


def test_console_script_runs_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "imgclf", "evaluate", "--run", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not an imgclf run" in r.stderr


# --- bad input: one line naming the file and row, non-zero exit, no traceback -------------------

def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("imgclf: error: ")
    return last


def _train(data, run):
    return ["train", "--no-report", "--data", str(data), "--run", str(run), *SETS]


def _edit_csv(path, fn):
    rows = list(csv.reader(open(path, newline="")))
    rows = fn(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def test_missing_image(data_dir, tmp_path, capsys):
    _edit_csv(data_dir / "valid.csv", lambda r: r[:2] + [["gone.png", r[1][1]]] + r[2:])
    msg = _error(capsys, _train(data_dir, tmp_path / "run"))
    assert "valid.csv line 3" in msg and "gone.png" in msg and "delete the row" in msg


@pytest.mark.parametrize("no_cache", [False, True])
def test_unreadable_image(data_dir, tmp_path, capsys, no_cache):
    rows = list(csv.reader(open(data_dir / "train.csv", newline="")))
    (data_dir / rows[4][0]).write_bytes(b"this is not a png")
    argv = _train(data_dir, tmp_path / "run") + (["--no-cache"] if no_cache else [])
    msg = _error(capsys, argv)
    assert "train.csv line 5" in msg and "cannot read image" in msg


def test_error_line_counts_blank_and_multiline_rows(data_dir, tmp_path, capsys):
    rows = (data_dir / "valid.csv").read_text().splitlines()
    # line 1 header, 2-3 a row whose note spans two lines, 4 blank, 5 a missing image
    text = "path,label,note\n" + rows[1] + ',"two\nlines"\n\ngone.png,a,\n' + ",\n".join(rows[2:]) + ",\n"
    (data_dir / "valid.csv").write_text(text)
    msg = _error(capsys, _train(data_dir, tmp_path / "run"))
    assert "valid.csv line 5" in msg and "gone.png is missing" in msg


def test_csv_without_path_label_columns(data_dir, tmp_path, capsys):
    _edit_csv(data_dir / "train.csv", lambda r: [["file", "class"]] + r[1:])
    msg = _error(capsys, _train(data_dir, tmp_path / "run"))
    assert "train.csv line 1" in msg and "'path' and 'label'" in msg


def test_label_missing_from_train(data_dir, tmp_path, capsys):
    _edit_csv(data_dir / "test.csv", lambda r: r[:3] + [[r[3][0], "zebra"]] + r[4:])
    msg = _error(capsys, _train(data_dir, tmp_path / "run"))  # caught before any training
    assert "test.csv line 4" in msg and "'zebra'" in msg and "train.csv" in msg


def test_empty_split(data_dir, tmp_path, capsys):
    _edit_csv(data_dir / "valid.csv", lambda r: r[:1])
    msg = _error(capsys, _train(data_dir, tmp_path / "run"))
    assert "valid.csv" in msg and "empty" in msg


def test_empty_class(data_dir, tmp_path, capsys):
    _edit_csv(data_dir / "train.csv", lambda r: [row for row in r if row[1] != "b"])
    msg = _error(capsys, _train(data_dir, tmp_path / "run"))
    assert "train.csv" in msg and "'b'" in msg and "no images" in msg


def test_existing_run_is_left_untouched(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train(data_dir, run)) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    msg = _error(capsys, _train(data_dir, run) + ["--set", "seed=5"])
    assert str(run) in msg and "--overwrite" in msg
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (data_dir / "valid.csv").write_text("path,label\n")  # bad data: --overwrite must not cost the old run
    _error(capsys, _train(data_dir, run) + ["--set", "seed=5", "--overwrite"])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (data_dir / "valid.csv").write_text((data_dir / "train.csv").read_text())
    assert main(_train(data_dir, run) + ["--set", "seed=5", "--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["seed"] == 5


def test_unknown_config_key(data_dir, tmp_path, capsys):
    msg = _error(capsys, _train(data_dir, tmp_path / "run") + ["--set", "learnig_rate=0.1"])
    assert "learnig_rate" in msg and "learning_rate" in msg
    assert not (tmp_path / "run").exists()


def test_demo_writes_a_normal_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("imgclf.demo.DEMO_CONFIG", {**TINY, "image_size": 8, "channels": 1, "num_epochs": 1})
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "test" in out and "accuracy" in out
    run = tmp_path / "demo" / "run-1"
    assert (run / "metrics_test.json").exists() and (run / "best.safetensors").exists()
    assert len(list((tmp_path / "demo" / "digits" / "images").glob("*.png"))) == 1797
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0  # a second demo keeps the first
    assert (tmp_path / "demo" / "run-2" / "metrics_test.json").exists() and run.exists()


def test_quiet_keeps_the_terminal_quiet_but_the_log_complete(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-q", "--no-report", "--data", str(data_dir), "--run", str(run), *SETS]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/2" not in captured.err and "best valid accuracy" in captured.out
    assert "epoch 1/2" in (run / "train.log").read_text()
