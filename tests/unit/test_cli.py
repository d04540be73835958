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
    assert "np.str_" not in msg and f"'{(data_dir / rows[4][0]).resolve()}'" in msg  # plain, as Pillow quotes it


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
    def snapshot():  # every file of the run, report, plots and resume state included
        return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    before = snapshot()
    assert any(p.parts[0] == "resume" for p in before)
    msg = _error(capsys, _train(data_dir, run) + ["--set", "seed=5"])
    assert str(run) in msg and "--overwrite" in msg
    assert snapshot() == before
    (data_dir / "valid.csv").write_text("path,label\n")  # bad data: --overwrite must not cost the old run
    _error(capsys, _train(data_dir, run) + ["--set", "seed=5", "--overwrite"])
    assert snapshot() == before
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


@pytest.mark.parametrize("text", ["{", '["a", "b",\n  "c"'])
def test_malformed_classes_json(data_dir, tmp_path, capsys, text):
    (data_dir / "classes.json").write_text(text)
    msg = _error(capsys, _train(data_dir, tmp_path / "run"))
    assert "classes.json line " in msg and " column " in msg and "not valid JSON" in msg
    assert "imgclf manifest" in msg


def test_malformed_run_json(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train(data_dir, run)) == 0
    (run / "best.json").write_text("garbage\n")
    msg = _error(capsys, ["evaluate", "--run", str(run)])
    assert "best.json line 1 column 1: not valid JSON" in msg and "imgclf train --overwrite" in msg
    (run / "config.json").write_bytes(b"\xff\xfe{}")
    msg = _error(capsys, ["train", "--resume", "--run", str(run)])
    assert "config.json: not UTF-8" in msg


def test_malformed_json_names_file_from_a_subprocess(data_dir, tmp_path):
    (data_dir / "classes.json").write_text("{")
    r = subprocess.run([sys.executable, "-m", "imgclf", "train", "--data", str(data_dir), "--run",
                        str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{data_dir / 'classes.json'} line 1 column 2" in r.stderr


@pytest.mark.parametrize("pattern, advice", [("(", "not a valid regular expression"),
                                             (r"^[a-z]+_", "has no (group) for the label")])
def test_bad_pattern(image_folder, tmp_path, capsys, pattern, advice):
    msg = _error(capsys, ["manifest", str(image_folder), "--out", str(tmp_path / "d"), "--pattern", pattern])
    assert f"--pattern {pattern!r}" in msg and advice in msg
    assert not (tmp_path / "d").exists()


def test_file_where_a_folder_goes(data_dir, image_folder, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    msg = _error(capsys, _train(data_dir, f))
    assert f"{f}: is a file, not a folder" in msg and "--run" in msg
    msg = _error(capsys, ["manifest", str(image_folder), "--out", str(f)])
    assert f"{f}: is a file, not a folder" in msg and "--out" in msg
    msg = _error(capsys, ["manifest", str(image_folder), "--out", str(f / "sub")])  # a parent is the file
    assert f"{f}: is a file" in msg
    assert f.read_text() == "x"


def test_npz_cache_of_another_size(data_dir, tmp_path, capsys):
    assert main(["cache", "--data", str(data_dir), "--size", "16", "--format", "npz"]) == 0
    npz_dir = next((data_dir / "cache").glob("npz-*"))
    msg = _error(capsys, _train(npz_dir, tmp_path / "run") + ["--set", "image_size=32"])
    assert f"{npz_dir / 'train.csv'} line 2" in msg and "0000000.npz" in msg
    assert "(16, 16, 3)" in msg and "(32, 32, 3)" in msg and "--size 32" in msg


@pytest.mark.parametrize("command", ["cache", "validate"])
@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_a_positive_count(data_dir, capsys, command, workers):
    with pytest.raises(SystemExit) as e:  # argparse's usage error: exit status 2, no traceback
        main([command, "--data", str(data_dir), "--workers", workers])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --workers" in err and "Traceback" not in err
    assert not (data_dir / "cache").exists()


def test_build_cache_refuses_workers_below_one(data_dir):
    from imgclf.data.cache import build_cache
    from imgclf.errors import ImgclfError

    with pytest.raises(ImgclfError, match="--workers 0 must be at least 1"):
        build_cache(data_dir, 16, workers=0)


def test_bad_test_row_fails_before_training_without_cache(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    _edit_csv(data_dir / "test.csv", lambda r: r[:3] + [[r[3][0], "zebra"]] + r[4:])
    msg = _error(capsys, _train(data_dir, run) + ["--no-cache"])
    assert "test.csv line 4" in msg and "'zebra'" in msg and not run.exists()
    _edit_csv(data_dir / "test.csv", lambda r: r[:3] + [["gone.png", r[1][1]]] + r[4:])
    msg = _error(capsys, _train(data_dir, run) + ["--no-cache"])
    assert "test.csv line 4" in msg and "gone.png is missing" in msg and not run.exists()
