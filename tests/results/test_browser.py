"""A real browser on `hpsearch dashboard`: headless Chromium renders the study list and a trial's page.

Needs HPSEARCH_CHROMIUM (the browser binary; .ci/run installs Debian's chromium and sets it). Screenshots go to
HPSEARCH_SCREENSHOTS when set, else to the test's temporary folder; their paths are printed.
"""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.image
import pytest
from conftest import Searched
from test_dashboard import free_port, wait_up

CHROMIUM = os.environ.get("HPSEARCH_CHROMIUM", "")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="set HPSEARCH_CHROMIUM to a Chromium binary (e.g. "
                                                     "/usr/bin/chromium) to run the browser test")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1400,1400",
         "--virtual-time-budget=20000"]  # ms of page time to let the single-page app fetch and render


def chromium(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True,
                             text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def page_text(url: str) -> tuple[str, str]:
    """(the rendered DOM, its visible text with tags removed)."""
    dom = chromium(url, "--dump-dom").stdout
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))
    return dom, text


def screenshot(url: str, path: Path) -> Path:
    chromium(url, f"--screenshot={path}")
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (1400, 1400) and pixels.std() > 0.05, "a blank page"
    print(f"screenshot: {path}")
    return path


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HPSEARCH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_chromium_shows_the_study_its_trial_params_and_checkpoint(searched: Searched, shots: Path,
                                                                 tmp_path: Path) -> None:
    study = searched.study()
    best = study.best_trial
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "dashboard", *searched.where(), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base, proc)

        # the study list
        dom, text = page_text(f"{base}/dashboard")
        assert "tiny" in text and "Direction: MAXIMIZE" in text, text[:2000]
        assert 'href="/dashboard/studies/1"' in dom
        screenshot(f"{base}/dashboard", shots / "dashboard-studies.png")

        # the best trial's page: its parameters and its checkpoint, as a download link
        trial_url = f"{base}/dashboard/studies/1/trials?numbers={best.number}"
        dom, text = page_text(trial_url)
        assert f"Trial {best.number} (trial_id={best._trial_id})" in text and "Best Trial" in text, text[:3000]
        for name, value in best.params.items():
            assert f"{name} {value}" in text, (name, value)
        artifact = best.user_attrs["checkpoint"]
        assert f"trial-{best.number}.pt" in text
        assert f'href="/artifacts/1/{best._trial_id}/{artifact}"' in dom
        screenshot(trial_url, shots / "dashboard-trial.png")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
