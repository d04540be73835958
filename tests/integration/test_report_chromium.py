"""RUN/report.html opened in headless Chromium: every image renders, no console message, a screenshot.

CI installs Debian's chromium (see .ci/run) and must run this; elsewhere it skips without one.
"""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from imgclf import fit, load_config
from conftest import TINY

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("CI must run the report test, but no chromium is installed: .ci/run installs it")
    pytest.skip("chromium is not installed (CI installs Debian's chromium)")


def test_report_renders_in_chromium(data_dir, tmp_path):
    browser = _chromium()
    run = tmp_path / "run"
    summary = fit(data_dir, run, load_config(overrides=TINY))
    report = run / "report.html"
    assert summary["report"] == str(report)
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page  # nothing loads from the network
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 5  # curves, confusion, F1, worst, augmented
    profile = tmp_path / "profile"
    dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                          "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-images-ok="true"' in dom.stdout, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "report.png"
    subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,2400",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        assert len(np.unique(np.asarray(im.convert("L").resize((64, 120))))) > 20  # not a blank page
