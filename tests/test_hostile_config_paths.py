"""Store locations and git settings that used to mislead pytest-maf, through the installed command.

A PostgreSQL URL whose password holds a raw ``@``, a repository with
``diff.relative=true``, hooks installed for a store named with ``--db``, and a
database kept in a folder of the user's: each case is refused in one line, or
guarded, or kept out of git exactly as a user expects. Every command runs with
a deadline (the workspace's).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from backends import scratch_schema, server_url
from pytest_maf.database_url import hide_password
from workspace import Workspace

SECRET = "MyTopSecretPW"
UNENCODED_AT = f"postgresql://postgres:x@{SECRET}@127.0.0.1:5432/postgres"
RESERVED = "src/app/models.py"


def without_secret(completed: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr together, after checking that neither shows the password nor a traceback."""
    shown = completed.stdout + completed.stderr
    assert SECRET not in shown, shown
    assert "Traceback" not in shown, shown
    return shown


# A password with a raw @: refused before connecting, and never shown.


@pytest.mark.parametrize(
    ("command", "code"),
    [(("task", "list", "--json"), 2), (("health-check", "--json"), 1)],
    ids=["task-list", "health-check"],
)
@pytest.mark.parametrize("given_by", ["configuration", "environment", "flag"])
def test_a_url_with_a_raw_at_in_its_password_is_refused_without_showing_it(
    workspace: Workspace, given_by: str, command: tuple[str, ...], code: int
) -> None:
    extra: dict[str, str] = {}
    flags: list[str] = []
    if given_by == "flag":
        flags = ["--db", UNENCODED_AT]
    elif given_by == "environment":
        extra = {"MAF_DATABASE_URL": UNENCODED_AT}
    else:
        workspace.write(workspace.main, "maf-config/default.yaml", f"runtime:\n  database_url: '{UNENCODED_AT}'\n")

    completed = workspace.maf(workspace.main, *command, *flags, **extra)

    shown = without_secret(completed)
    assert completed.returncode == code, shown
    assert "percent-encode @ in the user or password as %40" in shown


def test_config_validate_calls_a_url_with_a_raw_at_invalid(workspace: Workspace) -> None:
    workspace.write(workspace.main, "maf-config/default.yaml", f"runtime:\n  database_url: '{UNENCODED_AT}'\n")

    completed = workspace.maf(workspace.main, "config", "validate", "--json")

    without_secret(completed)
    assert completed.returncode == 2
    report = json.loads(completed.stdout)
    assert report["valid"] is False
    assert any("runtime.database_url" in problem and "%40" in problem for problem in report["problems"])


def test_the_preflight_refuses_maf_db_with_a_raw_at_without_showing_it(workspace: Workspace) -> None:
    completed = workspace.pytest(workspace.main, "--maf-preflight", "--maf-db", UNENCODED_AT, "-q")

    shown = without_secret(completed)
    assert completed.returncode != 0
    assert "%40" in shown


def test_a_driver_message_naming_the_password_tail_as_host_is_masked() -> None:
    said = f"failed to resolve host '{SECRET}@127.0.0.1': [Errno -2] Name or service not known"

    shown = hide_password(said, UNENCODED_AT)

    assert SECRET not in shown
    assert "127.0.0.1" in shown


# diff.relative=true: the guard reads paths from the repository root, from any directory.


@pytest.fixture
def relative_diffs(workspace: Workspace) -> Workspace:
    """The workspace with alice holding RESERVED, and git set to print diffs relative to the current directory."""
    acquired = workspace.maf(workspace.main, "reservation", "acquire", RESERVED, agent="alice")
    assert acquired.returncode == 0, acquired.stderr
    workspace.git(workspace.main, "config", "diff.relative", "true")
    return workspace


def test_the_guard_blocks_a_staged_reserved_file_from_a_subdirectory(relative_diffs: Workspace) -> None:
    relative_diffs.stage(relative_diffs.main, RESERVED)

    guarded = relative_diffs.maf(relative_diffs.main / "src", "guard", agent="bob")
    checked = relative_diffs.pytest(
        relative_diffs.main / "src", "--maf-preflight", "--maf-checks", "reservations.staged", "-q", agent="bob"
    )

    assert guarded.returncode == 1, guarded.stdout + guarded.stderr
    assert f"{RESERVED}: alice holds" in guarded.stdout
    assert checked.returncode != 0, checked.stdout
    assert "1 failed" in checked.stdout


def test_the_pre_push_guard_blocks_a_reserved_file_from_a_subdirectory(relative_diffs: Workspace) -> None:
    base = relative_diffs.git(relative_diffs.main, "rev-parse", "HEAD").strip()
    relative_diffs.stage(relative_diffs.main, RESERVED)
    relative_diffs.git(relative_diffs.main, "commit", "-q", "-m", "bob's change")
    head = relative_diffs.git(relative_diffs.main, "rev-parse", "HEAD").strip()

    pushed = relative_diffs.maf(
        relative_diffs.main / "src", "guard", "--pre-push", agent="bob",
        stdin=f"refs/heads/main {head} refs/heads/main {base}\n",
    )

    assert pushed.returncode == 1, pushed.stdout + pushed.stderr
    assert f"{RESERVED}: alice holds" in pushed.stdout


# install-hooks --db: the hooks guard the store they were given.


def commit_as(workspace: Workspace, agent: str) -> subprocess.CompletedProcess[str]:
    """`git commit` by ``agent`` with no other MAF_* variable, as an IDE or a plain shell runs it."""
    return subprocess.run(
        ["git", "commit", "-q", "-m", f"{agent}'s change"], cwd=workspace.main, capture_output=True, text=True,
        env=workspace.env(agent), timeout=120,
    )


def test_hooks_installed_with_db_guard_that_store(workspace: Workspace, tmp_path: Path) -> None:
    store = tmp_path / "shared store" / "it's.db"  # a space and a quote: written into a shell script
    store.parent.mkdir()
    assert workspace.maf(workspace.main, "setup", "--db", str(store)).returncode == 0
    installed = workspace.maf(workspace.main, "install-hooks", "--db", str(store))
    acquired = workspace.maf(workspace.main, "reservation", "acquire", RESERVED, "--db", str(store), agent="alice")
    assert installed.returncode == acquired.returncode == 0, installed.stderr + acquired.stderr
    workspace.stage(workspace.main, RESERVED)

    blocked = commit_as(workspace, "bob")
    store.unlink()
    failed_closed = commit_as(workspace, "bob")

    assert blocked.returncode == 1, blocked.stderr
    assert f"{RESERVED}: alice holds" in blocked.stderr
    assert str(store) in installed.stdout
    assert failed_closed.returncode != 0  # git says 1 for any hook that fails
    assert "no runtime database at" in failed_closed.stderr and "fails closed" in failed_closed.stderr
    assert workspace.git(workspace.main, "log", "--format=%s").splitlines() == ["initial"]


def test_hooks_installed_with_a_database_url_guard_that_store(workspace: Workspace) -> None:
    url = server_url()
    with scratch_schema(url) as schema:
        assert workspace.maf(workspace.main, "setup", "--db", url, MAF_DATABASE_SCHEMA=schema).returncode == 0
        installed = workspace.maf(workspace.main, "install-hooks", "--db", url, MAF_DATABASE_SCHEMA=schema)
        acquired = workspace.maf(
            workspace.main, "reservation", "acquire", RESERVED, "--db", url, agent="alice", MAF_DATABASE_SCHEMA=schema
        )
        assert installed.returncode == acquired.returncode == 0, installed.stderr + acquired.stderr
        workspace.stage(workspace.main, RESERVED)

        blocked = commit_as(workspace, "bob")

    assert blocked.returncode == 1, blocked.stderr
    assert f"{RESERVED}: alice holds" in blocked.stderr


def test_install_hooks_refuses_a_url_with_a_password_and_writes_nothing(workspace: Workspace) -> None:
    hooks = workspace.main / ".git" / "hooks"
    before = sorted(path.name for path in hooks.iterdir())

    refused = workspace.maf(workspace.main, "install-hooks", "--db", "postgresql://maf:S3cretPw@127.0.0.1:5432/maf")

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "PGPASSWORD" in refused.stderr and "S3cretPw" not in refused.stdout + refused.stderr
    assert sorted(path.name for path in hooks.iterdir()) == before


# A database in a folder of the user's: only its files are kept out of git.


def test_a_database_in_a_folder_of_the_users_keeps_that_folder_in_git(workspace: Workspace) -> None:
    ci = workspace.main / "ci"
    workspace.write(ci, "build.sh", "echo build\n")

    setup = workspace.maf(ci, "--db", "maf.db", "setup")
    workspace.write(ci, "deploy.sh", "echo deploy\n")
    status = workspace.git(workspace.main, "status", "--porcelain", "--untracked-files=all")

    assert setup.returncode == 0, setup.stderr
    assert "kept ci/maf.db* and .agent-mail/ out of git" in setup.stdout
    assert "ci/build.sh" in status and "ci/deploy.sh" in status
    assert "maf.db" not in status


@pytest.mark.parametrize("layout", ["linked", "separate"])
def test_no_output_is_written_in_git_s_own_folder_whatever_it_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    from pytest_maf.cli import main

    work = tmp_path / "work"
    if layout == "linked":  # .git a symbolic link to the repository's folder
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        (work / ".git").rename(tmp_path / "store.git")
        (work / ".git").symlink_to(tmp_path / "store.git")
        git_folder = tmp_path / "store.git"
    else:  # .git a file naming it: git init --separate-git-dir
        subprocess.run(["git", "init", "-q", "--separate-git-dir", str(tmp_path / "kept"), str(work)], check=True)
        git_folder = tmp_path / "kept"
    monkeypatch.chdir(work)
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_AGENT_ID"):
        monkeypatch.delenv(name, raising=False)
    assert main(["setup"]) == 0
    head = (git_folder / "HEAD").read_bytes()
    capsys.readouterr()

    # Before: "wrote .git/HEAD", and git no longer found the repository.
    for target in (".git/HEAD", str(git_folder / "HEAD")):
        assert main(["report", "--html", target]) == 2
        assert "is in git's own folder (.git)" in capsys.readouterr().err
    assert (git_folder / "HEAD").read_bytes() == head
    assert subprocess.run(["git", "status", "--short"], cwd=work, capture_output=True).returncode == 0
