"""An older pytest-maf beside this one, for the benchmarks' ``--base REV``."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def source_of(revision: str, into: Path) -> Path:
    """The ``pytest_maf`` package of ``revision`` of this repository, extracted under ``into``
    (put ``into`` first on ``PYTHONPATH`` to run that revision)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "pytest_maf"], cwd=REPOSITORY, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into
