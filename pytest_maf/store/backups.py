"""A folder of backups: which files in it are pytest-maf's, their verification, pruning and the newest good one.

A file counts as a backup only by what it holds, never by its name alone:

* a SQLite database (plain or gzipped) marked with pytest-maf's
  ``application_id`` ("maf1"), as ``maf db backup`` writes on SQLite;
* a ``pg_dump`` custom-format archive (``PGDMP``) whose table of contents
  holds pytest-maf's schema-version table, as ``maf db backup`` writes on
  PostgreSQL.

Anything else in the folder (another application's database or dump, notes,
a link) is foreign: it is never listed, verified or deleted. Neither is the
live store (its database, ``-wal``, ``-shm``, lock file) nor the copy a
restore keeps beside it. A backup's time is its file's modification time.

Example::

    for state in backup_states(Path("backups"), postgres_url=None):
        print(state.file.path, state.verified)
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pytest_maf.errors import MafError, StoreBusyError, StoreUnreachableError, UsageError
from pytest_maf.files import SQLITE_APPLICATION_ID_AT, SQLITE_HEADER, in_use_mark
from pytest_maf.store import schema
from pytest_maf.store.postgres_schema import VERSION_TABLE

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
KINDS = (SQLITE, POSTGRESQL)
# What keeps a backup from being checked here, which says nothing about the backup itself.
NOT_CHECKABLE = (UsageError, StoreUnreachableError, StoreBusyError)
MAX_KEEP = 10_000  # more backups than this in one folder is a folder nobody prunes
_PG_DUMP_MAGIC = b"PGDMP"
# pg_dump -Fc writes its table of contents uncompressed before the data; ours names the version table.
_PG_TOC_BYTES = 1 << 20
_PG_MARKER = VERSION_TABLE.encode()


@dataclass(frozen=True)
class BackupFile:
    """One of pytest-maf's backups in a folder."""

    path: Path
    kind: str  # SQLITE or POSTGRESQL
    bytes: int
    modified_ms: int


@dataclass(frozen=True)
class BackupState:
    """A backup and the outcome of verifying it: ``verified`` is None when it could not be tried here."""

    file: BackupFile
    verified: bool | None
    rows: int | None = None
    problem: str = ""


def _head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as handle:
            head = handle.read(size)
        if head[:2] == b"\x1f\x8b":  # gzip: the database's own header is inside
            with gzip.open(path, "rb") as packed:
                return packed.read(size)
        return head
    except (OSError, EOFError, zlib.error):
        return b""


def backup_kind(path: Path) -> str | None:
    """``"sqlite"`` or ``"postgresql"`` when ``path`` is a regular file holding one of pytest-maf's backups, else None."""
    try:
        status = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None  # links and folders are never ours to list or delete
    head = _head(path, 100)
    if head.startswith(SQLITE_HEADER) and len(head) >= SQLITE_APPLICATION_ID_AT + 4:
        application_id = int.from_bytes(head[SQLITE_APPLICATION_ID_AT:SQLITE_APPLICATION_ID_AT + 4], "big")
        return SQLITE if application_id == schema.APPLICATION_ID else None
    if head.startswith(_PG_DUMP_MAGIC):
        try:
            with path.open("rb") as handle:
                return POSTGRESQL if _PG_MARKER in handle.read(_PG_TOC_BYTES) else None
        except OSError:
            return None
    return None


def is_protected(path: Path, protected: Iterable[Path]) -> bool:
    if in_use_mark(path) is not None:  # a store in use, this one's or another repository's
        return True
    for guarded in protected:
        try:
            if os.path.samefile(path, guarded):
                return True
        except OSError:
            continue
        if path.name.startswith(f"{guarded.name}.before-restore-") and path.parent.resolve() == guarded.parent.resolve():
            return True
    return False


def find_backups(folder: Path, protected: Iterable[Path] = (), kind: str | None = None) -> list[BackupFile]:
    """pytest-maf's backups in ``folder`` (of ``kind``, when given), newest first.

    ``protected`` names the live store's files: they, and the copies a restore
    kept beside them, are not backups even when the folder holds them; nor is
    any store in use (another repository's), known by the lock file beside it.
    """
    if not folder.is_dir():
        raise UsageError(f"no backup folder {folder}: give the folder `maf db backup --output` wrote into")
    guarded = [Path(path) for path in protected]
    found = []
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue  # a backup being written is staged under a dot-name
        found_kind = backup_kind(path)
        if found_kind is None or (kind is not None and found_kind != kind) or is_protected(path, guarded):
            continue
        status = path.stat()
        found.append(BackupFile(path, found_kind, status.st_size, status.st_mtime_ns // 1_000_000))
    return sorted(found, key=lambda backup: (backup.modified_ms, backup.path.name), reverse=True)


def check_keep(keep: int) -> int:
    """``keep`` when it is a count of backups to keep (1 to :data:`MAX_KEEP`); else a :class:`UsageError`."""
    if not 1 <= keep <= MAX_KEEP:
        raise UsageError(
            f"--keep {keep}: keep from 1 (the backup just made) to {MAX_KEEP} backups; older ones are deleted"
        )
    return keep


def prune_backups(
    folder: Path, keep: int, kind: str, protected: Iterable[Path] = (), started_ms: int | None = None
) -> list[BackupFile]:
    """Delete all but the ``keep`` newest of pytest-maf's ``kind`` backups in ``folder``; the ones deleted.

    A backup modified at or after ``started_ms`` (when the run pruning began) is
    never deleted: it is this run's own, or one a run beside it is still
    reporting; the next run prunes it when it is old.
    """
    check_keep(keep)
    removed = []
    for backup in find_backups(folder, protected, kind)[keep:]:
        if started_ms is not None and backup.modified_ms >= started_ms:
            continue
        try:
            backup.path.unlink()
        except FileNotFoundError:
            continue  # pruned meanwhile by another run
        except OSError as error:
            raise UsageError(f"cannot delete the old backup {backup.path}: {error.strerror}") from None
        removed.append(backup)
    return removed


def verify_backup_file(backup: BackupFile, postgres_url: str | None) -> dict[str, int]:
    """Run the backup verification of its kind (``maf db verify-backup``); its row counts per table.

    Raises :class:`~pytest_maf.store.maintenance.VerificationError` for a bad
    backup, :class:`UsageError` for a PostgreSQL one when no server is named, and
    :class:`~pytest_maf.errors.StoreUnreachableError` or
    :class:`~pytest_maf.errors.StoreBusyError` when the server cannot check it now.
    """
    from pytest_maf.store import maintenance

    if backup.kind == SQLITE:
        return maintenance.verify_database(backup.path)
    if postgres_url is None:
        raise UsageError("a PostgreSQL backup is verified on a server: set MAF_DATABASE_URL (runtime.database_url)")
    from pytest_maf.extras import import_extra

    postgres_backup = import_extra("pytest_maf.store.postgres_backup", "postgres", "a PostgreSQL store's backups")
    rows: dict[str, int] = postgres_backup.verify_backup(postgres_url, backup.path)
    return rows


def _checked_state(backup: BackupFile, postgres_url: str | None) -> BackupState:
    """``backup`` verified: True, or False with the first problem; raises what keeps it from being checked."""
    from pytest_maf.store.maintenance import VerificationError

    try:
        rows = verify_backup_file(backup, postgres_url)
    except VerificationError as error:
        return BackupState(backup, False, problem=error.problems[0] if error.problems else str(error))
    except NOT_CHECKABLE:
        raise
    except MafError as error:
        return BackupState(backup, False, problem=str(error))
    return BackupState(backup, True, sum(rows.values()))


def backup_state(backup: BackupFile, postgres_url: str | None) -> BackupState:
    """``backup`` verified: True, False with the first problem, or None when it cannot be checked here
    (no server named, or the server cannot be reached or stays busy)."""
    try:
        return _checked_state(backup, postgres_url)
    except NOT_CHECKABLE as error:
        return BackupState(backup, None, problem=str(error))


def backup_states(
    folder: Path, postgres_url: str | None, protected: Iterable[Path] = ()
) -> list[BackupState]:
    """Every pytest-maf backup in ``folder``, newest first, each verified."""
    return [backup_state(backup, postgres_url) for backup in find_backups(folder, protected)]


def newest_verified(
    folder: Path, kind: str, postgres_url: str | None, protected: Iterable[Path] = ()
) -> tuple[BackupState, list[BackupState]]:
    """The newest ``kind`` backup in ``folder`` that passes verification, and the newer ones that failed it.

    Raises :class:`UsageError` (nothing to restore) when none passes, and what keeps a backup from
    being checked (:data:`NOT_CHECKABLE`: the server cannot be reached, say) as it is: that is not the
    backups' fault, and an older backup is not restored in their place.
    """
    failed: list[BackupState] = []
    found = find_backups(folder, protected, kind)
    for backup in found:
        state = _checked_state(backup, postgres_url)
        if state.verified:
            return state, failed
        failed.append(state)
    if not found:
        raise UsageError(f"no {kind} backup made by pytest-maf in {folder}; nothing was restored")
    newest = failed[0]
    raise UsageError(
        f"none of the {len(found)} {kind} backup(s) in {folder} passes verification (newest,"
        f" {newest.file.path.name}: {newest.problem}); nothing was restored"
    )
