"""Offline wheels for tests that install pytest-maf into a new virtualenv.

Tests never reach the network, so the packages a new virtualenv needs are
packed from the ones already installed here: each installed distribution's
files (as its RECORD lists them) are zipped back into a wheel.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

SKIPPED = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")


def _requirements(name: str) -> list[str]:
    found = []
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.append(requirement.name)
    return found


def project_requirements() -> list[str]:
    """What pytest-maf requires, as its pyproject.toml says (installed metadata may be older)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    names = []
    for text in pyproject["project"]["dependencies"]:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.append(requirement.name)
    return names


def _closure(names: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen[key] = None
        pending.extend(_requirements(name))
    return list(seen)


def repack(name: str, destination: Path) -> Path:
    distribution = metadata.distribution(name)
    project = re.sub(r"[-_.]+", "_", distribution.metadata["Name"])
    wheel = destination / f"{project}-{distribution.version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in distribution.files or []:
            relative = str(file)
            if relative.startswith("..") or "__pycache__" in relative or relative.endswith(SKIPPED):
                continue
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                archive.write(path, relative)
                records.append(f"{relative},,")
        dist_info = next(str(f).split("/")[0] for f in distribution.files or [] if ".dist-info/" in str(f))
        archive.writestr(f"{dist_info}/RECORD", "\n".join([*records, f"{dist_info}/RECORD,,"]) + "\n")
    return wheel


def build_wheelhouse(destination: Path, names: list[str]) -> Path:
    """Wheels of ``names`` and everything they require, from this environment."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in _closure(names):
        repack(name, destination)
    return destination


def snapshot_of_project(project: Path, destination: Path) -> str:
    """Commit the working tree as it is (tracked and new files) into a new repository."""

    def git(cwd: Path, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout

    listed = git(project, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = project / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(destination, "init", "-q")
    git(destination, "add", "-A")
    git(destination, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "snapshot")
    return git(destination, "rev-parse", "HEAD").strip()
