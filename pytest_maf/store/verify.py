"""Verify a runtime database against the schema this pytest-maf creates.

Used by the ``store.schema`` check in ``checks/``, by ``maf health-check`` and
by the backup, restore and recovery commands. The expected schema is a
reference database built in memory from the same migrations (the operations
guide's canonical DDL, then ours); both it and the database under test are
read through sqlite-utils' introspection (tables, columns, indexes, foreign
keys, triggers) and compared item by item, so each problem names the table
and the column, index or key that differs.

sqlite-utils serves schema work, export and salvage only, and is imported
when one of them runs. The hot paths (claims, reservations, the guard) stay
on Python's own ``sqlite3`` in :mod:`pytest_maf.store.sqlite`; the one helper
they share with this module, :func:`user_tables`, is plain ``sqlite3`` too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_maf.store import schema

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.db import Column, ForeignKey

# The table the sqlite3 shell's `.recover` puts rows in whose table it cannot
# tell; `maf db recover` counts them, and a recovered store may keep it.
LOST_AND_FOUND = "lost_and_found"


def user_tables(connection: sqlite3.Connection) -> list[str]:
    """The database's own tables (not SQLite's internal ones), by name."""
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    return [row[0] for row in rows]


def apply_current_schema(connection: sqlite3.Connection) -> sqlite3.Connection:
    """Create every table of the current schema on an empty database; return the connection."""
    for migration in schema.MIGRATIONS:
        connection.executescript(migration)
    return connection


def current_tables() -> list[str]:
    """The tables a current pytest-maf database has."""
    return user_tables(apply_current_schema(sqlite3.connect(":memory:")))


def introspect(connection: sqlite3.Connection) -> Database:
    """sqlite-utils' view of an open connection; it runs no plugin and sets no PRAGMA."""
    import sqlite_utils

    return sqlite_utils.Database(connection, recursive_triggers=False, execute_plugins=False)


def _spaced(sql: str | None) -> str:
    return " ".join((sql or "").split())


def _column(column: Column) -> str:
    """``TEXT NOT NULL DEFAULT 'x'``, and its place in the primary key."""
    return " ".join(
        part for part in (
            column.type or "(no type)",
            "NOT NULL" if column.notnull else "NULL",
            "" if column.default_value is None else f"DEFAULT {column.default_value}",
            "" if not column.is_pk else f"PRIMARY KEY (column {column.is_pk} of the key)",
        ) if part
    )


def _foreign_key(key: ForeignKey) -> tuple[str, str]:
    """The key's own columns, and ``REFERENCES tasks(id) ON DELETE CASCADE``."""
    # sqlite-utils 4 tells a key's actions and the columns of a compound key; with 3.x the
    # actions are still compared, as part of the CREATE TABLE statement (_table_problems).
    columns = key.column or ", ".join(getattr(key, "columns", ()))
    other_columns = key.other_column or ", ".join(getattr(key, "other_columns", ()))
    actions = "".join(
        f" ON {event} {action}"
        for event, action in (("DELETE", getattr(key, "on_delete", "")), ("UPDATE", getattr(key, "on_update", "")))
        if action and action != "NO ACTION"
    )
    return columns, f"REFERENCES {key.other_table}({other_columns}){actions}"


def _shape(db: Database, table: str) -> dict[str, dict[str, str]]:
    """Each column, index, foreign key and trigger of ``table``, by name, with a description to compare."""
    found = db.table(table)
    statements = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)))
    indexes = {}
    for index in found.indexes:
        if index.origin == "c":  # made by CREATE INDEX: its statement says all (columns, order, WHERE)
            indexes[index.name] = _spaced(statements.get(index.name))
        else:  # made for a PRIMARY KEY or UNIQUE constraint: named by SQLite, told by its columns
            constraint = "PRIMARY KEY" if index.origin == "pk" else "UNIQUE"
            indexes[f"for {constraint} ({', '.join(index.columns)})"] = "UNIQUE" if index.unique else "not unique"
    foreign_keys: dict[str, list[str]] = {}
    for columns, target in map(_foreign_key, found.foreign_keys):
        foreign_keys.setdefault(columns, []).append(target)
    return {
        "column": {column.name: _column(column) for column in found.columns},
        "index": indexes,
        "foreign key": {columns: "; ".join(sorted(targets)) for columns, targets in foreign_keys.items()},
        "trigger": {trigger.name: _spaced(trigger.sql) for trigger in found.triggers},
    }


def _table_problems(reference: Database, actual: Database, table: str) -> list[str]:
    expected, found = _shape(reference, table), _shape(actual, table)
    problems = []
    for aspect, items in expected.items():
        for name, description in items.items():
            if name not in found[aspect]:
                problems.append(f"table {table}: {aspect} {name} is missing ({description})")
            elif found[aspect][name] != description:
                problems.append(
                    f"table {table}: {aspect} {name} differs from the canonical schema:"
                    f" {found[aspect][name]}, expected {description}"
                )
        problems += [
            f"table {table}: {aspect} {name} is not in the canonical schema ({description})"
            for name, description in found[aspect].items() if name not in items
        ]
    order, expected_order = list(found["column"]), list(expected["column"])
    if not problems and order != expected_order:  # rows are copied by position: the order matters
        problems.append(
            f"table {table}: columns are in the order {', '.join(order)}; the canonical schema has"
            f" {', '.join(expected_order)}"
        )
    if not problems and _spaced(actual.table(table).schema) != _spaced(reference.table(table).schema):
        # What the items above do not show: a CHECK constraint, a conflict clause, a key's action.
        problems.append(f"table {table}: CHECK constraints or definition differ from the canonical schema")
    return problems


def _schema_problems(connection: sqlite3.Connection) -> list[str]:
    """How the tables of the open database differ from those the migrations create."""
    actual = introspect(connection)
    reference = introspect(apply_current_schema(sqlite3.connect(":memory:")))
    try:
        expected = [name for name in reference.table_names() if not name.startswith("sqlite_")]
        present = set(actual.table_names())
        problems = []
        for table in expected:
            problems += _table_problems(reference, actual, table) if table in present else [f"table {table} is missing"]
        problems += [
            f"table {table} is not part of the pytest-maf schema: drop it, or keep it in a database of its own"
            for table in sorted(present - set(expected))
            if not table.startswith("sqlite_") and table != LOST_AND_FOUND
        ]
        return problems
    finally:
        reference.close()


BUSY = "another session holds"  # the problem a busy store is: nothing to mend, only to wait for


def schema_problems(path: Path) -> list[str]:
    """Every way the database at ``path`` differs from the current schema; [] when sound.

    Besides the schema: its version, that foreign keys can be enforced,
    SQLite's ``integrity_check`` and rows that refer to missing rows. The
    database is opened read-only.
    """
    from pytest_maf.store.sqlite import connect_read_only, is_busy  # here: this module is read by lighter commands

    try:
        connection = connect_read_only(path)
    except sqlite3.Error as error:
        return [f"{BUSY if is_busy(error) else 'cannot open'} {path}: {error}"]
    problems: list[str] = []
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != schema.SCHEMA_VERSION:
            way_out = "a newer pytest-maf wrote it: upgrade pytest-maf" if version > schema.SCHEMA_VERSION else "run `maf setup`"
            problems.append(f"schema version is {version}, current is {schema.SCHEMA_VERSION} ({way_out})")
        if connection.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            problems.append("foreign keys cannot be switched on")
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"integrity_check: {'; '.join(integrity[:5])}")
        orphans = connection.execute("PRAGMA foreign_key_check").fetchall()
        if orphans:
            tables = sorted({row[0] for row in orphans})
            problems.append(f"foreign_key_check: {len(orphans)} row(s) in {', '.join(tables)} refer to missing rows")
        problems += _schema_problems(connection)
    except sqlite3.Error as error:
        problems.append(f"{BUSY if is_busy(error) else 'cannot read'} {path}: {error}")
    finally:
        connection.close()
    return problems
