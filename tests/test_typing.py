"""The package and the built-in checks type-check under mypy --strict, as their annotations promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_mypy_strict_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), "pytest_maf", "checks"],
        cwd=PROJECT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
