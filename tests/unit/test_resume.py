"""Exact resume after SIGKILL (mid-epoch included) and Ctrl-C; checkpoints that refuse pickles."""
import csv
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import pytest

from imgclf.errors import ImgclfError
from imgclf.train.checkpoint import load_resume, read_checkpoint
from imgclf.train.trainer import FAULT_ENV

BASE = {"image_size": 16, "num_channels": 4, "fc_units": 16, "batch_size": 4, "num_epochs": 3,
        "checkpoint_every": 2, "dropout_rate": 0.3}  # augmentation and dropout on: their RNGs must resume too


def _train(data, run, cfg, *extra, kill_at=None):
    env = {**os.environ, FAULT_ENV: str(kill_at)} if kill_at else dict(os.environ)
    env.pop(FAULT_ENV, None) if not kill_at else None
    sets = [a for k, v in cfg.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    args = [sys.executable, "-m", "imgclf", "-q", "train", "--no-report", "--run", str(run), *extra]
    args += ["--data", str(data), *sets] if "--resume" not in extra else []
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _same_result(a, b):
    assert _rows(a) == _rows(b)
    for name in ("last.safetensors", "best.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# early_stop: no epoch can beat epoch 1 by min_delta 1.0, so it stops after epoch 2, and only if the
# stopper's state (best, bad epochs) survived the kills in epoch 2.
@pytest.mark.parametrize("extra_cfg", [{}, {"accumulate": 2, "schedule": "cosine", "warmup_epochs": 1.0},
                                       {"early_stopping_patience": 1, "early_stopping_min_delta": 1.0}],
                         ids=["plain", "accumulate+cosine", "early_stop"])
def test_sigkill_at_several_points_then_resume_is_bit_identical(data_dir, tmp_path, extra_cfg):
    cfg = {**BASE, **extra_cfg}
    ref = tmp_path / "ref"
    assert _train(data_dir, ref, cfg).returncode == 0
    n_batches = sum(1 for _ in open(data_dir / "train.csv")) - 1
    per_epoch = -(-n_batches // cfg["batch_size"])
    run = tmp_path / "run"
    # mid-epoch between two checkpoints, just after an epoch's end, and mid-epoch in a later epoch
    kills = [3, per_epoch + 1, per_epoch + 5]
    r = _train(data_dir, run, cfg, kill_at=kills[0])
    assert r.returncode == -signal.SIGKILL, r.stderr
    for k in kills[1:]:
        r = _train(data_dir, run, cfg, "--resume", kill_at=k)
        assert r.returncode == -signal.SIGKILL, r.stderr
    r = _train(data_dir, run, cfg, "--resume")
    assert r.returncode == 0, r.stderr
    _same_result(ref, run)
    if "early_stopping_patience" in cfg:
        assert [r["epoch"] for r in _rows(run)] == ["1", "2"]
    log = (run / "train.log").read_text()
    points = re.findall(r"resuming .* at epoch (\d+), batch (\d+)", log)
    assert len(points) == 3
    assert any(int(b) > 0 for _, b in points)  # at least one from the middle of an epoch
    assert any(int(e) > 1 for e, _ in points)  # and one in a later epoch


def test_ctrl_c_saves_and_exits_cleanly_then_resumes(data_dir, tmp_path):
    cfg = {**BASE, "num_epochs": 40, "checkpoint_every": 0}
    ref = tmp_path / "ref"
    assert _train(data_dir, ref, cfg).returncode == 0
    run = tmp_path / "run"
    sets = [a for k, v in cfg.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    p = subprocess.Popen([sys.executable, "-m", "imgclf", "-q", "train", "--no-report", "--data", str(data_dir), "--run", str(run),
                          *sets], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "resume" / "latest.json").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    r = _train(data_dir, run, cfg, "--resume")
    assert r.returncode == 0, r.stderr
    _same_result(ref, run)


def test_resume_refuses_a_changed_config(data_dir, tmp_path, capsys):
    from imgclf.cli import main

    run = tmp_path / "run"
    assert _train(data_dir, run, {**BASE, "num_epochs": 1}).returncode == 0
    assert main(["train", "--no-report", "--run", str(run), "--resume", "--set", "learning_rate=0.5"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main(["train", "--no-report", "--run", str(run), "--resume", "--checkpoint-every", "5"]) == 0  # harmless key


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def test_a_pickle_in_the_resume_state_is_refused_unrun(data_dir, tmp_path):
    import hashlib

    run = tmp_path / "run"
    assert _train(data_dir, run, {**BASE, "num_epochs": 1}).returncode == 0
    latest = json.loads((run / "resume" / "latest.json").read_text())
    evil = _Evil()
    evil.flag = tmp_path / "pwned"
    blob = pickle.dumps({"epoch": 1, "payload": evil})
    (run / "resume" / latest["state"]).write_bytes(blob)
    latest["state_sha256"] = hashlib.sha256(blob).hexdigest()  # an attacker can fix the hash too
    (run / "resume" / "latest.json").write_text(json.dumps(latest))
    with pytest.raises(ImgclfError, match="refused to load"):
        load_resume(run)
    assert not evil.flag.exists()


def test_a_pickle_posing_as_safetensors_is_refused_unrun(data_dir, tmp_path):
    import hashlib

    run = tmp_path / "run"
    assert _train(data_dir, run, {**BASE, "num_epochs": 1}).returncode == 0
    evil = _Evil()
    evil.flag = tmp_path / "pwned"
    blob = pickle.dumps(evil)
    (run / "best.safetensors").write_bytes(blob)
    meta = json.loads((run / "best.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (run / "best.json").write_text(json.dumps(meta))
    with pytest.raises(ImgclfError, match="not a readable safetensors"):
        read_checkpoint(run, "best")
    assert not evil.flag.exists()
