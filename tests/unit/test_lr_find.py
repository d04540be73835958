import json
import subprocess
import sys

import numpy as np
from PIL import Image

from imgclf.cli import main
from imgclf.train.lr_find import suggest
from conftest import TINY


def test_suggest_picks_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-6, 0, 61)
    loss = 2 - np.tanh((np.log10(lrs) + 3) * 2)  # falls fastest at 1e-3
    loss[50:] += np.linspace(0, 5, 11)  # then blows up
    lr, reason = suggest(lrs, loss)
    assert 5e-4 < lr < 2e-3 and "steepest" in reason


def test_cli_writes_the_plot_and_leaves_no_trace(data_dir, tmp_path, capsys):
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    before = {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
    out = tmp_path / "lr.png"
    assert main(["lr-find", "--data", str(data_dir), *sets, "--steps", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.with_suffix(".json").read_text())
    assert f"{result['suggested_lr']:.2e}" in printed and "plot:" in printed
    assert 1e-7 <= result["suggested_lr"] <= 10 and len(result["lrs"]) <= 30
    assert np.all(np.diff(result["lrs"]) > 0)
    assert Image.open(out).size == (700, 450)
    # Beyond the plot and its JSON it writes nothing: the data directory only gained its cache,
    # and a run trained afterwards in this process matches one trained in a fresh process.
    assert {p: b for p in data_dir.rglob("*") if p.is_file() and p in before
            for b in [p.read_bytes()]} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["lr.json", "lr.png"]
    run = tmp_path / "run"
    assert main(["train", "--no-report", "--data", str(data_dir), "--run", str(run), *sets]) == 0
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "imgclf", "-q", "train", "--no-report", "--data", str(data_dir),
                    "--run", str(fresh), *sets], check=True, capture_output=True)
    assert (run / "best.safetensors").read_bytes() == (fresh / "best.safetensors").read_bytes()
