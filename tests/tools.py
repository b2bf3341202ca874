"""Programs the suite drives besides Python (chromium, promtool): found, or the test skipped, or failed under CI."""

from __future__ import annotations

import os
import shutil

import pytest


def required_tool(command: str, package: str, purpose: str) -> str:
    """The path of ``command``. Without it the test is skipped, unless CI is set (`.ci/run` installs it): then it fails."""
    found = shutil.which(command)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{command} is not installed, and CI must {purpose} (.ci/run installs it)", pytrace=False)
        pytest.skip(f"{command} is not installed (Debian: apt-get install {package}); CI runs this test")
    return found
