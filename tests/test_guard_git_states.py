"""The guard in the git states agents meet beyond a plain commit: merges (clean, with a conflict,
changed by hand), a submodule git is told to ignore, a repository named by GIT_DIR, a repository
whose files shadow the interpreter's modules, and a store busy with someone else's transaction."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from test_guard import clean_env, git, maf, repo, reserve, stage  # noqa: F401 (repo is a fixture)

LINES = "".join(f"line {n}\n" for n in range(1, 9))


def committed(repo: Path, name: str, text: str, message: str) -> None:
    stage(repo, name, text)
    git(repo, "commit", "-q", "--no-verify", "-m", message)


def branches_touching_app(repo: Path) -> None:
    """main changes src/app.py's first line, `other` (the holder's branch) its last; both before the
    reservation, so each commit went through."""
    committed(repo, "src/app.py", LINES, "eight lines")
    git(repo, "checkout", "-q", "-b", "other")
    committed(repo, "src/app.py", LINES.replace("line 8", "line eight"), "holder's change")
    git(repo, "checkout", "-q", "main")
    committed(repo, "src/app.py", LINES.replace("line 1", "line one"), "committer's change")


def pushing_to(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")


def test_a_clean_merge_that_writes_a_reserved_file_anew_is_blocked_at_the_push(repo: Path, tmp_path: Path) -> None:
    pushing_to(repo, tmp_path)
    branches_touching_app(repo)
    git(repo, "push", "-q", "origin", "main", "other")
    assert maf(repo, "install-hooks").returncode == 0
    reserve(repo, "src/**", "agent-a")
    hook_env = clean_env(MAF_AGENT_ID="agent-b")
    # git runs no pre-commit for a merge without conflicts: the merge is made ...
    git(repo, "merge", "-q", "--no-edit", "other", env=hook_env)

    # ... and its push checked. Before: git log lists no path for a merge, so it went through.
    pushed = git(repo, "push", "-q", "origin", "main", check=False, env=hook_env)

    assert pushed.returncode != 0 and "src/app.py: agent-a holds src/**" in pushed.stdout + pushed.stderr


def branch_beside_a_reservation(repo: Path, tmp_path: Path, name: str) -> dict[str, str]:
    """`other` changes ``name`` and is pushed (to its own branch) before agent-a reserves src/**; main
    changes README.md; the hooks are installed: the environment agent-b commits and pushes in."""
    pushing_to(repo, tmp_path)
    git(repo, "checkout", "-q", "-b", "other")
    committed(repo, name, "print('other')\n", "a change on another branch")
    git(repo, "push", "-q", "origin", "other")
    git(repo, "checkout", "-q", "main")
    committed(repo, "README.md", "readme, edited\n", "committer's change")
    assert maf(repo, "install-hooks").returncode == 0
    reserve(repo, "src/**", "agent-a")
    return clean_env(MAF_AGENT_ID="agent-b")


def test_landing_another_branchs_edit_of_a_reserved_file_is_blocked_however_it_is_landed(
    repo: Path, tmp_path: Path
) -> None:
    hook_env = branch_beside_a_reservation(repo, tmp_path, "src/app.py")

    # Pushed elsewhere before the reservation, it lands on main now: checked, as git cannot tell whose edit.
    pushed = git(repo, "push", "-q", "origin", "other:main", check=False, env=hook_env)
    assert pushed.returncode != 0 and "src/app.py: agent-a" in pushed.stdout + pushed.stderr
    git(repo, "merge", "-q", "--no-edit", "other", env=hook_env)  # a clean merge runs no pre-commit hook
    pushed = git(repo, "push", "-q", "origin", "main", check=False, env=hook_env)
    assert pushed.returncode != 0 and "src/app.py: agent-a" in pushed.stdout + pushed.stderr

    # A conflict resolved by taking the other side whole is landing that edit too.
    git(repo, "checkout", "-q", "-b", "theirs", "HEAD~1")
    committed(repo, "src/app.py", "print('committer')\n", "a conflicting change")
    assert git(repo, "merge", "other", check=False).returncode != 0  # the conflict
    git(repo, "checkout", "--theirs", "--", "src/app.py")
    git(repo, "add", "src/app.py")
    blocked = maf(repo, "guard", MAF_AGENT_ID="agent-b")
    assert blocked.returncode == 1 and "src/app.py: agent-a" in blocked.stdout


def test_a_merge_changed_by_hand_is_blocked_at_the_push(repo: Path, tmp_path: Path) -> None:
    hook_env = branch_beside_a_reservation(repo, tmp_path, "docs/guide.md")  # nothing reserved there

    git(repo, "merge", "-q", "--no-edit", "--no-commit", "other")
    stage(repo, "src/app.py", "print('evil')\n")
    git(repo, "commit", "-q", "--no-verify", "--no-edit")  # past the commit hooks

    # Before: git log lists no path for a merge, so the push went through.
    pushed = git(repo, "push", "-q", "origin", "HEAD:refs/heads/merged", check=False, env=hook_env)
    assert pushed.returncode != 0 and "src/app.py: agent-a" in pushed.stdout + pushed.stderr
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "merge", "-q", "--no-edit", "other", env=hook_env)
    assert git(repo, "push", "-q", "origin", "HEAD:refs/heads/merged", check=False, env=hook_env).returncode == 0


def test_a_submodule_bump_is_a_change_whatever_git_is_told_to_ignore(repo: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    git(library, "init", "-q", "-b", "main")
    committed(library, "lib.py", "one\n", "one")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "vendor/lib")
    git(repo, "commit", "-q", "--no-verify", "-m", "the submodule")
    inside = repo / "vendor" / "lib"
    for setting in ("user.email", "user.name"):
        git(inside, "config", setting, git(repo, "config", setting).stdout.strip())
    committed(inside, "lib.py", "two\n", "two")
    git(repo, "config", "-f", ".gitmodules", "submodule.vendor/lib.ignore", "all")
    git(repo, "config", "diff.ignoreSubmodules", "all")
    git(repo, "add", "vendor/lib", ".gitmodules")
    reserve(repo, "vendor/", "agent-a")

    blocked = maf(repo, "guard", MAF_AGENT_ID="agent-b")

    assert blocked.returncode == 1 and "vendor/lib: agent-a holds vendor/" in blocked.stdout  # before: passed


def test_a_repository_named_by_git_dir_and_git_work_tree_is_guarded(tmp_path: Path) -> None:
    git_dir, work_tree, store = tmp_path / "kept-apart.git", tmp_path / "tree", tmp_path / "runtime.db"
    git(tmp_path, "init", "-q", "--bare", str(git_dir))
    work_tree.mkdir()
    named = {"GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(work_tree), "MAF_DB_PATH": str(store)}
    assert maf(work_tree, "setup", **named).returncode == 0
    assert maf(work_tree, "reservation", "acquire", "src/", "--agent", "agent-a", **named).returncode == 0
    (work_tree / "src").mkdir()
    (work_tree / "src" / "app.py").write_text("print('app')\n")
    subprocess.run(["git", "add", "-A"], cwd=work_tree, env=clean_env(**named), check=True)

    # Before: no .git above the work tree, so "not inside a git repository", and the commit passed.
    blocked = maf(work_tree, "guard", MAF_AGENT_ID="agent-b", **named)

    assert blocked.returncode == 1 and "src/app.py: agent-a holds src/" in blocked.stdout, blocked.stderr
    installed = maf(work_tree, "install-hooks", **named)
    assert installed.returncode == 0 and (git_dir / "hooks" / "pre-commit").is_file(), installed.stderr


def test_a_module_of_the_repository_cannot_stand_in_for_one_the_hooks_guard_imports(repo: Path) -> None:
    assert maf(repo, "install-hooks").returncode == 0
    reserve(repo, "src/**", "agent-a")
    (repo / "datetime.py").write_text("import sys\nsys.exit(0)\n")  # at the top, where git runs hooks
    stage(repo, "src/app.py")

    # Before: `python -m` put the top first on the module path: the commit went through unguarded.
    blocked = git(repo, "commit", "-q", "-m", "touch app", check=False, env=clean_env(MAF_AGENT_ID="agent-b"))

    assert blocked.returncode == 1 and "src/app.py: agent-a" in blocked.stdout + blocked.stderr
    assert "Traceback" not in blocked.stderr


def test_install_hooks_refuses_a_named_store_that_is_not_there(repo: Path, tmp_path: Path) -> None:
    hooks = repo / ".git" / "hooks"
    before = sorted(path.name for path in hooks.iterdir())

    refused = maf(repo, "install-hooks", "--db", str(tmp_path / "typo.db"))

    assert refused.returncode == 2 and "no runtime database at" in refused.stderr and "maf setup" in refused.stderr
    assert sorted(path.name for path in hooks.iterdir()) == before  # before: hooks every commit then failed in


def test_a_store_busy_with_another_transaction_does_not_hold_the_commit_for_the_busy_timeout(repo: Path) -> None:
    reserve(repo, "docs/**", "agent-a")
    stage(repo, "src/app.py")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
         " c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(120)", str(repo / ".maf" / "runtime.db")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # Before: the guard waited the whole busy timeout (here 10 minutes) to record its own metric.
        passed = subprocess.run(
            [sys.executable, "-m", "pytest_maf", "guard"], cwd=repo, capture_output=True, text=True, timeout=60,
            env=clean_env(MAF_AGENT_ID="agent-b", MAF_BUSY_TIMEOUT="600"),
        )
    finally:
        holder.kill()
        holder.wait(timeout=30)

    assert passed.returncode == 0, passed.stderr  # the verdict, from a read: nothing of theirs is touched
    assert "guard_duration_not_recorded" in passed.stderr  # the metric is what the busy store costs


def test_worktrees_of_a_repository_whose_git_directory_is_kept_apart_share_the_store(tmp_path: Path) -> None:
    main, kept_apart = tmp_path / "main", tmp_path / "store" / "repo.git"
    kept_apart.parent.mkdir()
    git(tmp_path, "init", "-q", "-b", "main", f"--separate-git-dir={kept_apart}", str(main))
    committed_with_identity = ["-c", "user.email=dev@example.invalid", "-c", "user.name=Dev"]
    stage(main, "src/app.py", "print('app')\n")
    git(main, *committed_with_identity, "commit", "-q", "-m", "initial")
    assert maf(main, "setup").returncode == 0
    git(main, "worktree", "add", "-q", str(tmp_path / "second"), "-b", "second")

    # Before: git keeps no record of where the main work tree is, so the second worktree looked for
    # its store inside the git directory, and a reservation made there held nothing in main.
    acquired = maf(tmp_path / "second", "reservation", "acquire", "src/", "--agent", "agent-a")
    assert acquired.returncode == 0, acquired.stderr
    stage(main, "src/app.py")
    blocked = maf(main, "guard", MAF_AGENT_ID="agent-b")
    assert blocked.returncode == 1 and "src/app.py: agent-a holds src/" in blocked.stdout


def test_a_store_that_git_clean_removed_fails_the_guard_closed(repo: Path) -> None:
    (repo / ".maf").rename(repo.parent / "set-aside")  # this store was made by setup_store, not maf setup
    assert maf(repo, "setup").returncode == 0
    assert maf(repo, "reservation", "acquire", "src/", "--agent", "agent-a").returncode == 0
    git(repo, "clean", "-xfdq")  # .maf/ is an ignored file: git clean -x removes it
    stage(repo, "src/app.py")

    # Before: no store at the default place read as "nothing is reserved", and the commit passed.
    refused = maf(repo, "guard", MAF_AGENT_ID="agent-b")

    assert refused.returncode == 2 and "is gone, though it was set up here" in refused.stderr
    assert maf(repo, "setup").returncode == 0 and maf(repo, "guard", MAF_AGENT_ID="agent-b").returncode == 0
