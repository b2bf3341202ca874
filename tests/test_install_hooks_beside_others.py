"""`maf install-hooks` beside hooks it cannot chain: a hook manager's that finds what to run from its
own file name (husky), and a hooks folder every repository of the user shares (a global core.hooksPath)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_guard import clean_env, git, maf, repo, stage  # noqa: F401 (repo is a fixture)
from pytest_maf.store import setup_store

HUSKY_HOOK = '#!/usr/bin/env sh\n. "$(dirname "$0")/h"\n'
# What husky 9 puts beside it: the hook to run is .husky/<this file's own name>.
HUSKY_RUNNER = '#!/usr/bin/env sh\nn=$(basename "$0")\ns=$(dirname "$(dirname "$0")")/$n\n[ ! -f "$s" ] && exit 0\nsh -e "$s" "$@"\n'


def test_a_hook_that_runs_by_its_own_name_is_not_renamed_into_silence(repo: Path) -> None:
    managed = repo / ".husky" / "_"
    managed.mkdir(parents=True)
    (managed / "pre-commit").write_text(HUSKY_HOOK)
    (managed / "h").write_text(HUSKY_RUNNER)
    for runnable in managed.iterdir():
        runnable.chmod(0o755)
    (repo / ".husky" / "pre-commit").write_text("echo the lint hook ran; exit 1\n")
    git(repo, "config", "core.hooksPath", ".husky/_")
    before = {path.name: path.read_bytes() for path in managed.iterdir()}

    refused = maf(repo, "install-hooks")

    # Before: renamed to pre-commit.pre-maf, the runner looked for .husky/pre-commit.pre-maf, found
    # nothing and let every commit through, the failing lint hook included.
    assert refused.returncode == 2 and "finds what to run from its own file name" in refused.stderr
    assert "a line `maf guard` in .husky/pre-commit" in refused.stderr
    assert {path.name: path.read_bytes() for path in managed.iterdir()} == before
    stage(repo, "README.md")
    assert git(repo, "commit", "-q", "-m", "x", check=False).returncode == 1  # the lint hook still runs


@pytest.fixture
def global_hooks(tmp_path: Path) -> dict[str, str]:
    """A user whose global git configuration sets core.hooksPath, as some organisations do."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[core]\n\thooksPath = ~/.githooks\n")
    return {"HOME": str(home), "GIT_CONFIG_GLOBAL": str(home / ".gitconfig")}


def test_install_hooks_into_a_global_hooks_folder_with_a_store_named_is_refused(
    repo: Path, tmp_path: Path, global_hooks: dict[str, str]
) -> None:
    setup_store(tmp_path / "store.db")

    refused = maf(repo, "install-hooks", "--db", str(tmp_path / "store.db"), **global_hooks)

    # Before: written there, every other repository of the user was then guarded with this store.
    assert refused.returncode == 2 and "set in your global git configuration" in refused.stderr
    assert not os.path.lexists(Path(global_hooks["HOME"]) / ".githooks")

    installed = maf(repo, "install-hooks", **global_hooks)  # each repository's guard finds its own store
    assert installed.returncode == 0 and "run for every repository of this user" in installed.stderr
    assert (Path(global_hooks["HOME"]) / ".githooks" / "pre-commit").is_file()
