"""Verify a runtime database against the schema this pytest-maf creates.

Used by the schema check in ``checks/`` and by ``maf health-check``: every
table, column, CHECK constraint, key and index is compared with a reference
database built in memory from the same migrations.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pytest_maf.store import schema


def _describe(connection: sqlite3.Connection, table: str) -> dict[str, object]:
    indexes = {}
    for row in connection.execute(f"PRAGMA index_list('{table}')"):
        name, unique, origin = row[1], row[2], row[3]
        columns = [info[2] for info in connection.execute(f"PRAGMA index_info('{name}')")]
        indexes[name if origin == "c" else f"{origin}:{','.join(columns)}"] = (bool(unique), columns)
    found = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return {
        "columns": connection.execute(f"PRAGMA table_info('{table}')").fetchall(),
        "foreign keys": connection.execute(f"PRAGMA foreign_key_list('{table}')").fetchall(),
        "keys and indexes": indexes,
        "CHECK constraints and definition": " ".join(found[0].split()) if found else None,
    }


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


def schema_problems(path: Path) -> list[str]:
    """Every way the database at ``path`` differs from the current schema; [] when sound."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        return [f"cannot open {path}: {error}"]
    problems: list[str] = []
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != schema.SCHEMA_VERSION:
            problems.append(
                f"schema version is {version}, current is {schema.SCHEMA_VERSION} (run `maf setup`)"
            )
        if connection.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            problems.append("foreign keys cannot be switched on")
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"integrity_check: {'; '.join(integrity[:5])}")
        orphans = connection.execute("PRAGMA foreign_key_check").fetchall()
        if orphans:
            tables = sorted({row[0] for row in orphans})
            problems.append(f"foreign_key_check: {len(orphans)} row(s) in {', '.join(tables)} refer to missing rows")
        reference = apply_current_schema(sqlite3.connect(":memory:"))
        for table in user_tables(reference):
            expected, actual = _describe(reference, table), _describe(connection, table)
            if actual["CHECK constraints and definition"] is None:
                problems.append(f"table {table} is missing")
                continue
            for aspect, value in expected.items():
                if actual[aspect] != value:
                    problems.append(f"table {table}: {aspect} differ from the canonical schema")
    except sqlite3.Error as error:
        problems.append(f"cannot read {path}: {error}")
    finally:
        connection.close()
    return problems
