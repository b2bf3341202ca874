"""`maf db restore` of the SQLite store: a verified backup copied into the live database, with the lease
check and the copy kept aside of what it replaces made in one critical section against the writers.

The writers' turn (``<db>.lock``) is taken first, then SQLite's own write lock on the live database:
the copy into it (SQLite's backup API) takes that lock with its first page and holds it until the
last is committed. Only then are the live leases counted and the current database kept aside. So a
write committed before is in the kept copy, and one that comes later waits for the restore and lands
in the restored store (or gives up as busy, unacknowledged): no acknowledged write is lost.

Every wait is bounded by the busy timeout (``runtime.busy_timeout_seconds``): past it the restore
stops with :class:`~pytest_maf.errors.StoreBusyError` (exit 5). The copy runs a few pages at a time,
looking at the clock and letting Ctrl-C and SIGTERM in between, so either stops it; whatever stops
it before the last page rolls the copy back and removes the kept copy: nothing changed.

Example::

    report = restore(Path(".maf/runtime.db"), Path("backups/runtime-1.db"), busy_timeout_s=30)
    print(report.kept_as)  # .maf/runtime.db.before-restore-20250101T120000
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_maf.clock import system_clock
from pytest_maf.errors import StoreBusyError, StoreError, UsageError
from pytest_maf.store.sqlite import (
    DEFAULT_BUSY_TIMEOUT_S, connect, connect_read_only, is_busy, store_busy, writer_lock_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_maf.store.writer_lock import WriterLock

SQLITE_OK, SQLITE_BUSY, SQLITE_LOCKED = 0, 5, 6
# Pages copied between two looks at the clock and at signals (Ctrl-C, SIGTERM).
STEP_PAGES = 256
# How long one step waits for SQLite's lock before the clock and the signals are looked at again.
LOCK_LOOK_S = 0.05


@dataclass(frozen=True)
class RestoreReport:
    kept_as: Path | None  # None: there was no database to keep
    rows: dict[str, int]


def live_lease_count(db_path: Path) -> int:
    connection = connect(db_path)
    try:
        return int(connection.execute(
            "SELECT COUNT(*) FROM leases WHERE lease_expires_at > ?", (system_clock(),)
        ).fetchone()[0])
    finally:
        connection.close()


def restore(db_path: Path, backup_path: Path, force: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> RestoreReport:
    """Replace the live database's content with a verified backup; keep the current one aside.

    A live database too damaged for SQLite to copy is kept aside byte for byte
    and replaced as a file.
    """
    from pytest_maf.store.maintenance import (
        _is_store_file, _private_copy, _refuse_another_applications, _verify_in_place,
    )

    if _is_store_file(backup_path, db_path):
        raise UsageError(
            f"{backup_path} is the live runtime database {db_path} (or a file beside it), not a backup;"
            " give a file made by `maf db backup`"
        )
    if not db_path.parent.is_dir():
        raise StoreError(f"no runtime database folder {db_path.parent}: run `maf setup` first, then restore")
    _refuse_another_applications(db_path, force)
    with _private_copy(backup_path) as plain:
        rows = _verify_in_place(plain, backup_path)  # refuses a bad backup before touching anything
        restoring = _Restoring(db_path, plain, force)
        lock = writer_lock_of(db_path, lambda waited: store_busy(db_path, lock, waited))
        try:
            deadline = time.monotonic() + busy_timeout_s
            with lock.turn(deadline):
                restoring.run(lock, deadline)
        finally:
            lock.close()
    return RestoreReport(restoring.kept, rows)


class _Restoring:
    """One restore, inside the writers' turn: :meth:`run` copies the backup into the live database and,
    once SQLite's lock on it is held, checks its leases and keeps it aside (:meth:`check_and_keep`)."""

    def __init__(self, db_path: Path, plain: Path, force: bool) -> None:
        self.db_path, self.plain, self.force = db_path, plain, force
        self.kept: Path | None = None
        self.readable = False

    def run(self, lock: WriterLock, deadline: float) -> None:
        started = time.monotonic()

        def busy() -> BaseException:
            return store_busy(self.db_path, lock, time.monotonic() - started)

        existed = self.db_path.is_file()
        done = False
        try:
            try:
                _copy_database(self.plain, self.db_path, deadline, busy, self.check_and_keep if existed else None)
            except StoreBusyError:
                raise  # waited for past the busy timeout: nothing was changed
            except StoreError:
                if not existed or self.readable:
                    raise  # nothing was changed: the copy was rolled back
                if self.kept is None:  # failed before SQLite's lock was held: an unreadable store
                    self.check_and_keep()
                if self.readable:
                    raise
                _replace_file(self.plain, self.db_path)  # too damaged to be written through SQLite
            done = True
        finally:
            if not done and self.kept is not None:  # stopped: the kept copy of an unchanged store goes
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.kept}{suffix}").unlink(missing_ok=True)
                self.kept = None

    def check_and_keep(self) -> None:
        """Count the live leases (refused without ``force``) and keep the live database aside; called
        with SQLite's write lock on it held, so nothing can be committed in between."""
        try:
            live = live_lease_count(self.db_path)
            self.readable = True
        except sqlite3.Error:
            live = 0  # an unreadable live database holds no lease worth protecting
        if live and not self.force:
            raise StoreError(f"{live} live lease(s) in {self.db_path}: agents are working. Wait, or use --force")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        kept = self.db_path.with_name(f"{self.db_path.name}.before-restore-{stamp}")
        for number in itertools.count(2):  # never over an earlier restore's kept copy
            if not kept.exists():
                break
            kept = self.db_path.with_name(f"{self.db_path.name}.before-restore-{stamp}-{number}")
        self.kept = kept
        _keep_aside(self.db_path, kept, self.readable)


def _keep_aside(db_path: Path, kept: Path, readable: bool) -> None:
    if readable:
        try:
            _copy_database(db_path, kept, time.monotonic() + DEFAULT_BUSY_TIMEOUT_S, None, None)
            return
        except StoreError:
            kept.unlink(missing_ok=True)
    for suffix in ("", "-wal"):  # byte for byte, with its write-ahead log, as SQLite would open it
        if Path(f"{db_path}{suffix}").is_file():
            shutil.copyfile(f"{db_path}{suffix}", f"{kept}{suffix}")


def _replace_file(source: Path, db_path: Path) -> None:
    staged = db_path.with_name(f".{db_path.name}.{uuid.uuid4().hex[:8]}.restore")
    try:
        shutil.copyfile(source, staged)
        for suffix in ("-wal", "-shm"):  # they belong to the damaged file
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        os.replace(staged, db_path)
    finally:
        staged.unlink(missing_ok=True)


def _copy_database(
    source_path: Path, target_path: Path, deadline: float, busy: Callable[[], BaseException] | None,
    once_locked: Callable[[], None] | None,
) -> None:
    """Copy the database at ``source_path`` into ``target_path`` in one transaction of the target, a few
    pages at a time; ``busy()`` is raised once ``deadline`` passes with the target still locked by
    another connection. ``once_locked`` runs after the first page, with the target's write lock held
    and nothing of the copy committed: what it raises stops the copy and rolls it back.

    CPython's ``backup`` would retry a busy target for ever, and run no signal handler until done: each
    step here waits at most :data:`LOCK_LOOK_S`, and the progress callback between steps is where the
    deadline is looked at and Ctrl-C or SIGTERM is raised.
    """
    waiting_for_lock = once_locked is not None

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal waiting_for_lock
        if status in (SQLITE_BUSY, SQLITE_LOCKED):
            if time.monotonic() >= deadline:
                raise busy() if busy is not None else StoreError(f"{target_path} stayed busy")
        elif status == SQLITE_OK and waiting_for_lock:
            waiting_for_lock = False
            assert once_locked is not None
            once_locked()

    opened: list[sqlite3.Connection] = []
    try:
        opened.append(source := connect_read_only(source_path))
        opened.append(target := connect(target_path, int(LOCK_LOOK_S * 1000)))
        # A page a step: once_locked runs after the first, with the target's lock held and nothing committed
        # (a store is many pages: one per table and index at least).
        source.backup(target, pages=1 if once_locked is not None else STEP_PAGES, progress=progress, sleep=LOCK_LOOK_S)
    except sqlite3.Error as error:
        if is_busy(error) and busy is not None:
            raise busy() from None
        raise StoreError(f"copying {source_path} to {target_path} failed: {error}") from None
    finally:
        for connection in opened:
            connection.close()
