"""Keeping pytest-maf's runtime files out of git, without editing a tracked file.

pytest-maf's own folders inside the repository, the default database folder
(``.maf/``) and the agent-mail root (``.agent-mail/``), are added whole to the
repository's own exclude file, ``<git common dir>/info/exclude``: git reads it
in every worktree, and it is never committed. A database kept anywhere else
(``ci/maf.db``) is added as the file and its companions (``ci/maf.db*``), so
the user's files beside it stay visible. A line already there is never added
again. ``maf setup`` and ``maf init`` call this, and a store made by the
pytest plugin (a first preflight, a fixture such as ``maf_task``) is kept out
the same way::

    report = exclude_runtime_files(settings)
    print(report.describe())  # kept .maf/ and .agent-mail/ out of git (.git/info/exclude)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_maf.config import DB_RELATIVE_PATH
from pytest_maf.guard import git_output, is_default_location
from pytest_maf.patterns import escape_glob
from pytest_maf.repository import note_store_root

if TYPE_CHECKING:
    from pytest_maf.config import Settings
    from pytest_maf.store import Store

HEADER = "# pytest-maf runtime files (added by maf setup / maf init)"


@dataclass(frozen=True)
class ExcludeReport:
    exclude_file: Path
    shown_file: str  # the exclude file as the user knows it: .git/info/exclude
    entries: list[str]  # what is kept out, repository-relative: .maf/, .agent-mail/
    added: list[str]  # the lines this call appended (none when all were there)

    def describe(self) -> str:
        return f"kept {' and '.join(self.entries)} out of git ({self.shown_file})"


def runtime_entries(settings: Settings) -> list[tuple[str, str]]:
    """(shown name, exclude line) for the runtime files inside the repository: the default database
    folder and the mail root whole, a database elsewhere as the file and its companions."""
    if settings.repo_root is None:
        return []
    root = settings.repo_root.resolve()
    own_database_folder = settings.repo_root / DB_RELATIVE_PATH.parent
    found: dict[str, str] = {}
    for path, is_database in ((settings.db_path, True), (settings.mail_root, False)):
        directory = path.parent if is_database else path
        whole_folder = not is_database or directory.resolve() == own_database_folder.resolve()
        if whole_folder and directory.is_symlink():  # git sees the link itself (.maf -> /fast/disk), not a folder
            link = _inside(directory.parent.resolve() / directory.name, root)
            if link is not None and link.parts:
                found[link.as_posix()] = f"/{escape_glob(link.as_posix())}"
        relative = _inside(directory.resolve(), root)  # and the folder a link names, where that is inside
        if relative is None:
            continue  # outside the repository: nothing for git to see
        if relative.parts and whole_folder:
            found[f"{relative.as_posix()}/"] = f"/{escape_glob(relative.as_posix())}/"
        elif is_database:  # the file and its companions (-wal, -shm, .lock), in a folder that is not ours
            name = (relative / path.name).as_posix()
            found[f"{name}*"] = f"/{escape_glob(name)}*"
    return list(found.items())


def _inside(path: Path, root: Path) -> Path | None:
    try:
        return path.relative_to(root)
    except ValueError:
        return None


def exclude_file(repo_root: Path) -> Path:
    """``info/exclude`` of the repository's common git directory (shared by its worktrees)."""
    common = os.fsdecode(git_output(repo_root, "rev-parse", "--git-common-dir").rstrip(b"\n"))
    return (repo_root / common).resolve() / "info" / "exclude"


def exclude_runtime_files(settings: Settings) -> ExcludeReport | None:
    """Append the missing runtime entries to ``info/exclude``; None outside a repository. With the
    store made at its default place, note its root in the common git directory
    (:data:`~pytest_maf.repository.STORE_NOTE`)."""
    if settings.repo_root is not None and settings.database_url is None and settings.db_path.is_file():
        if is_default_location(settings):
            note_store_root(settings.repo_root.absolute())
    entries = runtime_entries(settings)
    if settings.repo_root is None or not entries:
        return None
    path = exclude_file(settings.repo_root)
    existing = path.read_bytes() if path.is_file() else b""
    present = {line.rstrip(b"\r").decode("utf-8", "surrogateescape") for line in existing.split(b"\n")}
    missing = [line for _, line in entries if line not in present]
    if missing:
        lines = ([] if HEADER in present else [HEADER]) + missing
        text = ("\n" if existing and not existing.endswith(b"\n") else "") + "\n".join(lines) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:  # appended: the user's own lines stay byte for byte
            handle.write(text.encode("utf-8", "surrogateescape"))
            handle.flush()
            os.fsync(handle.fileno())
    try:
        shown = path.relative_to(settings.repo_root.resolve()).as_posix()
    except ValueError:
        shown = str(path)
    return ExcludeReport(path, shown, [name for name, _ in entries], missing)


def open_store_out_of_git(settings: Settings, *, create: bool) -> Store:
    """The store ``settings`` name, opened as :func:`pytest_maf.store.open_store_for` opens it; a SQLite
    store this call makes is kept out of git as `maf setup` keeps it, so `git add -A` never commits it.
    A failure to keep it out costs only that (`maf setup` says why, and adds the lines)."""
    from pytest_maf.errors import MafError
    from pytest_maf.store import open_store_for

    made_here = create and settings.database_url is None and not settings.db_path.exists()
    store = open_store_for(settings, create=create)
    if made_here:
        try:
            exclude_runtime_files(settings)
        except (MafError, OSError):
            pass
    return store
