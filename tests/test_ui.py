"""The Prefect UI as a person sees it: headless Chromium shows a labeling cycle's run and its tasks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")),
    reason="needs Debian's chromium: `make chromium` (or `make ui-screenshot`) installs it",
)
def test_ui_screenshot_shows_the_flow_run_and_its_tasks(tmp_path):
    out = tmp_path / "ui.png"
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "ui_screenshot.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "task runs: " in r.stdout and "export_batch" in r.stdout
