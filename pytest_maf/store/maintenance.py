"""Backup, verification, restore, recovery, optimisation and clean-up of the SQLite store.

Backups use SQLite's online backup API, so agents keep writing while one is
taken and the copy is one consistent snapshot. A restore copies a verified
backup into the live database through the same API (under a write lock), so
processes holding it open see the restored content, never a half-written file.
"""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pytest_maf.clock import system_clock
from pytest_maf.errors import MafError, StoreError
from pytest_maf.store import schema
from pytest_maf.store.sqlite import connect
from pytest_maf.store.verify import apply_current_schema, current_tables, schema_problems, user_tables

GZIP_MAGIC = b"\x1f\x8b"
# Maintenance waits for agents' short transactions instead of failing fast.
MAINTENANCE_BUSY_TIMEOUT_MS = 10_000


class VerificationError(MafError):
    """A backup or database that fails its integrity or schema checks."""

    exit_code = 1

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path} is not a sound pytest-maf database: {'; '.join(problems)}")


def _count_rows(connection: sqlite3.Connection) -> dict[str, int]:
    return {
        table: connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        for table in user_tables(connection)
    }


@contextmanager
def _plain_copy(path: Path) -> Iterator[Path]:
    """The database at ``path``, decompressed to a temporary file when gzipped."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == GZIP_MAGIC
    if not gzipped:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="maf-backup-") as directory:
        plain = Path(directory) / "backup.db"
        try:
            with gzip.open(path, "rb") as source, open(plain, "wb") as target:
                shutil.copyfileobj(source, target)
        except (OSError, EOFError) as error:
            raise VerificationError(path, [f"cannot decompress: {error}"]) from None
        yield plain


def verify_database(path: Path) -> dict[str, int]:
    """Integrity and schema checks of a database or (gzipped) backup; its row counts."""
    if not path.is_file():
        raise StoreError(f"no such file: {path}")
    with _plain_copy(path) as plain:
        problems = schema_problems(plain)
        if problems:
            raise VerificationError(path, problems)
        connection = sqlite3.connect(f"file:{plain}?mode=ro", uri=True)
        try:
            return _count_rows(connection)
        finally:
            connection.close()


@dataclass(frozen=True)
class BackupReport:
    path: Path
    bytes: int
    rows: dict[str, int]
    seconds: float


def backup(db_path: Path, output: Path, compress: bool = False) -> BackupReport:
    """Take a consistent copy of the live database while others keep writing."""
    started = time.perf_counter()
    if not db_path.is_file():
        raise StoreError(f"no runtime database at {db_path} to back up")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".maf-backup-", dir=output.parent) as directory:
        snapshot = Path(directory) / "snapshot.db"
        source = connect(db_path, MAINTENANCE_BUSY_TIMEOUT_MS)
        target = sqlite3.connect(snapshot)
        try:
            source.backup(target)  # all pages in one step: one read transaction, one snapshot
        except sqlite3.Error as error:
            raise StoreError(f"backup of {db_path} failed: {error}") from None
        finally:
            target.close()
            source.close()
        rows = verify_database(snapshot)
        staged = Path(directory) / "staged"
        if compress:
            with open(snapshot, "rb") as plain, gzip.open(staged, "wb") as packed:
                shutil.copyfileobj(plain, packed)
        else:
            snapshot.rename(staged)
        staged.replace(output)  # the file appears whole, or not at all
    return BackupReport(output, output.stat().st_size, rows, time.perf_counter() - started)


def live_lease_count(db_path: Path) -> int:
    connection = connect(db_path)
    try:
        return int(connection.execute(
            "SELECT COUNT(*) FROM leases WHERE lease_expires_at > ?", (system_clock(),)
        ).fetchone()[0])
    finally:
        connection.close()


@dataclass(frozen=True)
class RestoreReport:
    kept_as: Path
    rows: dict[str, int]


def restore(db_path: Path, backup_path: Path, force: bool = False) -> RestoreReport:
    """Replace the live database's content with a verified backup; keep the current one aside."""
    rows = verify_database(backup_path)  # refuses a bad backup before touching anything
    if db_path.is_file() and not force:
        try:
            live = live_lease_count(db_path)
        except sqlite3.Error:
            live = 0  # an unreadable live database holds no lease worth protecting
        if live:
            raise StoreError(
                f"{live} live lease(s) in {db_path}: agents are working. Wait, or use --force"
            )
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
    with _plain_copy(backup_path) as plain:
        if db_path.is_file():
            _copy_database(db_path, kept)
        _copy_database(plain, db_path)
    return RestoreReport(kept, rows)


def _copy_database(source_path: Path, target_path: Path) -> None:
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    target = connect(target_path, MAINTENANCE_BUSY_TIMEOUT_MS)
    try:
        source.backup(target)
    except sqlite3.Error as error:
        raise StoreError(f"copying {source_path} to {target_path} failed: {error}") from None
    finally:
        source.close()
        target.close()


@dataclass(frozen=True)
class RecoverReport:
    output: Path
    method: str  # "sqlite3 .recover" or "row-by-row"
    recovered: dict[str, int]
    readable_before: dict[str, int | None]  # None: could not be counted in the damaged file
    lost_and_found: int = 0
    problems: list[str] = field(default_factory=list)  # defects left in the rebuilt database
    notes: list[str] = field(default_factory=list)

    def lost(self) -> dict[str, int | None]:
        return {
            table: (None if before is None else max(0, before - self.recovered.get(table, 0)))
            for table, before in self.readable_before.items()
        }


def _countable(path: Path) -> dict[str, int | None]:
    counts: dict[str, int | None] = {}
    tables = current_tables()
    try:
        damaged = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
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
    """Rebuild a damaged database into ``output`` from whatever can still be read."""
    if output.exists():
        raise StoreError(f"{output} exists; choose another --output")
    before = _countable(db_path)
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
        connection.execute("PRAGMA journal_mode = WAL")
        # Rows whose task (or escalation) was lost cannot be used: drop them, count them as lost.
        orphans = connection.execute("PRAGMA foreign_key_check").fetchall()
        for table, rowid, *_ in orphans:
            connection.execute(f'DELETE FROM "{table}" WHERE rowid = ?', (rowid,))
        if orphans:
            notes.append(f"removed {len(orphans)} row(s) whose task or escalation was lost")
        counts = _count_rows(connection)
    finally:
        connection.close()
    lost_and_found = counts.pop("lost_and_found", 0)
    recovered = {table: counts.get(table, 0) for table in before}
    return RecoverReport(output, method, recovered, before, lost_and_found, schema_problems(output), notes)


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


def _salvage_rows(db_path: Path, output: Path) -> None:
    """Copy every row that reads back, table by table, stepping over damaged ranges."""
    target = apply_current_schema(sqlite3.connect(output))
    target.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
    try:
        source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error:
        target.close()
        return
    for table in user_tables(target):
        last, step, failures = -(2**63), 1, 0
        while failures < 64:
            try:
                cursor = source.execute(f'SELECT rowid, * FROM "{table}" WHERE rowid > ? ORDER BY rowid', (last,))
                for row in cursor:
                    last = row[0]
                    placeholders = ", ".join("?" * (len(row) - 1))
                    target.execute(f'INSERT OR IGNORE INTO "{table}" VALUES ({placeholders})', row[1:])
                break
            except sqlite3.Error:
                failures += 1
                last, step = (last if last > -(2**63) else 0) + step, step * 2
    target.commit()
    source.close()
    target.close()


def optimize(db_path: Path, vacuum: bool = False) -> list[str]:
    connection = connect(db_path, MAINTENANCE_BUSY_TIMEOUT_MS)
    done = []
    try:
        connection.execute("ANALYZE")
        done.append("ANALYZE")
        connection.execute("PRAGMA optimize")
        done.append("PRAGMA optimize")
        if vacuum:
            connection.execute("VACUUM")
            done.append("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        done.append("wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as error:
        raise StoreError(f"optimising {db_path} stopped after {', '.join(done) or 'nothing'}: {error}") from None
    finally:
        connection.close()
    return done


def cleanup(db_path: Path, older_than_ms: int, apply: bool) -> dict[str, int]:
    """Count (and with ``apply`` delete) events and evidence of DONE/DEAD tasks older than the cut-off."""
    finished = "SELECT id FROM tasks WHERE state IN ('DONE', 'DEAD') AND updated_at < ?"
    connection = connect(db_path, MAINTENANCE_BUSY_TIMEOUT_MS)
    try:
        connection.execute("BEGIN IMMEDIATE")
        counts = {
            "tasks": connection.execute(f"SELECT COUNT(*) FROM ({finished})", (older_than_ms,)).fetchone()[0],
            "events": connection.execute(
                f"SELECT COUNT(*) FROM events WHERE task_id IN ({finished})", (older_than_ms,)
            ).fetchone()[0],
            "evidence": connection.execute(
                f"SELECT COUNT(*) FROM evidence WHERE task_id IN ({finished})", (older_than_ms,)
            ).fetchone()[0],
        }
        if apply:
            connection.execute(f"DELETE FROM events WHERE task_id IN ({finished})", (older_than_ms,))
            connection.execute(f"DELETE FROM evidence WHERE task_id IN ({finished})", (older_than_ms,))
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        raise StoreError(f"cleanup of {db_path} failed: {error}") from None
    finally:
        connection.close()
    return counts
