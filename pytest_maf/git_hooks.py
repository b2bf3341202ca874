"""Plain git hooks for repositories that do not use the pre-commit framework.

``install`` writes pre-commit and pre-push hooks running ``maf guard`` into
the hooks directory git itself uses (``core.hooksPath`` and worktrees
included). A hook already there is kept, renamed beside ours, and run first;
``uninstall`` puts it back exactly as it was. Given a store (``maf install-hooks
--db``), the hooks guard that one, whatever the committing shell's variables.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_maf.database_url import is_database_url, url_passwords
from pytest_maf.errors import UsageError
from pytest_maf.files import write_bytes_atomic
from pytest_maf.guard import git_output, run_git

MARKER = "# installed by pytest-maf (maf install-hooks)"
PREVIOUS_SUFFIX = ".pre-maf"
HOOKS = ("pre-commit", "pre-push")
# The guard's entry, run with ``python -c``: without the current directory (the work tree's top, where
# git runs hooks) first on the module path, so no module of the repository being committed (a
# datetime.py at its top) stands in for one the guard imports.
GUARD_ENTRY = (
    "import sys; sys.path[:1] = [entry for entry in sys.path[:1] if entry];"
    " from pytest_maf.cli import main; sys.exit(main())"
)


def hooks_directory(cwd: Path) -> Path:
    """The folder git runs hooks from; :class:`UsageError` when ``core.hooksPath`` leaves it none."""
    if _set_but_empty(cwd):
        raise UsageError(
            "core.hooksPath is set to nothing, so git runs no hook at all (a commit is never guarded);"
            " unset it (git config --unset core.hooksPath) or name a folder, then install again"
        )
    relative = git_output(cwd, "rev-parse", "--git-path", "hooks").decode().strip()
    directory = (cwd / relative).resolve()
    if directory.exists() and not directory.is_dir():
        raise UsageError(
            f"core.hooksPath names {directory}, which is not a folder, so git runs no hook from it;"
            " unset it (git config --unset core.hooksPath) or name a folder, then install again"
        )
    return directory


def _set_but_empty(cwd: Path) -> bool:
    """Whether ``core.hooksPath`` is given, as an empty value."""
    returncode, listed, _ = run_git(cwd, "config", "--get-all", "core.hooksPath")
    return returncode == 0 and listed.strip() == b""


@dataclass(frozen=True)
class GuardedStore:
    """The store a hook's guard reads, named when installing (``--db``): a file's absolute path, or
    a PostgreSQL URL without a password and its schema. Without one, the guard finds the store at
    commit time (MAF_DB_PATH, MAF_DATABASE_URL, configuration, else ``.maf/runtime.db``)."""

    location: str
    schema: str | None = None  # with a URL: exported as MAF_DATABASE_SCHEMA


def _script(hook: str, python: str, store: GuardedStore | None = None) -> str:
    guard = f"{shlex.quote(python)} -c {shlex.quote(GUARD_ENTRY)} guard"
    if store is not None:
        guard += f" --db {shlex.quote(store.location)}"
    lines = [
        "#!/bin/sh",
        MARKER,
        "# Runs the hook that was here before, then the reservation guard.",
        f'previous="$(dirname "$0")/{hook}{PREVIOUS_SUFFIX}"',
    ]
    schema = (
        [f"MAF_DATABASE_SCHEMA={shlex.quote(store.schema)}", "export MAF_DATABASE_SCHEMA"]
        if store is not None and store.schema is not None else []
    )
    if hook == "pre-push":
        lines += [
            "input=$(cat)",
            'if [ -x "$previous" ]; then',
            '  printf \'%s\\n\' "$input" | "$previous" "$@" || exit $?',
            "fi",
            *schema,
            f'printf \'%s\\n\' "$input" | {guard} --pre-push',
        ]
    else:
        lines += [
            'if [ -x "$previous" ]; then',
            '  "$previous" "$@" || exit $?',
            "fi",
            *schema,
            f"exec {guard}",
        ]
    return "\n".join(lines) + "\n"


# A hook that finds what to run from its own name: `basename "$0"`, `${0##*/}` (husky's runners do).
_OWN_NAME = re.compile(r'basename\s+(--\s+)?"?\$\{?0\b|\$\{0##\*/\}')
# A file the hook reads from its own folder: `. "$(dirname "$0")/h"` (husky 9).
_SOURCED_BESIDE = re.compile(r'\.\s+"\$\(dirname\s+(--\s+)?"\$0"\)/([^"/]+)"')


def _runs_by_its_own_name(path: Path) -> bool:
    """Whether the hook at ``path``, or a file it reads from its own folder, tells what to run by the
    hook's own file name, which renaming it to ``*.pre-maf`` would change."""
    text = _head(path)
    beside = [_head(path.parent / match.group(2)) for match in _SOURCED_BESIDE.finditer(text)]
    return any(_OWN_NAME.search(part) for part in (text, *beside))


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(65_536).decode("utf-8", "replace")
    except OSError:
        return ""


def hooks_path_scope(cwd: Path) -> str | None:
    """Where ``core.hooksPath`` is set ('local', 'worktree', 'global', 'system', 'command'), or None
    when it is not (or git is older than 2.26, which cannot say)."""
    returncode, listed, _ = run_git(cwd, "config", "--show-scope", "--get", "core.hooksPath")
    return listed.split(b"\t", 1)[0].decode("utf-8", "replace") if returncode == 0 else None


def _is_ours(path: Path) -> bool:
    """Whether ``path`` is (or links to) a hook pytest-maf wrote; a link to nothing is not."""
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


@dataclass(frozen=True)
class HookChange:
    hook: str
    path: Path
    action: str  # installed, updated, unchanged, chained, removed, restored, absent, foreign


def install(cwd: Path, python: str = sys.executable, store: GuardedStore | None = None) -> list[HookChange]:
    """Write the hooks, each running the guard against ``store`` (None: the one found at commit time)."""
    if store is not None and is_database_url(store.location) and url_passwords(store.location):
        raise UsageError(
            "the URL given with --db holds a password, which the hooks would keep in plain text:"
            " give it without the password and let PGPASSWORD or ~/.pgpass supply it when committing,"
            " or set MAF_DATABASE_URL where agents commit instead of giving --db; no hook was written"
        )
    directory = hooks_directory(cwd)
    for hook in HOOKS:  # checked first: nothing is changed when one hook cannot be chained
        path, previous = directory / hook, directory / f"{hook}{PREVIOUS_SUFFIX}"
        if (path.is_dir() and not path.is_symlink()) or (previous.is_dir() and not previous.is_symlink()):
            raise UsageError(f"{path} is a folder, not a hook git can run; move it away first")
        if os.path.lexists(path) and not _is_ours(path) and os.path.lexists(previous):
            raise UsageError(
                f"{previous} already exists beside a hook pytest-maf did not write; move one of them away first"
            )
        if os.path.lexists(path) and not _is_ours(path) and _runs_by_its_own_name(path):
            raise UsageError(
                f"{path} finds what to run from its own file name (as a hook manager's such as husky's does),"
                f" so renamed beside ours it would run nothing: call the guard from the hook it runs instead"
                f" (for husky, a line `{'maf guard --pre-push' if hook == 'pre-push' else 'maf guard'}` in"
                f" .husky/{hook}); no hook was written"
            )
    scope = hooks_path_scope(cwd)
    if store is not None and scope in ("global", "system"):
        raise UsageError(
            f"core.hooksPath is set in your {scope} git configuration, so the hooks in {directory} run for every"
            f" repository {'of this user' if scope == 'global' else 'on this machine'}, and --db would make each"
            " of them guard with this store: install without --db (each repository's guard finds its own store),"
            " or give this repository a hooks folder of its own (git config core.hooksPath .git/hooks); no hook"
            " was written"
        )
    directory.mkdir(parents=True, exist_ok=True)
    changes = []
    for hook in HOOKS:
        path = directory / hook
        previous = directory / f"{hook}{PREVIOUS_SUFFIX}"
        if os.path.lexists(path) and not _is_ours(path):  # a link too, even one to nothing yet: kept as it is
            os.replace(path, previous)
            action = "chained"
        else:
            action = "updated" if os.path.lexists(path) else "installed"
        script = _script(hook, python, store).encode("utf-8", "surrogateescape")
        if action == "updated" and not path.is_symlink() and _unchanged(path, script):
            changes.append(HookChange(hook, path, "unchanged"))
            continue
        # a new file in place of the name, never written through a link; a path as the system gave it
        write_bytes_atomic(path, script)
        path.chmod(0o755)
        changes.append(HookChange(hook, path, action))
    return changes


def _unchanged(path: Path, script: bytes) -> bool:
    """Whether the hook at ``path`` is ``script`` already, and runnable."""
    try:
        return path.read_bytes() == script and os.access(path, os.X_OK)
    except OSError:
        return False


def uninstall(cwd: Path) -> list[HookChange]:
    directory = hooks_directory(cwd)  # not made: where there is none, every hook is absent
    changes = []
    for hook in HOOKS:
        path = directory / hook
        previous = directory / f"{hook}{PREVIOUS_SUFFIX}"
        if not os.path.lexists(path):
            changes.append(HookChange(hook, path, "absent"))
            continue
        if not _is_ours(path):
            changes.append(HookChange(hook, path, "foreign"))
            continue
        path.unlink()
        if os.path.lexists(previous):  # a link the user had, even one to nothing, comes back as it was
            os.replace(previous, path)
            changes.append(HookChange(hook, path, "restored"))
        else:
            changes.append(HookChange(hook, path, "removed"))
    return changes
