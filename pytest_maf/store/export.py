"""`maf db export`: the store's rows as JSON or CSV, for a spreadsheet or a script.

The database is opened read-only and read in one transaction: one consistent
snapshot while agents keep writing, nothing migrated, nothing written (an
older store is exported as it is). A database with no write-ahead log beside
it (a backup, a store nobody has open) is read as it lies, leaving nothing
beside it: a ``-wal`` left there would make a backup look in use, no longer
listed, pruned or restored by ``maf db backups`` and ``restore latest``. Rows are read through
sqlite-utils, in rowid order, with every value exactly as stored: times are
integer epoch milliseconds, and a ``*_json`` column is the JSON text it holds
(a string in the JSON export too, so a row whose text is not valid JSON is
exported like any other; decode it with ``json.loads`` or jq's ``fromjson``).

* JSON: one object; each table's name maps to the list of its rows, each row
  an object from column name to value, one row per line.
* CSV: one table; a header of its column names, then its rows. NULL is an
  empty cell.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TextIO

from pytest_maf.errors import StoreError, UsageError
from pytest_maf.files import replaced_output
from pytest_maf.store import schema
from pytest_maf.store.sqlite import connect_reading_only, unusable
from pytest_maf.store.verify import current_tables, introspect, user_tables

if TYPE_CHECKING:
    from sqlite_utils import Database

FORMATS = ("json", "csv")


def chosen_tables(names: Sequence[str], output_format: str) -> list[str]:
    """The tables named, in the order given ([]: every table the store has); refuses an unknown one.

    Checked before the database is opened, so a refusal touches nothing.
    """
    known = current_tables()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"no table {', '.join(map(repr, unknown))} in a pytest-maf store; its tables are: {', '.join(known)}")
    chosen = list(dict.fromkeys(names))
    if output_format == "csv" and len(chosen) != 1:
        raise UsageError(f"a CSV export holds one table: give exactly one --table, one of: {', '.join(known)}")
    return chosen


@contextmanager
def read_only(db_path: Path) -> Iterator[Database]:
    """The store at ``db_path``, opened read-only, in one read transaction; refuses one that is not a store."""
    if not db_path.exists():
        raise StoreError(f"no runtime database at {db_path}: run `maf setup` first")
    if not db_path.is_file():
        raise StoreError(f"the runtime database {db_path} is not a file")
    try:
        connection = connect_reading_only(db_path, immutable=not os.path.exists(f"{db_path}-wal"))
    except sqlite3.Error as error:
        raise unusable(db_path, error) from None
    try:
        db = introspect(connection)
        db.execute("BEGIN")  # one snapshot for every table
        application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        problem = schema.not_ours(application_id, version, user_tables(connection))
        if problem:
            raise StoreError(f"the runtime database {db_path} {problem}")
        if version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"the runtime database {db_path} has schema version {version}, newer than"
                f" this pytest-maf knows ({schema.SCHEMA_VERSION}): upgrade pytest-maf"
            )
        yield db
    except sqlite3.Error as error:
        raise unusable(db_path, error) from None
    finally:
        connection.close()  # the read transaction ends with it; nothing was written


def _present(db: Database, tables: Sequence[str]) -> list[str]:
    """``tables`` (every current one the store has when empty), each checked to be in this store."""
    present = set(db.table_names())
    if not tables:
        return [table for table in current_tables() if table in present]
    missing = [table for table in tables if table not in present]
    if missing:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        raise StoreError(
            f"table {', '.join(missing)} is not in this store yet (schema version {version}): `maf setup` brings it"
            f" to the current schema ({schema.SCHEMA_VERSION}), or export the tables it has"
        )
    return list(tables)


def _rows(db: Database, table: str) -> Iterator[dict[str, Any]]:
    return db.table(table).rows_where(order_by="rowid")


def _json_value(value: object) -> object:
    if isinstance(value, bytes):  # never stored by pytest-maf, but SQLite would keep one
        return {"$base64": True, "encoded": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot export a {type(value).__name__} as JSON")


def write_json(db: Database, tables: Sequence[str], handle: TextIO) -> dict[str, int]:
    """Each table's rows as one JSON object (streamed: one row per line); the row count of each table."""
    counts = {}
    handle.write("{")
    for number, table in enumerate(tables):
        handle.write(f"{',' if number else ''}\n{json.dumps(table)}: [")
        count = 0
        for count, row in enumerate(_rows(db, table), start=1):
            handle.write(f"{',' if count > 1 else ''}\n  {json.dumps(row, ensure_ascii=False, default=_json_value)}")
        handle.write("\n]" if count else "]")
        counts[table] = count
    handle.write("\n}\n")
    return counts


def write_csv(db: Database, table: str, handle: TextIO) -> dict[str, int]:
    """One table as CSV: a header of its column names, then its rows; its row count."""
    columns = [column.name for column in db.table(table).columns]
    writer = csv.writer(handle)
    writer.writerow(columns)
    count = 0
    for count, row in enumerate(_rows(db, table), start=1):
        writer.writerow(
            base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
            for value in (row[name] for name in columns)
        )
    return {table: count}


def export(db_path: Path, output_format: str, tables: Sequence[str], handle: TextIO) -> dict[str, int]:
    """Write the rows of ``tables`` (every table when empty) of the store at ``db_path`` to ``handle``;
    the rows per table."""
    with read_only(db_path) as db:
        present = _present(db, tables)  # before a line is written
        if output_format == "csv":
            (table,) = present
            return write_csv(db, table, handle)
        return write_json(db, present, handle)


def export_to_file(db_path: Path, output_format: str, tables: Sequence[str], output: Path) -> dict[str, int]:
    """:func:`export` into ``output``, which appears whole or not at all (temporary file, fsync, rename);
    a device or a pipe (``/dev/stdout``, a FIFO) is written to, and a symbolic link's file replaced."""
    if output.exists() and not output.is_file():  # not a directory: the caller refused that
        with open(output, "w", encoding="utf-8", newline="") as handle:
            return export(db_path, output_format, tables, handle)
    output = replaced_output(output, "the export")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staged = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    except OSError as error:
        raise UsageError(f"cannot write the export beside {output}: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            counts = export(db_path, output_format, tables, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, output)
    finally:
        Path(staged).unlink(missing_ok=True)
    return counts
