"""`maf-preflight`, the pre-commit hook's entry point, run in a repository as pre-commit runs it:
in the repository's root, with no argument, where the project's test plugins are not installed."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from workspace import DEADLINE_S, GIT_IDENTITY, isolated_env

MAF_PREFLIGHT = Path(sys.executable).parent / "maf-preflight"


def run_hook(repository: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    command = [str(MAF_PREFLIGHT)] if MAF_PREFLIGHT.is_file() else [sys.executable, "-m", "pytest_maf.preflight"]
    return subprocess.run(
        [*command, *args], cwd=repository, capture_output=True, text=True, timeout=DEADLINE_S,
        env=isolated_env(repository.parent / "home", {"MAF_AGENT_ID": "alice", **extra}),
    )


def scratch_repository(tmp_path: Path, **files: str) -> Path:
    repository = tmp_path / "repository"
    repository.mkdir()
    (tmp_path / "home").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repository, check=True, env={**GIT_IDENTITY, "HOME": str(tmp_path / "home")})
    for name, text in files.items():
        (repository / name.replace("__", ".")).write_text(text)
    return repository


def test_the_hook_passes_where_the_projects_pytest_options_name_plugins_it_has_not_got(tmp_path: Path) -> None:
    repository = scratch_repository(
        tmp_path, pytest__ini="[pytest]\naddopts = --cov=nothing -n auto\nrequired_plugins = pytest-cov\n",
    )

    ran = run_hook(repository, PYTEST_ADDOPTS="--cov-report=term")

    # Before: "ERROR: usage: pytest.main() ... unrecognized arguments: --cov=nothing", exit 4, every commit refused.
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "COMMITTED -> DONE" in ran.stdout


def test_the_hook_still_runs_the_projects_own_checks_and_says_what_to_do_when_a_conftest_cannot_import(
    tmp_path: Path,
) -> None:
    check = (
        "import pytest\n\n@pytest.mark.maf_check(id='svc.own')\n"
        "def test_own(answer):\n    assert answer == 42\n"
    )
    repository = scratch_repository(
        tmp_path, pytest__ini="[pytest]\naddopts = --cov=nothing\nmaf_checks = ci\n",
        conftest__py="import pytest\n\n@pytest.fixture\ndef answer():\n    return 42\n",
    )
    (repository / "ci").mkdir()
    (repository / "ci" / "test_own.py").write_text(check)

    ran = run_hook(repository, "--maf-checks", "svc.own")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed, 0 failed" in ran.stdout

    (repository / "conftest.py").write_text("import a_package_the_hook_has_not_got\n")
    refused = run_hook(repository, "--maf-checks", "svc.own")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "No module named 'a_package_the_hook_has_not_got'" in refused.stderr
    assert "under the hook's additional_dependencies" in refused.stderr


def test_the_hook_names_itself_in_its_usage_and_version(tmp_path: Path) -> None:
    repository = scratch_repository(tmp_path)

    version, unknown = run_hook(repository, "--version"), run_hook(repository, "--no-such-option")

    # Before: "pytest 9.2.0" and "usage: pytest.main() [options] ...".
    assert version.returncode == 0 and version.stdout.startswith("maf-preflight (pytest-maf "), version.stdout
    assert unknown.returncode == 4
    if pytest_names_programs():
        assert "usage: maf-preflight " in unknown.stderr


def pytest_names_programs() -> bool:
    """Whether this pytest names the program in its usage (its private ``_main``, since 9.0), else ``pytest.main()``."""
    from _pytest import config

    return "prog" in inspect.signature(getattr(config, "_main", lambda: None)).parameters
