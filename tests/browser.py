"""Headless Chromium for report tests: load a page, return its DOM and console lines."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def headless_dom(page: Path, budget_ms: int = 3000) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console lines) of ``page``; skips without Chromium (fails on CI)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium not installed (CI needs the Debian package 'chromium')")
        pytest.skip("headless browser check needs Debian package 'chromium' (not installed)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
           "--v=0", f"--virtual-time-budget={budget_ms}", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
