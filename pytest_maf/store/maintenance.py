"""Backup, verification, restore, recovery and clean-up of the SQLite store.

Backups use SQLite's online backup API, so agents keep writing while one is
taken and the copy is one consistent snapshot. A restore copies a verified
backup into the live database through the same API, holding the writers' lock
and SQLite's from the lease check to the last page (:mod:`pytest_maf.store.restore`),
so processes holding it open see the restored content, never a half-written file.

No output is ever the store itself (its database, ``-wal``, ``-shm``,
``-journal`` or lock file), and a backup is only ever read through a private
copy, so checking one leaves nothing beside it. The history the load test's
audit replays is read here too, one task at a time (:func:`read_history`).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import time
import zlib
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

from pytest_maf.errors import MafError, StoreError, UsageError
from pytest_maf.files import (
    SQLITE_APPLICATION_ID_AT, SQLITE_HEADER, SQLITE_USER_VERSION_AT, checked_output, regular_file_head,
    replaced_output, scratch_directory, store_files,
)
from pytest_maf.records import Event, ReservationEvent
from pytest_maf.store import schema
from pytest_maf.store.sqlite import _loads, connect, connect_read_only, is_damage, unwritable
from pytest_maf.store.verify import apply_current_schema, current_tables, schema_problems, user_tables

if TYPE_CHECKING:
    from sqlite_utils import Database

    from pytest_maf.store.restore import RestoreReport

GZIP_MAGIC = b"\x1f\x8b"
SQLITE_HEADER_SIZE = 100  # https://sqlite.org/fileformat2.html#the_database_header
COPY_CHUNK = 1 << 20
# Maintenance waits for agents' short transactions instead of failing fast.
MAINTENANCE_BUSY_TIMEOUT_MS = 10_000
RECOVER_HINT = "run `maf db recover` to rebuild it into a new file, or `maf db restore BACKUP`"


class VerificationError(MafError):
    """A backup or database that fails its integrity or schema checks."""

    exit_code = 1

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path} is not a sound pytest-maf database: {'; '.join(problems)}")


def _require_store(db_path: Path) -> None:
    """Refuse a missing, foreign, emptied, damaged or newer store; bring an older one to the current schema."""
    from pytest_maf.store import open_store

    open_store(db_path).close()


def _is_store_file(path: Path, db_path: Path) -> bool:
    """Whether ``path`` is the database at ``db_path`` or one of the files beside it."""
    return path.is_file() and any(
        guarded.exists() and os.path.samefile(path, guarded) for guarded in store_files(db_path)
    )


def _count_rows(connection: sqlite3.Connection) -> dict[str, int]:
    return {
        table: connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        for table in user_tables(connection)
    }


@contextmanager
def _private_copy(path: Path) -> Iterator[Path]:
    """A copy of the database or (gzipped) backup at ``path`` in a temporary folder.

    Opening a WAL database, even read-only, makes ``-wal`` and ``-shm`` files
    beside it; opening the copy leaves the original and its folder as they were.
    """
    if path.is_dir():
        raise StoreError(f"{path} is a directory; give a backup file")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a device never ends, a pipe may never start: not copied
            raise StoreError(f"{path} is not a regular file (a device, a pipe or a socket): it is not a backup")
        with open(path, "rb") as handle:
            head = handle.read(2)
    except FileNotFoundError:
        raise StoreError(f"no such file: {path}") from None
    except OSError as error:
        raise StoreError(f"cannot read {path}: {error.strerror}") from None
    if not head:  # a bad backup like any other (exit 1), not bad input
        raise VerificationError(path, ["it is empty (0 bytes): it is not a backup"])
    with scratch_directory(prefix="maf-backup-") as directory:
        plain = directory / "backup.db"
        try:
            packed = head == GZIP_MAGIC
            with (gzip.open(path, "rb") if packed else open(path, "rb")) as source, open(plain, "wb") as target:
                held = None if packed else os.fstat(source.fileno()).st_size
                _unpack_database(source, target, path, shutil.disk_usage(directory).free, held)
        except (OSError, EOFError, zlib.error) as error:
            raise VerificationError(path, [f"cannot decompress or copy it: {error}"]) from None
        yield plain


def _size_in_header(header: bytes) -> int | None:
    """The size a SQLite database header gives (page size x page count), or None where it gives
    none: a header cut short, or one a SQLite older than 3.7.0 left stale
    (https://sqlite.org/fileformat2.html#in_header_database_size)."""
    if len(header) < SQLITE_HEADER_SIZE:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] != header[92:96] or pages == 0:
        return None
    return (65536 if page_size == 1 else page_size) * pages


def _unpack_database(source: io.BufferedIOBase, target: BinaryIO, shown: Path, room: int, held: int | None) -> None:
    """Copy the database ``source`` holds (a file of ``held`` bytes, or gzipped: None), no further than
    its header's size: SQLite reads no more.

    What is no database stops at its first bytes, which are enough for the checks to say so; a file
    that unpacks without end (a gzip bomb) stops where its database ends, and a header that gives no
    size, or more than the file holds, is refused. A database larger than the room left where it is
    copied is refused before a byte more is written.
    """
    header = source.read(SQLITE_HEADER_SIZE)
    target.write(header)
    if not header.startswith(SQLITE_HEADER):
        return
    claimed = _size_in_header(header)
    if claimed is None:
        raise VerificationError(shown, ["its SQLite header gives no size (it is damaged, or a SQLite older than 3.7.0 wrote it)"])
    if held is not None and claimed > held:
        raise VerificationError(shown, [f"its header gives {claimed:,} bytes and the file holds {held:,}: it is cut short"])
    if claimed > room:
        raise StoreError(
            f"{shown} holds a database of {claimed:,} bytes and the temporary folder ({tempfile.gettempdir()})"
            f" has {room:,} free: set TMPDIR to a folder with room for the copy it is checked in"
        )
    left = claimed - len(header)
    while left > 0:
        chunk = source.read(min(COPY_CHUNK, left))
        if not chunk:
            return
        target.write(chunk)
        left -= len(chunk)


def _verify_in_place(plain: Path, shown: Path) -> dict[str, int]:
    """Bring a private copy of a pytest-maf database to the current schema, check it; its row counts."""
    from pytest_maf.store import open_store

    try:
        connection = connect_read_only(plain)
        try:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise VerificationError(shown, [f"cannot read it: {error}"]) from None
    if 0 < version < schema.SCHEMA_VERSION:  # an older store's backup is brought up, as opening it would
        try:
            open_store(plain).close()
        except MafError as error:
            raise VerificationError(shown, [str(error).replace(str(plain), str(shown))]) from None
    problems = schema_problems(plain)
    if problems:
        raise VerificationError(shown, [problem.replace(str(plain), str(shown)) for problem in problems])
    connection = connect_read_only(plain)
    try:
        return _count_rows(connection)
    finally:
        connection.close()


def verify_database(path: Path) -> dict[str, int]:
    """Integrity and schema checks of a database or (gzipped) backup; its row counts.

    A backup of an older pytest-maf's store is checked as it would be restored:
    brought to the current schema (in a private copy; the file is never changed).
    """
    with _private_copy(path) as plain:
        return _verify_in_place(plain, path)


@dataclass(frozen=True)
class BackupReport:
    path: Path
    bytes: int
    rows: dict[str, int]
    seconds: float


def backup(db_path: Path, output: Path, compress: bool = False) -> BackupReport:
    """Take a consistent copy of the live database while others keep writing."""
    started = time.perf_counter()
    output = replaced_output(checked_output(str(output), store_files(db_path), "the backup"), "the backup")
    _require_store(db_path)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the folder {output.parent} for the backup: {error.strerror}") from None
    with scratch_directory(prefix=".maf-backup-", dir=output.parent, shown=output) as directory:
        snapshot = directory / "snapshot.db"
        source = connect(db_path, MAINTENANCE_BUSY_TIMEOUT_MS)
        target = sqlite3.connect(snapshot)
        try:
            source.backup(target)  # all pages in one step: one read transaction, one snapshot
        except sqlite3.Error as error:
            raise StoreError(f"backup of {db_path} failed: {error}; if it is damaged, {RECOVER_HINT}") from None
        finally:
            target.close()
            source.close()
        try:
            rows = _verify_in_place(snapshot, db_path)
        except VerificationError as error:
            raise StoreError(
                f"the runtime database {db_path} is damaged ({'; '.join(error.problems)}); no backup was"
                f" written: {RECOVER_HINT}"
            ) from None
        staged = directory / "staged"
        if compress:
            with open(snapshot, "rb") as plain, gzip.open(staged, "wb") as packed:
                shutil.copyfileobj(plain, packed)
        else:
            snapshot.rename(staged)
        staged.replace(output)  # the file appears whole, or not at all
    return BackupReport(output, output.stat().st_size, rows, time.perf_counter() - started)


def restore(db_path: Path, backup_path: Path, force: bool = False, busy_timeout_s: float | None = None) -> RestoreReport:
    """Replace the live database's content with a verified backup, keeping the current one aside, as one
    critical section against the writers: see :mod:`pytest_maf.store.restore`."""
    from pytest_maf.store.restore import restore as restore_sqlite
    from pytest_maf.store.sqlite import DEFAULT_BUSY_TIMEOUT_S

    return restore_sqlite(db_path, backup_path, force, DEFAULT_BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s)


def _another_applications(db_path: Path, head: bytes) -> str | None:
    """Why the SQLite database at ``db_path`` (``head``: its first bytes) is another application's, or
    None: a store, one emptied or damaged past reading, or no SQLite database at all."""
    if not head.startswith(SQLITE_HEADER):
        return None
    version, application_id = (
        int.from_bytes(head[at:at + 4], "big") for at in (SQLITE_USER_VERSION_AT, SQLITE_APPLICATION_ID_AT)
    )
    tables: list[str] = []
    if application_id == 0:  # other applications' databases, and stores made before stores were marked
        try:
            with closing(connect_read_only(db_path)) as connection:
                tables = user_tables(connection)
        except sqlite3.Error as error:
            if is_damage(error):
                return None  # unreadable: a damaged store
            raise UsageError(  # locked by the program that has it open, say: whose it is cannot be told
                f"{db_path} could not be read to tell whose database it is ({error}); nothing was written:"
                " if another program has it open, let it finish first"
            ) from None
    problem = schema.not_ours(application_id, version, tables)
    return problem if problem and (application_id or tables) else None  # an emptied store is ours


def _refuse_another_applications(db_path: Path, force: bool) -> None:
    """Another application's database at ``db_path`` is never restored over, nor (unless ``force``) a
    file that is no SQLite database at all: it may be a store damaged that far, or a file named by
    mistake. A store emptied, or damaged past reading, is restored over (that is what a restore is for)."""
    head = regular_file_head(db_path, SQLITE_HEADER_SIZE)
    problem = _another_applications(db_path, head)
    if problem:
        raise UsageError(f"{db_path} {problem}; nothing was restored")
    if head.strip(b"\0") and not head.startswith(SQLITE_HEADER) and not force:
        raise UsageError(
            f"{db_path} is no SQLite database, so no pytest-maf store; it is left untouched and nothing was"
            " restored: point --db or MAF_DB_PATH at the store, or, if this is the store damaged that far, add"
            " --force to replace it (it is kept aside byte for byte)"
        )


@dataclass(frozen=True)
class RecoverReport:
    output: Path
    method: str  # "sqlite3 .recover" or "row-by-row"
    recovered: dict[str, int]
    readable_before: dict[str, int | None]  # None: could not be counted in the damaged file
    lost_and_found: int = 0
    problems: list[str] = field(default_factory=list)  # defects left in the rebuilt database
    notes: list[str] = field(default_factory=list)
    written: bool = True  # False: nothing was salvaged, and no output file was left

    def lost(self) -> dict[str, int | None]:
        return {
            table: (None if before is None else max(0, before - self.recovered.get(table, 0)))
            for table, before in self.readable_before.items()
        }

    def salvaged_nothing(self) -> bool:
        """No row came back although the damaged file held some, or could not be counted."""
        return not any(self.recovered.values()) and any(before != 0 for before in self.readable_before.values())


def _countable(path: Path) -> dict[str, int | None]:
    counts: dict[str, int | None] = {}
    tables = current_tables()
    try:
        damaged = connect_read_only(path)
    except sqlite3.Error:
        return {table: None for table in tables}
    for table in tables:
        # A full count fails on a damaged page; the highest rowid (found along the
        # b-tree's right edge) is then the best estimate of how many rows there were.
        for query in (f'SELECT COUNT(*) FROM "{table}"', f'SELECT max(rowid) FROM "{table}"'):
            try:
                counts[table] = damaged.execute(query).fetchone()[0] or 0
                break
            except sqlite3.Error:
                counts[table] = None
    damaged.close()
    return counts


def recover(db_path: Path, output: Path, use_shell: bool = True) -> RecoverReport:
    """Rebuild a damaged database into ``output`` from whatever can still be read.

    The output appears whole or not at all; when nothing could be salvaged it
    is not left behind (restoring an empty store would wipe every task).
    """
    if db_path.is_dir() or not db_path.exists():
        raise StoreError(f"no runtime database at {db_path} to recover")
    problem = _another_applications(db_path, regular_file_head(db_path, SQLITE_HEADER_SIZE))
    if problem:
        raise UsageError(f"{db_path} {problem}; nothing was recovered")
    output = checked_output(str(output), store_files(db_path), "the recovered database")
    if output.exists():
        raise StoreError(f"{output} exists; choose another --output")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the folder {output.parent}: {error.strerror}") from None
    before = _countable(db_path)
    blocked = unwritable(db_path) if all(count is None for count in before.values()) else []
    if blocked:  # SQLite writes beside a database even to read it: a sound store in a read-only folder, say
        raise StoreError(
            f"cannot read the runtime database {db_path}: {' and '.join(blocked)} cannot be written by this user;"
            " give them write permission (chmod u+w), then recover it if it still needs recovering"
        )
    with scratch_directory(prefix=".maf-recover-", dir=output.parent) as directory:
        building = directory / "recovered.db"
        method, notes, lost_and_found, counts = _rebuild(db_path, building, use_shell)
        problems = schema_problems(building)  # in the scratch folder: its -wal and -shm go with it
        recovered = {table: counts.get(table, 0) for table in before}
        report = RecoverReport(output, method, recovered, before, lost_and_found, problems, notes)
        if report.salvaged_nothing():
            return dataclasses.replace(report, written=False)
        try:
            os.link(building, output)  # never over a file that appeared meanwhile
        except FileExistsError:
            raise StoreError(f"{output} exists; choose another --output") from None
        except OSError:
            shutil.copyfile(building, output)
    return report


def _rebuild(db_path: Path, output: Path, use_shell: bool) -> tuple[str, list[str], int, dict[str, int]]:
    """Salvage ``db_path`` into ``output``: the method, notes, rows of unknown table, and row counts."""
    from pytest_maf.store import open_store

    shell = shutil.which("sqlite3") if use_shell else None
    method, notes = "row-by-row", []
    if shell:
        shell_problem = _recover_with_shell(shell, db_path, output)
        if shell_problem is None:
            method = "sqlite3 .recover"
        else:
            notes.append(f"sqlite3 .recover did not work ({shell_problem}); salvaged row by row instead")
            output.unlink(missing_ok=True)
    if method == "row-by-row":
        _salvage_rows(db_path, output)
    connection = connect(output)
    try:
        if connection.execute("PRAGMA user_version").fetchone()[0] == 0:
            connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
        unmarked = connection.execute("PRAGMA application_id").fetchone()[0] == 0
        if unmarked and schema.UNMARKED_STORE_TABLES <= set(user_tables(connection)):
            connection.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")  # a store, rebuilt
        connection.execute("PRAGMA journal_mode = WAL")
        # Rows whose task (or escalation) was lost cannot be used: drop them, count them as lost.
        orphans = connection.execute("PRAGMA foreign_key_check").fetchall()
        for table, rowid, *_ in orphans:
            connection.execute(f'DELETE FROM "{table}" WHERE rowid = ?', (rowid,))
        if orphans:
            notes.append(f"removed {len(orphans)} row(s) whose task or escalation was lost")
    finally:
        connection.close()
    try:
        open_store(output).close()  # an older store's rows are brought to the current schema
    except MafError as error:
        notes.append(f"could not bring it to the current schema: {str(error).replace(str(output), 'the result')}")
    connection = connect(output)
    try:
        counts = _count_rows(connection)
    finally:
        connection.close()
    return method, notes, counts.pop("lost_and_found", 0), counts


def _recover_with_shell(shell: str, db_path: Path, output: Path) -> str | None:
    """Rebuild with the sqlite3 shell's .recover; a reason when it did not work, else None."""
    dump = subprocess.run([shell, str(db_path), ".recover"], capture_output=True, check=False)
    failure = dump.stderr.decode(errors="replace").strip()
    if dump.returncode != 0 or failure or b"CREATE TABLE" not in dump.stdout:
        return failure.splitlines()[0] if failure else "it produced no tables"
    load = subprocess.run([shell, str(output)], input=dump.stdout, capture_output=True, check=False)
    if load.returncode != 0 or not output.is_file():
        return load.stderr.decode(errors="replace").strip()[:200] or "loading its output failed"
    return None


# Below every rowid SQLite gives, so a salvage starts before a table's first row.
_BEFORE_ANY_ROWID = -(2**63)
_PAST_EVERY_ROWID = 2**63 - 1
_SALVAGE_ROWID = "maf_salvage_rowid"
_SALVAGE_MAX_FAILURES = 64


class _ReadableRows:
    """The rows of one table of a damaged database that still read back, in rowid order.

    Each pass of :meth:`rows` reads on from the last row read until the
    table's end (``finished``) or an unreadable page; the next pass starts
    past the damage, a step further each time it fails again.
    """

    def __init__(self, source: Database, table: str, columns: set[str]) -> None:
        self.source, self.table, self.columns = source, table, columns
        self.last, self.step, self.failures, self.finished = _BEFORE_ANY_ROWID, 1, 0, False

    def rows(self) -> Iterator[dict[str, Any]]:
        try:
            for row in self.source.table(self.table).rows_where(
                "rowid > ?", [self.last], order_by="rowid", select=f"rowid AS {_SALVAGE_ROWID}, *"
            ):
                self.last = row.pop(_SALVAGE_ROWID)
                yield {name: value for name, value in row.items() if name in self.columns}
            self.finished = True
        except sqlite3.Error:
            self.stepped_over()

    def stepped_over(self) -> None:
        self.failures += 1
        self.last, self.step = (self.last if self.last > _BEFORE_ANY_ROWID else 0) + self.step, self.step * 2
        if self.last >= _PAST_EVERY_ROWID:  # stepped past the largest rowid SQLite gives: nothing more to read
            self.finished = True


def _salvage_rows(db_path: Path, output: Path) -> None:
    """Copy every row that reads back, table by table, stepping over damaged ranges.

    Rows are copied by column name, so those of an older store land in the
    current schema, its newer columns taking their defaults.
    """
    from pytest_maf.store.verify import introspect

    target = introspect(apply_current_schema(sqlite3.connect(output)))
    try:
        target.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
        try:
            source = introspect(connect_read_only(db_path))
        except sqlite3.Error:
            return
        try:
            for table in user_tables(target.conn):
                columns = {column.name for column in target.table(table).columns}
                readable = _ReadableRows(source, table, columns)
                while not readable.finished and readable.failures < _SALVAGE_MAX_FAILURES:
                    try:
                        # OR IGNORE: a row a CHECK or key refuses is lost, not fatal to its neighbours.
                        target.table(table).insert_all(readable.rows(), ignore=True)
                    except sqlite3.Error:
                        readable.stepped_over()
        finally:
            source.close()
    finally:
        target.close()


def cleanup(db_path: Path, older_than_ms: int, apply: bool, busy_timeout_s: float | None = None) -> dict[str, int]:
    """Count (and with ``apply`` delete) the history past the cut-off: see :mod:`pytest_maf.store.cleanup`."""
    from pytest_maf.store.cleanup import cleanup_sqlite

    return cleanup_sqlite(db_path, older_than_ms, apply, busy_timeout_s)


class History:
    """The recorded history of a store, read from one snapshot, streamed rather than loaded whole."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def task_histories(self) -> Iterator[tuple[str, Iterator[Event]]]:
        """Each task's id and its events in order, one task at a time (consume each before the next)."""
        rows = self.connection.execute("SELECT id, task_id, ts, kind, data_json FROM events ORDER BY task_id, id")
        events = (
            Event(row[0], row[1], row[2], row[3], _loads(row[4], f"events.data_json of event {row[0]}"))
            for row in rows
        )
        return ((task_id, group) for task_id, group in itertools.groupby(events, key=lambda event: event.task_id))

    def reservation_events(self) -> Iterator[ReservationEvent]:
        rows = self.connection.execute("SELECT id, ts, kind, agent_id, data_json FROM reservation_events ORDER BY id")
        for row in rows:
            yield ReservationEvent(
                row[0], row[1], row[2], row[3], _loads(row[4], f"reservation_events.data_json of event {row[0]}")
            )

    def tasks_without_their_add(self) -> list[str]:
        """Tasks with no ``add`` event, and ``add`` events whose task is gone: lost or invented tasks."""
        rows = self.connection.execute(
            "SELECT id FROM tasks AS t WHERE NOT EXISTS"
            " (SELECT 1 FROM events AS e WHERE e.task_id = t.id AND e.kind = 'add')"
            " UNION SELECT task_id FROM events WHERE kind = 'add' AND task_id NOT IN (SELECT id FROM tasks)"
            " ORDER BY 1"
        )
        return [row[0] for row in rows]

    def integrity(self) -> list[str]:
        return [row[0] for row in self.connection.execute("PRAGMA integrity_check")]


@contextmanager
def read_history(db_path: Path) -> Iterator[History]:
    """The history of the store at ``db_path`` in one read transaction (for the load test's audit)."""
    _require_store(db_path)
    connection = connect(db_path, MAINTENANCE_BUSY_TIMEOUT_MS)
    try:
        connection.execute("BEGIN")
        yield History(connection)
    except sqlite3.Error as error:
        raise StoreError(f"reading the history of {db_path} failed: {error}") from None
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        connection.close()
