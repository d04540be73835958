"""`imgclf search`: the space file, a small search, resume after SIGKILL, two worker processes."""
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from conftest import TINY
from imgclf.cli import main
from imgclf.errors import ImgclfError
from imgclf.studies.search import grid_of, load_space, pruning_callback

SPACE = ("learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
         "dropout_rate: {type: float, low: 0.0, high: 0.5}\n")
SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]  # num_epochs=2


def _space_file(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    return study.get_trials(deepcopy=False)


def _finished(out: Path) -> dict[int, float | None]:
    return {t.number: t.value for t in _trials(out) if t.state.is_finished() and t.state.name != "FAIL"}


def _snapshot(out: Path, numbers) -> dict[int, tuple[bytes, int]]:
    files = {n: out / f"trial-{n:04d}" / "metrics.csv" for n in numbers}
    return {n: (f.read_bytes(), f.stat().st_mtime_ns) for n, f in files.items()}


# --- the space file -----------------------------------------------------------------------------


def test_space_file_gives_distributions(tmp_path):
    path = _space_file(tmp_path, SPACE + "batch_size: {type: categorical, choices: [16, 32, 64]}\n"
                                         "num_channels: {type: int, low: 8, high: 32, step: 8}\n")
    space = load_space(path)
    assert space["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["dropout_rate"] == FloatDistribution(0.0, 0.5)
    assert space["batch_size"] == CategoricalDistribution([16, 32, 64])
    assert space["num_channels"] == IntDistribution(8, 32, step=8)
    with pytest.raises(ImgclfError, match="space.yaml: learning_rate: a float range has no grid; give it a step"):
        grid_of(space, str(path))
    assert grid_of({k: space[k] for k in ("batch_size", "num_channels")}) == {"batch_size": [16, 32, 64],
                                                                             "num_channels": [8, 16, 24, 32]}


@pytest.mark.parametrize("line, key, advice", [
    ("learnig_rate: {type: float, low: 0.1, high: 1}", "learnig_rate", "unknown config key"),
    ("learning_rate: {type: uniform, low: 0.1, high: 1}", "learning_rate", "type: float|int|categorical"),
    ("learning_rate: {type: float, high: 1}", "learning_rate", "give low and high"),
    ("batch_size: {type: categorical}", "batch_size", "missing choices"),
    ("learning_rate: {type: float, low: 0.1, high: 0.01}", "learning_rate", "swap them"),
    ("weight_decay: {type: float, low: 0.0, high: 0.1, log: true}", "weight_decay", "needs low > 0"),
    ("num_channels: {type: int, low: 8, high: 32, stp: 8}", "num_channels", "stp not allowed"),
    ("dropout_rate: {type: float, low: 0.5, high: 1.0}", "dropout_rate", "not a valid value"),
    ("num_epochs: {type: int, low: 1, high: 3}", "num_epochs", "fixed by --set"),
])
def test_bad_space_names_file_and_key(tmp_path, line, key, advice):
    path = _space_file(tmp_path, line + "\n")
    with pytest.raises(ImgclfError, match=advice) as e:
        load_space(path, fixed={"num_epochs": 2})
    assert str(e.value).startswith(f"{path}: {key}:")


def test_bad_space_file(tmp_path):
    with pytest.raises(ImgclfError, match="space.yaml: search space file not found"):
        load_space(tmp_path / "space.yaml")
    with pytest.raises(ImgclfError, match=r"space.yaml line \d+: not valid YAML"):
        load_space(_space_file(tmp_path, "learning_rate: {type: float\n"))


def test_pruning_callback_reports_and_prunes():
    class Trial:
        number, reported = 3, []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return len(self.reported) > 1

    trial = Trial()
    hook = pruning_callback(trial)
    hook({"epoch": 1, "valid_acc": 0.5})
    with pytest.raises(optuna.TrialPruned):
        hook({"epoch": 2, "valid_acc": 0.4})
    assert trial.reported == [(1, 0.5), (2, 0.4)]


# --- searches -----------------------------------------------------------------------------------


def test_search_writes_trials_and_reports_best(data_dir, tmp_path, capsys):
    out, args = tmp_path / "study", ["search", "--data", str(data_dir), "--space", str(_space_file(tmp_path))]
    assert main([*args, "--trials", "3", "--out", str(out), *SETS]) == 0
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]
    assert all((out / f"trial-{n:04d}" / "best.json").is_file() for n in range(3))
    assert (out / "study.db").is_file() and (out / "compare.md").is_file() and (out / "compare_valid.png").is_file()
    values = _finished(out)
    assert len(values) == 3
    printed = capsys.readouterr().out
    best = max(values, key=lambda n: (values[n], -n))
    assert f"best trial {best}: valid_acc {values[best]:.4f}" in printed
    config = json.loads((out / f"trial-{best:04d}" / "config.json").read_text())
    assert json.dumps(config, indent=2) in printed
    assert config["num_epochs"] == 2 and config["learning_rate"] == _trials(out)[best].params["learning_rate"]
    before = _snapshot(out, range(3))
    assert main([*args, "--trials", "3", "--out", str(out), *SETS]) == 0  # done already: runs nothing
    assert _finished(out) == values and _snapshot(out, range(3)) == before
    assert "3 of 3 trials finished (3 complete)" in capsys.readouterr().out
    changed = _space_file(tmp_path, "learning_rate: {type: categorical, choices: [0.001, 0.01]}\n")
    assert main([*args[:-1], str(changed), "--trials", "4", "--out", str(out), *SETS]) == 2
    assert "learning_rate: differs from the study's earlier trials" in capsys.readouterr().err


def test_search_never_takes_over_a_foreign_run_dir(data_dir, tmp_path, capsys):
    out = tmp_path / "study"
    (out / "trial-0000").mkdir(parents=True)
    (out / "trial-0000" / "notes.txt").write_text("not ours")
    assert main(["search", "--data", str(data_dir), "--space", str(_space_file(tmp_path)), "--trials", "1",
                 "--out", str(out), *SETS]) == 2
    assert "trial-0000: already holds a run that trial 0" in capsys.readouterr().err
    assert (out / "trial-0000" / "notes.txt").read_text() == "not ours"


def test_search_resumes_after_sigkill(data_dir, tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "imgclf", "-q", "search", "--data", str(data_dir), "--space",
           str(_space_file(tmp_path)), "--trials", "3", "--out", str(out), *SETS]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            # trial 1's first epoch is written, so trial 0 is finished: kill in the middle of the search
            while not (out / "trial-0001" / "metrics.csv").exists() and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read().decode()
        finally:
            proc.kill()  # SIGKILL: no chance to save or clean up
    finished = _finished(out)
    assert 0 in finished and len(finished) < 3
    before = _snapshot(out, finished)
    killed = [t.number for t in _trials(out) if t.state.name == "RUNNING"]

    assert main(cmd[cmd.index("search"):]) == 0  # the same command again
    after = _finished(out)
    assert len(after) == 3
    assert {n: after[n] for n in finished} == finished  # the trials finished before the kill, not re-run
    assert _snapshot(out, finished) == before
    states = {t.number: t.state.name for t in _trials(out)}
    assert "RUNNING" not in states.values() and all(states[n] == "FAIL" for n in killed)
    for n in after:
        assert (out / f"trial-{n:04d}" / "best.json").is_file()
    for n in killed:  # its half-written run directory is kept and never reused by another trial
        assert (out / f"trial-{n:04d}" / "config.json").is_file() and n not in after


def test_two_workers_share_one_sqlite_study(data_dir, tmp_path):
    out, jobs, n_trials = tmp_path / "study", 2, 4
    assert main(["-q", "search", "--data", str(data_dir), "--space", str(_space_file(tmp_path)), "--trials",
                 str(n_trials), "--out", str(out), "--jobs", str(jobs), *SETS]) == 0
    trials = _trials(out)
    ran = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(ran) == len(trials)  # none lost: every trial that started, finished
    # the target, or up to jobs - 1 more when workers asked for their next trial at the same moment
    assert n_trials <= len(ran) <= n_trials + jobs - 1
    pids = {t.user_attrs["pid"] for t in ran}
    assert len(pids) == jobs and os.getpid() not in pids  # run by two worker processes, not this one
    # no duplicated work: one run directory per trial, trained once, with that trial's parameters
    assert sorted(p.name for p in out.glob("trial-*")) == sorted(t.user_attrs["run_dir"] for t in ran)
    for t in ran:
        run = out / t.user_attrs["run_dir"]
        assert run.name == f"trial-{t.number:04d}" and (run / "best.json").is_file()
        assert json.loads((run / "config.json").read_text())["learning_rate"] == t.params["learning_rate"]
        assert (run / "train.log").read_text().count("training cnn on") == 1
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_grid_search_covers_the_grid_once(data_dir, tmp_path, capsys):
    space = _space_file(tmp_path, "dropout_rate: {type: categorical, choices: [0.0, 0.3]}\n"
                                  "accumulate: {type: int, low: 1, high: 3, step: 2}\n")
    args = ["search", "--data", str(data_dir), "--space", str(space), "--sampler", "grid", *SETS]
    assert main([*args, "--trials", "9", "--out", str(tmp_path / "grid")]) == 0  # capped at the 4 points
    params = {(t.params["dropout_rate"], t.params["accumulate"]) for t in _trials(tmp_path / "grid")}
    assert params == {(0.0, 1), (0.0, 3), (0.3, 1), (0.3, 3)} and len(_trials(tmp_path / "grid")) == 4
    capsys.readouterr()
    assert main([*args, "--trials", "2", "--out", str(tmp_path / "bad"), "--space", str(_space_file(tmp_path))]) == 2
    assert "learning_rate: a float range has no grid; give it a step" in capsys.readouterr().err


def test_space_bounds_written_without_a_dot(data_dir, tmp_path, capsys):
    # YAML 1.1 (PyYAML) reads 1e-4 as the string '1e-4'; a numeric string is taken as its number.
    space = load_space(_space_file(tmp_path, "learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
                                             "num_channels: {type: int, low: '8', high: 3.2e1, step: '8'}\n"
                                             "dropout_rate: {type: float, low: 0, high: 5e-1, step: 1e-1}\n"))
    assert space["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["num_channels"] == IntDistribution(8, 32, step=8)
    assert space["dropout_rate"] == FloatDistribution(0.0, 0.5, step=0.1)
    path = _space_file(tmp_path, "learning_rate: {type: float, low: 1e-x, high: 1e-2}\n")
    code = main(["search", "--data", str(data_dir), "--space", str(path), "--trials", "1",
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{path}: learning_rate: missing or non-float low ('1e-x'); give low and high" in err
