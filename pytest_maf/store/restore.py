"""`maf db restore` of the SQLite store: a verified backup copied into the live database, with the lease
check and the copy kept aside of what it replaces made in one critical section against the writers.

The writers' turn (``<db>.lock``) is taken first, then SQLite's own write lock on the live database:
the copy into it (SQLite's backup API) takes that lock with its first page and holds it until the
last is committed. Only then are the live leases counted and the current database kept aside. So a
write committed before is in the kept copy, and one that comes later waits for the restore and lands
in the restored store (or gives up as busy, unacknowledged): no acknowledged write is lost.

Every wait is bounded by the busy timeout (``runtime.busy_timeout_seconds``): past it the restore
stops with :class:`~pytest_maf.errors.StoreBusyError` (exit 5). The copy runs one page a step, looking
at the clock and letting Ctrl-C and SIGTERM in between, so either stops it; whatever stops it before
the last page rolls the copy back and removes the kept copy: nothing changed. From the last page on
(its commit, the checkpoint as the copy closes) Ctrl-C, SIGTERM and SIGHUP are held back until the
restore is done, then raised as :class:`RestoredThenStopped`: the kept copy is never removed once the
live database may have changed.

Example::

    report = restore(Path(".maf/runtime.db"), Path("backups/runtime-1.db"), busy_timeout_s=30)
    print(report.kept_as)  # .maf/runtime.db.before-restore-20250101T120000
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_maf.clock import system_clock
from pytest_maf.errors import StoreBusyError, StoreError, UsageError
from pytest_maf.store.sqlite import (
    DEFAULT_BUSY_TIMEOUT_S, connect, connect_read_only, is_busy, store_busy, writer_lock_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_maf.store.writer_lock import WriterLock

SQLITE_OK, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_DONE = 0, 5, 6, 101
# Held back from the restore's last page until it is done; SIGHUP is not on every platform.
HELD_STOPS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
# Pages copied between two looks at the clock and at signals (Ctrl-C, SIGTERM).
STEP_PAGES = 256
# How long one step waits for SQLite's lock before the clock and the signals are looked at again.
LOCK_LOOK_S = 0.05



@dataclass(frozen=True)
class RestoreReport:
    kept_as: Path | None  # None: there was no database to keep
    rows: dict[str, int]


class RestoredThenStopped(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that came as the restore committed: held back until the restore was done, so
    the store *is* restored (``report``); ``stop`` is what the signal's handler raised once let through."""

    def __init__(self, report: RestoreReport, stop: BaseException) -> None:
        super().__init__(f"restored, then stopped ({type(stop).__name__})")
        self.report, self.stop = report, stop


def live_lease_count(db_path: Path, deadline: float, busy: Callable[[], BaseException]) -> int:
    """The live leases in the store at ``db_path``. A store locked by another connection is waited for
    until ``deadline``, then ``busy()`` is raised; any other failure to read it (a damaged or emptied
    store) raises :class:`sqlite3.Error`."""
    while True:
        try:
            with closing(connect(db_path, int(LOCK_LOOK_S * 1000))) as connection:
                return int(connection.execute(
                    "SELECT COUNT(*) FROM leases WHERE lease_expires_at > ?", (system_clock(),)
                ).fetchone()[0])
        except sqlite3.Error as error:
            if not is_busy(error):
                raise
            if time.monotonic() >= deadline:
                raise busy() from None
        time.sleep(LOCK_LOOK_S)  # Ctrl-C and SIGTERM are let in between tries


def restore(db_path: Path, backup_path: Path, force: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> RestoreReport:
    """Replace the live database's content with a verified backup; keep the current one aside.

    A live database too damaged for SQLite to copy is kept aside byte for byte
    and replaced as a file. A Ctrl-C or SIGTERM that comes as the restore
    commits raises :class:`RestoredThenStopped` once it is done.
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
    stops = _StopsHeldBack()
    try:
        with _private_copy(backup_path) as plain:
            rows = _verify_in_place(plain, backup_path)  # refuses a bad backup before touching anything
            restoring = _Restoring(db_path, plain, force, stops)
            lock = writer_lock_of(db_path, lambda waited: store_busy(db_path, lock, waited))
            try:
                deadline = time.monotonic() + busy_timeout_s
                with lock.turn(deadline):
                    restoring.run(lock, deadline)
            finally:
                lock.close()
    except BaseException:
        stops.release()  # a stop held back is raised now, what stopped the restore as its context
        raise
    report = RestoreReport(restoring.kept, rows)
    stop = restoring.stopped_once_restored
    try:
        stops.release()
    except BaseException as arrived:  # held back while the restore committed: it is done all the same
        stop = stop or arrived
    if stop is not None:
        raise RestoredThenStopped(report, stop) from stop
    return report


class _StopsHeldBack:
    """Ctrl-C, SIGTERM and SIGHUP noted, not acted on, from :meth:`hold` until :meth:`release`, which
    gives each one that came to the handler it had (which may raise, or end the process).

    The handlers are swapped rather than the signals blocked: a signal sent to the process reaches any
    thread not blocking it (the progress line's, say), and Python runs its handler in the main thread."""

    def __init__(self) -> None:
        self._handlers: dict[int, Any] = {}
        self._arrived: list[int] = []

    def hold(self) -> None:
        if self._handlers or threading.current_thread() is not threading.main_thread():
            return  # off the main thread no signal handler interrupts the restore
        for signum in HELD_STOPS:
            handler = signal.getsignal(signum)
            if handler is not None:  # None: not set from Python, so not Python's to put back
                self._handlers[signum] = handler  # noted first: a stop between the two lines leaves no trace
                signal.signal(signum, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self._arrived.append(signum)

    def release(self) -> None:
        try:
            self._put_back()
        finally:
            self._put_back()  # the rest, when a handler put back first raised its signal meanwhile
        arrived, self._arrived = list(dict.fromkeys(self._arrived)), []
        for signum in arrived:
            signal.raise_signal(signum)  # its own handler runs now: it may raise, or end the process

    def _put_back(self) -> None:
        for signum in list(self._handlers):
            signal.signal(signum, self._handlers[signum])
            del self._handlers[signum]


class _TooDamagedToCopy(StoreError):
    """The live database could not be copied aside through SQLite: it is kept byte for byte instead."""


class _Restoring:
    """One restore, inside the writers' turn: :meth:`run` copies the backup into the live database and,
    once SQLite's lock on it is held, checks its leases and keeps it aside (:meth:`check_and_keep`)."""

    def __init__(self, db_path: Path, plain: Path, force: bool, stops: _StopsHeldBack) -> None:
        self.db_path, self.plain, self.force, self.stops = db_path, plain, force, stops
        self.kept: Path | None = None
        self.leases_counted = False
        self.committing = False  # the step that may change the live database has begun
        self.committed = False
        self.stopped_once_restored: BaseException | None = None

    def run(self, lock: WriterLock, deadline: float) -> None:
        started = time.monotonic()

        def busy() -> BaseException:
            return store_busy(self.db_path, lock, time.monotonic() - started)

        try:
            self._restore(deadline, busy)
        except BaseException as error:
            # Rolled back: a copy stopped before its last step, or that step failing (SQLite rolls it back).
            if not self.committing or (not self.committed and isinstance(error, StoreError)):
                self._remove_kept()
                raise
            if not self.committed or not isinstance(error, KeyboardInterrupt) and not hasattr(error, "signum"):
                raise  # the live database may have changed: the copy kept of it stays
            self.stopped_once_restored = error  # a stop that came after the commit: restored all the same

    def _restore(self, deadline: float, busy: Callable[[], BaseException]) -> None:
        existed = self.db_path.is_file()
        checked_under_lock = existed and _in_wal_mode(self.db_path)
        if existed and not checked_under_lock:
            # Without a write-ahead log the copy's lock shuts every reader out, this lease count too: it
            # is made under the writers' turn alone.
            self.check_and_keep(deadline, busy)
        try:
            _copy_database(
                self.plain, self.db_path, deadline, busy,
                (lambda: self.check_and_keep(deadline, busy)) if checked_under_lock else None,
                before_last_step=self._begin_commit, once_committed=self._note_committed,
            )
            return
        except StoreBusyError:
            raise  # waited for past the busy timeout: nothing was changed
        except _TooDamagedToCopy:
            pass  # rolled back, its leases counted: kept byte for byte below, now that the copy is closed
        except StoreError:
            if not existed or self.leases_counted:
                raise  # rolled back (a refusal, or a failure once SQLite's lock was held): nothing was changed
            self.leases_counted = True  # failed before SQLite's lock was held: a store too damaged to open?
            if self._count_leases(deadline, busy):
                raise  # a readable store: the copy failed for another reason
        # Too damaged for SQLite: kept byte for byte with no connection of this process open on it
        # (closing a descriptor of the file would drop their locks), and replaced as a file.
        self.kept = self._kept_name()
        try:
            for suffix in ("", "-wal"):  # with its write-ahead log, as SQLite would open it
                if Path(f"{self.db_path}{suffix}").is_file():
                    shutil.copyfile(f"{self.db_path}{suffix}", f"{self.kept}{suffix}")
        except BaseException:
            self._remove_kept()
            raise
        self._begin_commit()
        _replace_file(self.plain, self.db_path)
        self._note_committed()

    def check_and_keep(self, deadline: float, busy: Callable[[], BaseException]) -> None:
        """Count the live leases (refused without ``force``) and keep the live database aside, through
        SQLite; called with SQLite's write lock on it held, so nothing can be committed in between."""
        self.leases_counted = True
        self._count_leases(deadline, busy)
        self.kept = self._kept_name()  # named first: whatever stops the copy removes what it wrote
        try:  # never by its bytes: a connection of this process has it open (see _restore)
            _copy_database(self.db_path, self.kept, deadline, busy, None)
        except StoreBusyError:
            raise
        except StoreError as error:
            self._remove_kept()
            raise _TooDamagedToCopy(str(error)) from None

    def _count_leases(self, deadline: float, busy: Callable[[], BaseException]) -> bool:
        """Whether the live leases could be read; a store with some is refused without ``force``."""
        try:
            live = live_lease_count(self.db_path, deadline, busy)
        except sqlite3.Error:
            return False  # damaged or emptied: no lease in it to protect
        if live and not self.force:
            raise StoreError(f"{live} live lease(s) in {self.db_path}: agents are working. Wait, or use --force")
        return True

    def _kept_name(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        kept = self.db_path.with_name(f"{self.db_path.name}.before-restore-{stamp}")
        for number in itertools.count(2):  # never over an earlier restore's kept copy
            if not kept.exists():
                break
            kept = self.db_path.with_name(f"{self.db_path.name}.before-restore-{stamp}-{number}")
        return kept

    def _begin_commit(self) -> None:
        self.stops.hold()  # from here a stop waits until the restore is done: see restore()
        self.committing = True

    def _note_committed(self) -> None:
        self.committed = True

    def _remove_kept(self) -> None:
        if self.kept is not None:  # the kept copy of an unchanged store goes
            _remove_database(self.kept)
            self.kept = None


def _in_wal_mode(db_path: Path) -> bool:
    """Whether the database at ``db_path`` has a write-ahead log, so it can be read while written; a
    database SQLite cannot read is taken for one: the copy into it finds out what it is."""
    try:
        with closing(connect_read_only(db_path)) as connection:
            return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
    except sqlite3.Error:
        return True


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


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
    once_locked: Callable[[], None] | None, *, before_last_step: Callable[[], None] | None = None,
    once_committed: Callable[[], None] | None = None,
) -> None:
    """Copy the database at ``source_path`` into ``target_path`` in one transaction of the target;
    ``busy()`` is raised once ``deadline`` passes with the target still locked by another connection.
    ``once_locked`` runs after the first page, with the target's write lock held and nothing of the copy
    committed: what it raises stops the copy and rolls it back. ``before_last_step`` runs before the
    step that copies the last page and commits, ``once_committed`` after it.

    CPython's ``backup`` would retry a busy target for ever, and run no signal handler until done: each
    step here waits at most :data:`LOCK_LOOK_S`, and the progress callback between steps is where the
    deadline is looked at and Ctrl-C or SIGTERM is raised.
    """
    waiting_for_lock = once_locked is not None
    # A page a step when once_locked must run after the first, with the target's lock held and nothing
    # committed (a store is many pages: one per table and index at least); the lock must stay held by
    # the same backup, so the rest goes a page a step too.
    pages = 1 if once_locked is not None else STEP_PAGES

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal waiting_for_lock
        if status == SQLITE_DONE:
            if once_committed is not None:
                once_committed()
        elif status in (SQLITE_BUSY, SQLITE_LOCKED):
            if time.monotonic() >= deadline:
                raise busy() if busy is not None else StoreError(f"{target_path} stayed busy")
        elif status == SQLITE_OK:
            if waiting_for_lock:
                waiting_for_lock = False
                assert once_locked is not None
                once_locked()
            if remaining <= pages and before_last_step is not None:
                before_last_step()

    opened: list[sqlite3.Connection] = []
    try:
        opened.append(source := connect_read_only(source_path))
        opened.append(target := connect(target_path, int(LOCK_LOOK_S * 1000)))
        source.backup(target, pages=pages, progress=progress, sleep=LOCK_LOOK_S)
    except sqlite3.Error as error:
        if is_busy(error) and busy is not None:
            raise busy() from None
        raise StoreError(f"copying {source_path} to {target_path} failed: {error}") from None
    finally:
        for connection in opened:
            connection.close()
