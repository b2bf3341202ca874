"""The commit guard and git hooks, in real temporary git repositories."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_maf import reservations
from pytest_maf.clock import ManualClock, system_clock
from pytest_maf.store import open_store, setup_store

MINUTE = 60_000
ENV_NAMES = ("MAF_AGENT_ID", "MAF_RESERVATION_OVERRIDE", "MAF_OVERRIDE_REASON", "MAF_DB_PATH", "MAF_AGENT_MAIL_ROOT")


def git(cwd: Path, *args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check, **kwargs)  # type: ignore[call-overload]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env.update(extra)
    return env


def maf(cwd: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_maf", *args],
        cwd=cwd, input=stdin, capture_output=True, text=True, env=clean_env(**env),
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.invalid")
    git(root, "config", "user.name", "Dev")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('app')\n")
    (root / "README.md").write_text("readme\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    setup_store(root / ".maf" / "runtime.db")
    return root


def reserve(repo: Path, pattern: str, agent: str, *, shared: bool = False, clock: ManualClock | None = None) -> None:
    with open_store(repo / ".maf" / "runtime.db", clock=clock or system_clock) as store:
        reservations.acquire(store, [pattern], agent, 30 * MINUTE, exclusive=not shared, reason="busy")


def stage(repo: Path, name: str, text: str = "changed\n") -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(repo, "add", "--", name)


def test_a_reserved_path_blocks_and_says_how_out(repo: Path) -> None:
    reserve(repo, "src/**", "agent-a")
    stage(repo, "src/app.py")

    result = maf(repo, "guard", MAF_AGENT_ID="agent-b")

    assert result.returncode == 1
    assert "src/app.py: agent-a holds src/** (exclusive) until" in result.stdout
    assert "MAF_RESERVATION_OVERRIDE=true" in result.stdout and "release" in result.stdout


@pytest.mark.parametrize("case", ["own", "shared", "expired", "released", "elsewhere"])
def test_commits_that_do_not_touch_others_exclusive_reservations_pass(repo: Path, case: str) -> None:
    if case == "own":
        reserve(repo, "src/**", "agent-b")
    elif case == "shared":
        reserve(repo, "src/**", "agent-a", shared=True)
    elif case == "expired":
        reserve(repo, "src/**", "agent-a", clock=ManualClock(system_clock() - 31 * MINUTE))
    elif case == "released":
        reserve(repo, "src/**", "agent-a")
        with open_store(repo / ".maf" / "runtime.db") as store:
            reservations.release(store, ["src/**"], "agent-a")
    else:
        reserve(repo, "docs/**", "agent-a")
    stage(repo, "src/app.py")

    result = maf(repo, "guard", "--agent", "agent-b")

    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_both_sides_of_a_rename_are_checked(repo: Path) -> None:
    reserve(repo, "lib/**", "agent-a")
    (repo / "lib").mkdir()
    git(repo, "mv", "src/app.py", "lib/app.py")  # into a reserved place
    assert maf(repo, "guard", MAF_AGENT_ID="agent-b").returncode == 1
    git(repo, "reset", "-q", "--hard")

    reserve(repo, "src/app.py", "agent-c")
    git(repo, "mv", "src/app.py", "moved.py")  # out of a reserved place
    result = maf(repo, "guard", MAF_AGENT_ID="agent-b")
    assert result.returncode == 1 and "src/app.py: agent-c" in result.stdout


def test_deleting_a_reserved_file_blocks(repo: Path) -> None:
    reserve(repo, "src/app.py", "agent-a")
    git(repo, "rm", "-q", "src/app.py")

    assert maf(repo, "guard", MAF_AGENT_ID="agent-b").returncode == 1


def test_names_with_spaces_unicode_and_newlines(repo: Path) -> None:
    reserve(repo, "docs/**", "agent-a")
    for name in ("docs/read me.md", "docs/données été.md", "docs/new\nline.md"):
        stage(repo, name)

    result = maf(repo, "guard", MAF_AGENT_ID="agent-b")

    assert result.returncode == 1
    # Each name exactly, on its own line: a newline in a name is shown as \n, never printed raw.
    for shown in ("docs/read me.md", "docs/données été.md", "docs/new\\nline.md"):
        assert f"{shown}: agent-a" in result.stdout


def test_a_committer_without_an_agent_id_is_blocked_by_every_exclusive_reservation(repo: Path) -> None:
    reserve(repo, "src/**", "agent-a")
    stage(repo, "src/app.py")

    result = maf(repo, "guard")

    assert result.returncode == 1 and "without an agent id" in result.stdout


def test_override_lets_it_through_and_is_recorded(repo: Path) -> None:
    reserve(repo, "src/**", "agent-a")
    stage(repo, "src/app.py")

    result = maf(
        repo, "guard", MAF_AGENT_ID="agent-b",
        MAF_RESERVATION_OVERRIDE="true", MAF_OVERRIDE_REASON="prod is down",
    )

    assert result.returncode == 0 and "warning" in result.stderr
    with open_store(repo / ".maf" / "runtime.db") as store:
        (event,) = store.read(lambda t: t.reservation_events("override"))
    assert event.agent_id == "agent-b"
    content = event.data.pop("content")
    assert event.data == {"paths": ["src/app.py"], "holders": [["agent-a", "src/**"]], "reason": "prod is down"}
    assert content == "tree:" + git(repo, "write-tree").stdout.strip()  # what was let through


def test_quiet_passes_nothing_staged_no_database_no_repository(repo: Path, tmp_path: Path) -> None:
    reserve(repo, "src/**", "agent-a")
    assert maf(repo, "guard", MAF_AGENT_ID="agent-b").returncode == 0  # nothing staged

    (repo / ".maf" / "runtime.db").unlink()
    stage(repo, "src/app.py")
    result = maf(repo, "guard", MAF_AGENT_ID="agent-b")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not (repo / ".maf" / "runtime.db").exists()

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    assert maf(outside, "guard").returncode == 0


def test_a_corrupt_database_fails_closed(repo: Path) -> None:
    (repo / ".maf" / "runtime.db").write_bytes(b"\0garbage" * 512)
    for suffix in ("-wal", "-shm"):
        (repo / ".maf" / f"runtime.db{suffix}").unlink(missing_ok=True)
    stage(repo, "src/app.py")

    result = maf(repo, "guard", MAF_AGENT_ID="agent-b")

    assert result.returncode == 2
    assert "fails closed" in result.stderr and "Traceback" not in result.stderr


def test_the_guard_in_a_linked_worktree_uses_the_main_store(repo: Path, tmp_path: Path) -> None:
    reserve(repo, "src/**", "agent-a")
    worktree = tmp_path / "agent-b-tree"
    git(repo, "worktree", "add", "-q", str(worktree))
    stage(worktree, "src/app.py")

    result = maf(worktree, "guard", MAF_AGENT_ID="agent-b")

    assert result.returncode == 1 and "src/app.py: agent-a" in result.stdout


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_pre_push_input_that_never_ends_fails_closed_with_one_line(repo: Path) -> None:
    reserve(repo, "src/**", "agent-a")
    with open("/dev/zero", "rb") as endless:
        result = subprocess.run(
            [sys.executable, "-m", "pytest_maf", "guard", "--pre-push"], cwd=repo, stdin=endless,
            capture_output=True, text=True, env=clean_env(MAF_AGENT_ID="agent-b"), timeout=120,
        )

    assert result.returncode == 2  # before: "internal error: MemoryError" (exit 70), after eating the memory
    assert "standard input" in result.stderr and "Traceback" not in result.stderr


def bare_worktrees(repo: Path, tmp_path: Path, layout: str) -> tuple[Path, Path]:
    """Two worktrees of a bare clone of ``repo``: beside ``bare.git``, or in ``project/`` whose ``.git``
    file names ``project/.bare``."""
    if layout == "bare.git":
        git_dir = tmp_path / "bare.git"
        git(tmp_path, "clone", "-q", "--bare", str(repo), str(git_dir))
        trees = tmp_path / "agent-a-tree", tmp_path / "agent-b-tree"
    else:
        project = tmp_path / "project"
        project.mkdir()
        git_dir = project / ".bare"
        git(tmp_path, "clone", "-q", "--bare", str(repo), str(git_dir))
        (project / ".git").write_text("gitdir: ./.bare\n")
        trees = project / "agent-a", project / "agent-b"
    for number, tree in enumerate(trees):
        git(git_dir, "worktree", "add", "-q", str(tree), "-b", f"agent-{number}")
        git(tree, "config", "user.email", "dev@example.invalid")
    return trees


@pytest.mark.parametrize("layout", ["bare.git", "project/.bare"])
def test_the_worktrees_of_a_bare_repository_share_one_store_and_the_guard_blocks(
    repo: Path, tmp_path: Path, layout: str
) -> None:
    mine, theirs = bare_worktrees(repo, tmp_path, layout)
    assert maf(mine, "setup").returncode == 0
    held = maf(mine, "reservation", "acquire", "src/**", "--agent", "agent-a")
    assert held.returncode == 0, held.stderr
    stage(theirs, "src/app.py")

    result = maf(theirs, "guard", MAF_AGENT_ID="agent-b")

    # before: each worktree had a store of its own; the other's had no reservation, and the commit went in
    assert result.returncode == 1 and "src/app.py: agent-a" in result.stdout
    assert not (mine / ".maf").exists() and not (theirs / ".maf").exists()


def test_a_link_to_nothing_at_the_default_store_place_fails_closed(repo: Path, tmp_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (repo / ".maf" / f"runtime.db{suffix}").unlink(missing_ok=True)
    (repo / ".maf" / "runtime.db").symlink_to(tmp_path / "moved-away.db")
    stage(repo, "src/app.py")

    result = maf(repo, "guard", MAF_AGENT_ID="agent-b")

    assert result.returncode == 2  # before: 0, as if no store had ever been set up
    assert "fails closed" in result.stderr and "Traceback" not in result.stderr


def test_installed_hooks_block_a_real_commit_and_push(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    assert maf(repo, "install-hooks").returncode == 0
    hook_env = clean_env(MAF_AGENT_ID="agent-b")

    reserve(repo, "src/**", "agent-a")
    stage(repo, "src/app.py")
    blocked = git(repo, "commit", "-q", "-m", "touch app", check=False, env=hook_env)
    assert blocked.returncode != 0 and "src/app.py: agent-a" in blocked.stdout + blocked.stderr
    assert git(repo, "rev-list", "--count", "HEAD").stdout.strip() == "1"

    # Committed anyway (hooks skipped): the push is still checked.
    git(repo, "commit", "-q", "--no-verify", "-m", "touch app", env=hook_env)
    pushed = git(repo, "push", "-q", "origin", "main", check=False, env=hook_env)
    assert pushed.returncode != 0 and "push blocked" in pushed.stdout + pushed.stderr

    with open_store(repo / ".maf" / "runtime.db") as store:
        reservations.release(store, ["src/**"], "agent-a")
    assert git(repo, "push", "-q", "origin", "main", check=False, env=hook_env).returncode == 0


def test_a_guard_started_with_sigchld_ignored_still_reads_gits_answers(repo: Path) -> None:
    # A parent that ignores SIGCHLD passes that on: the system then reaps git by itself.
    def ignore_children() -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    def guard(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_maf", "guard", *args], cwd=repo, input=stdin, capture_output=True,
            text=True, env=clean_env(MAF_AGENT_ID="agent-b"), preexec_fn=ignore_children,
        )

    reserve(repo, "src/**", "agent-a")
    stage(repo, "src/app.py")
    blocked = guard()
    assert (blocked.returncode, blocked.stderr) == (1, "")
    assert "src/app.py: agent-a holds src/**" in blocked.stdout

    git(repo, "commit", "-q", "--no-verify", "-m", "touch app")
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    # A force push over a commit this clone does not have: git cat-file's failure says so.
    pushed = guard("--pre-push", stdin=f"refs/heads/main {head} refs/heads/main {'ab' * 20}\n")
    assert pushed.returncode == 1 and "push blocked" in pushed.stdout

    unknown = guard("--pre-push", stdin=f"refs/heads/main {'cd' * 20} refs/heads/main {'0' * 40}\n")
    assert unknown.returncode == 2 and "bad object" in unknown.stderr  # git's failure fails closed


def test_a_git_dir_that_is_not_a_repository_fails_closed_saying_so(repo: Path, tmp_path: Path) -> None:
    # Outside a repository git takes `diff --cached` for `diff --no-index` and prints that one's usage.
    reserve(repo, "src/**", "agent-a")
    guarded = maf(repo, "guard", MAF_AGENT_ID="agent-b", GIT_DIR=str(tmp_path / "nowhere"))
    assert guarded.returncode == 2
    assert "not a git repository" in guarded.stderr and "--no-index" not in guarded.stderr + guarded.stdout


def test_install_hooks_chains_and_uninstall_restores_the_original_bytes(repo: Path) -> None:
    hooks_dir = repo / "custom-hooks"
    hooks_dir.mkdir()
    git(repo, "config", "core.hooksPath", "custom-hooks")
    original = b"#!/bin/sh\necho previous hook ran >&2\nexit 0\n"
    (hooks_dir / "pre-commit").write_bytes(original)
    (hooks_dir / "pre-commit").chmod(0o750)

    installed = maf(repo, "install-hooks")
    assert installed.returncode == 0 and "pre-commit: chained" in installed.stdout
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    stage(repo, "src/app.py")
    committed = git(repo, "commit", "-q", "-m", "change", env=clean_env(MAF_AGENT_ID="agent-b"))
    assert "previous hook ran" in committed.stderr

    assert maf(repo, "install-hooks", "--uninstall").returncode == 0
    assert (hooks_dir / "pre-commit").read_bytes() == original
    assert stat.S_IMODE((hooks_dir / "pre-commit").stat().st_mode) == 0o750
    assert sorted(p.name for p in hooks_dir.iterdir()) == ["pre-commit"]


def test_install_hooks_again_says_which_hooks_it_changed(repo: Path) -> None:
    assert "pre-commit: installed" in maf(repo, "install-hooks").stdout
    hook = repo / ".git" / "hooks" / "pre-commit"
    written = hook.stat().st_mtime_ns

    again = maf(repo, "install-hooks")  # before: "updated", though nothing changed
    assert again.returncode == 0 and "pre-commit: unchanged" in again.stdout and "pre-push: unchanged" in again.stdout
    assert hook.stat().st_mtime_ns == written
    setup_store(repo / "elsewhere.db")
    other = maf(repo, "install-hooks", "--db", str(repo / "elsewhere.db"))  # another store: rewritten
    assert "pre-commit: updated" in other.stdout and "elsewhere.db" in hook.read_text()


def test_a_hook_that_fails_first_stops_the_commit(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho lint failed >&2\nexit 3\n")
    hook.chmod(0o755)
    maf(repo, "install-hooks")
    stage(repo, "src/app.py")

    result = git(repo, "commit", "-q", "-m", "change", check=False, env=clean_env())

    assert result.returncode != 0 and "lint failed" in result.stderr


def test_a_file_name_that_is_not_utf8_is_reported_not_a_traceback(repo: Path) -> None:
    reserve(repo, "docs/**", "agent-a")
    (repo / "docs").mkdir()
    (repo / os.fsdecode(b"docs/bad\xff.md")).write_text("x")
    git(repo, "add", "-A")

    result = maf(repo, "guard", MAF_AGENT_ID="agent-b")

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "docs/bad" in result.stdout


@pytest.mark.parametrize("name", [b"bad\xff.md", b"bad\xff/app.md"], ids=["file", "folder"])
def test_a_name_not_utf8_at_the_repository_root_is_checked_like_any_other(repo: Path, name: bytes) -> None:
    (repo / os.fsdecode(name)).parent.mkdir(exist_ok=True)
    (repo / os.fsdecode(name)).write_text("x")
    git(repo, "add", "-A")
    reserve(repo, "src/**", "agent-a")

    passed = maf(repo, "guard", MAF_AGENT_ID="agent-b")
    assert (passed.returncode, passed.stdout, passed.stderr) == (0, "", "")

    reserve(repo, "*.md", "agent-a")  # at any depth: no anchor
    blocked = maf(repo, "guard", MAF_AGENT_ID="agent-b")
    assert blocked.returncode == 1 and blocked.stderr == ""
    assert "\n  bad" in blocked.stdout and "agent-a holds *.md" in blocked.stdout


def test_an_override_of_a_name_not_utf8_tells_the_holder_and_leaves_maf_working(repo: Path) -> None:
    reserve(repo, "docs/**", "agent-a")
    (repo / "docs").mkdir()
    (repo / os.fsdecode(b"docs/bad\xff.md")).write_text("x")
    git(repo, "add", "-A")

    overridden = maf(
        repo, "guard", MAF_AGENT_ID="agent-b", MAF_RESERVATION_OVERRIDE="true", MAF_OVERRIDE_REASON="hotfix",
    )
    assert overridden.returncode == 0, overridden.stderr
    assert "was not told" not in overridden.stderr

    inbox = maf(repo, "mail", "list", "--agent", "agent-a", "--json")
    assert inbox.returncode == 0, inbox.stderr
    assert "RESERVATION_OVERRIDDEN" in inbox.stdout and "docs/bad" in inbox.stdout


def test_a_pre_push_guard_with_its_input_closed_fails_closed(repo: Path) -> None:
    reserve(repo, "src/**", "agent-a")

    result = subprocess.run(
        [sys.executable, "-m", "pytest_maf", "guard", "--pre-push"], cwd=repo, capture_output=True, text=True,
        env=clean_env(MAF_AGENT_ID="agent-b"), preexec_fn=lambda: os.close(0),
    )

    assert result.returncode == 2
    assert result.stderr == "maf: error: maf guard --pre-push reads the refs being pushed from standard input, which is closed\n"


def test_ctrl_c_kills_a_git_that_outlives_its_output(repo: Path, tmp_path: Path) -> None:
    reserve(repo, "src/**", "agent-a")
    stage(repo, "src/app.py")
    pid_file = tmp_path / "git.pid"
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "git").write_text(f'#!/bin/sh\nexec >&- 2>&-\necho $$ > "{pid_file}.tmp"\nmv "{pid_file}.tmp" "{pid_file}"\nexec sleep 60\n')
    (slow / "git").chmod(0o755)
    env = clean_env(MAF_AGENT_ID="agent-b")
    env["PATH"] = f"{slow}{os.pathsep}{env['PATH']}"
    guard = subprocess.Popen(
        [sys.executable, "-m", "pytest_maf", "guard"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    git_pid = int(pid_file.read_text())
    try:
        guard.send_signal(signal.SIGINT)
        _, errors = guard.communicate(timeout=30)

        assert guard.returncode == 130 and errors == b"maf: interrupted\n"
        with pytest.raises(ProcessLookupError):  # killed and reaped, not left sleeping
            os.kill(git_pid, 0)
    finally:
        try:
            os.kill(git_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize(("hooks_path", "words"), [("", "set to nothing"), ("/dev/null", "not a folder")])
def test_install_hooks_refuses_a_hooks_path_git_runs_no_hook_from(repo: Path, hooks_path: str, words: str) -> None:
    git(repo, "config", "core.hooksPath", hooks_path)

    result = maf(repo, "install-hooks")

    assert result.returncode == 2 and words in result.stderr  # before: "installed", and no commit was guarded
    assert "pre-" not in git(repo, "status", "--porcelain").stdout  # no hook file left in the work tree


def test_install_hooks_that_must_refuse_changes_no_hook(repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    mine = b"#!/bin/sh\necho mine\n"
    (hooks / "pre-commit").write_bytes(mine)
    (hooks / "pre-push").write_bytes(b"#!/bin/sh\n")
    (hooks / "pre-push.pre-maf").write_bytes(b"#!/bin/sh\n")
    before = sorted(path.name for path in hooks.iterdir())

    result = maf(repo, "install-hooks")

    assert result.returncode == 2 and "pre-push.pre-maf already exists" in result.stderr
    assert sorted(path.name for path in hooks.iterdir()) == before
    assert (hooks / "pre-commit").read_bytes() == mine


def test_a_hook_linked_to_a_file_not_there_yet_is_kept_as_the_link_and_put_back(repo: Path, tmp_path: Path) -> None:
    hooks = repo / ".git" / "hooks"
    shared = tmp_path / "shared-hook"  # e.g. a team's hook, not checked out yet
    (hooks / "pre-commit").symlink_to(shared)

    installed = maf(repo, "install-hooks")

    assert installed.returncode == 0 and "pre-commit: chained" in installed.stdout
    assert not os.path.lexists(shared)  # nothing written through the link
    assert os.readlink(hooks / "pre-commit.pre-maf") == str(shared)
    assert maf(repo, "install-hooks", "--uninstall").returncode == 0
    assert os.readlink(hooks / "pre-commit") == str(shared)
    assert not os.path.lexists(hooks / "pre-commit.pre-maf")
