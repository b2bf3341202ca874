"""What tests/ and checks/ share: an environment isolated from the machine, and git.

Every test of tests/ runs with no ``MAF_*`` variable of the machine's and no
system or user git configuration (a pinned identity instead); the
``pytester`` plugin comes from ``-p pytester`` in pyproject.toml's addopts
(a ``pytest_plugins`` here would break the preflight of a source checkout,
whose checks/ sit below this file). ``git_repository`` is a committed scratch
repository.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

TESTS = Path(__file__).resolve().parent / "tests"
# Variables that change what pytest-maf, git or pytest do; the machine's never reach a test.
LEAKY_PREFIXES = ("MAF_", "GIT_", "PYTEST_ADDOPTS", "LOG_LEVEL", "NODE_ENV")
# MAF_TEST_DATABASE_URL says where the PostgreSQL tests run; it is the suite's own setting.
KEPT = ("MAF_TEST_DATABASE_URL",)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.invalid",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True)
def isolated_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No MAF_* variable and no git configuration of the machine's; a pinned git identity.
    Only for the project's own tests: a preflight's checks see the agent's real environment."""
    if TESTS not in Path(str(request.node.path)).resolve().parents:
        yield
        return
    for name in list(os.environ):
        if name.startswith(LEAKY_PREFIXES) and name not in KEPT:
            monkeypatch.delenv(name)
    for name, value in GIT_IDENTITY.items():
        monkeypatch.setenv(name, value)
    global_config = tmp_path_factory.getbasetemp() / "gitconfig"
    if not global_config.exists():
        global_config.write_text("[init]\n\tdefaultBranch = main\n", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    yield


@pytest.fixture
def git_repository(tmp_path: Path) -> Path:
    """A scratch git repository with one commit (README.md), under the pinned identity.
    Example: ``def test_guard(git_repository): (git_repository / "a.py").write_text("x")``
    """
    root = tmp_path / "repository"
    root.mkdir()
    (root / "README.md").write_text("readme\n", encoding="utf-8")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, timeout=60)
    return root
