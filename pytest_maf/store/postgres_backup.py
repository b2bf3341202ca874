"""Backup, verification and restore of a PostgreSQL store with PostgreSQL's own tools.

* A backup is ``pg_dump -Fc --schema=<schema>``: one consistent snapshot
  while agents keep writing, verified before it is kept, written whole or not
  at all.
* A backup is verified by restoring it into a scratch schema of the same
  database (``pg_restore`` to SQL, the schema's name replaced outside the
  rows' data, applied by ``psql`` in one transaction), running the schema
  check and counting its rows; the scratch schema is dropped afterwards.
* A restore verifies first, then in one transaction renames the live schema
  to ``<schema>_before_restore_<time>`` and restores the backup in its place:
  agents see the old store or the whole restored one.

The password never reaches a command line: it goes to the tools through
``PGPASSWORD``, and the URL they are given has none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pytest_maf.database_url import hide_password, redact_url, refuse_unusable_url
from pytest_maf.errors import StoreError, UsageError
from pytest_maf.files import replaced_output
from pytest_maf.store.postgres import PostgresStore, drop_schema

_COPY_START = re.compile(r"^COPY \S+ \(.*\) FROM stdin;$")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise UsageError(
            f"{name} is not installed (not on PATH), and a PostgreSQL store is backed up and restored with it:"
            " install PostgreSQL's client tools (postgresql-client) of the server's major version or newer"
        )
    return found


def _connection(url: str) -> tuple[str, dict[str, str]]:
    """The connection string without its password, and the environment that carries the password."""
    refuse_unusable_url(url)
    try:
        parts = conninfo_to_dict(url.strip())
    except Exception:
        raise UsageError(f"cannot read the PostgreSQL URL {redact_url(url)}") from None
    password = parts.pop("password", None)
    environment = dict(os.environ)
    if password:
        environment["PGPASSWORD"] = str(password)
    return make_conninfo(**{key: str(value) for key, value in parts.items() if value is not None}), environment


def _run(command: list[str], url: str, environment: dict[str, str], what: str, stdin: str | None = None) -> str:
    completed = subprocess.run(
        command, input=stdin, capture_output=True, text=True, env=environment, check=False,
    )
    if completed.returncode != 0:
        said = " ".join(line.strip() for line in completed.stderr.splitlines() if line.strip())[:500]
        raise StoreError(f"{what} failed (exit {completed.returncode}): {hide_password(said, url) or 'no message'}")
    return completed.stdout


def _restore_script(url: str, backup_path: Path, target_schema: str) -> tuple[str, str]:
    """The backup as SQL that builds ``target_schema``, and the schema the backup was taken of."""
    _, environment = _connection(url)
    script = _run(
        [_tool("pg_restore"), "--no-owner", "--no-privileges", "-f", "-", str(backup_path)], url, environment,
        f"pg_restore of {backup_path}",
    )
    found = re.search(r"^CREATE SCHEMA (\w+);$", script, re.MULTILINE)
    if found is None:
        raise StoreError(f"{backup_path} holds no schema: it is not a backup taken by `maf db backup`")
    source_schema = found.group(1)
    qualified = re.compile(rf"(?<![\w.]){re.escape(source_schema)}(?=\.)|(?<=SCHEMA ){re.escape(source_schema)}\b")
    lines, in_rows = [], False
    for line in script.splitlines():
        if in_rows:  # the rows' data is kept exactly as dumped
            in_rows = line != "\\."
        else:
            line = qualified.sub(target_schema, line)
            in_rows = bool(_COPY_START.match(line))
        lines.append(line)
    return "\n".join(lines) + "\n", source_schema


def _apply(url: str, script: str, what: str) -> None:
    """Run ``script`` with psql in one transaction, stopping at the first error."""
    conninfo, environment = _connection(url)
    _run([_tool("psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", "-"], url, environment, what, script)


def verify_backup(url: str, backup_path: Path) -> dict[str, int]:
    """Restore ``backup_path`` into a scratch schema of the database at ``url``, check its schema, count
    its rows per table, and drop it; raises :class:`~pytest_maf.store.maintenance.VerificationError`."""
    from pytest_maf.store.copy import count_rows
    from pytest_maf.store.maintenance import VerificationError

    if not backup_path.is_file():
        raise UsageError(f"no backup file at {backup_path}")
    _tool("psql")
    scratch = f"maf_verify_{uuid.uuid4().hex[:12]}"
    try:
        try:
            script, _ = _restore_script(url, backup_path, scratch)
            _apply(url, script, f"restoring {backup_path} into a scratch schema")
        except StoreError as error:
            raise VerificationError(backup_path, [str(error)]) from None
        with PostgresStore(url, schema=scratch) as restored:
            try:
                restored.check_schema_version()
            except StoreError as error:
                raise VerificationError(backup_path, [str(error)]) from None
            problems = restored.integrity_problems()
            if problems:
                raise VerificationError(backup_path, problems)
            return count_rows(restored)
    finally:
        drop_schema(url, scratch)


@dataclass(frozen=True)
class PostgresBackupReport:
    path: Path
    bytes: int
    rows: dict[str, int]
    seconds: float


def backup(url: str, schema: str, output: Path) -> PostgresBackupReport:
    """``pg_dump -Fc`` of the store's schema into ``output`` (whole or not at all), verified before it is kept."""
    started = time.monotonic()
    output = replaced_output(output, "the backup")  # before any work
    pg_dump = _tool("pg_dump")
    with PostgresStore(url, schema=schema) as store:
        store.check_schema_version()  # a missing or foreign schema is refused before a file is made
    conninfo, environment = _connection(url)
    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staged_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(descriptor)
    staged = Path(staged_name)
    try:
        _run([pg_dump, "-Fc", f"--schema={schema}", "-f", str(staged), "-d", conninfo], url, environment,
             f"pg_dump of {redact_url(url)} (schema {schema})")
        rows = verify_backup(url, staged)
        with staged.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, output)
    finally:
        staged.unlink(missing_ok=True)
    return PostgresBackupReport(output, output.stat().st_size, rows, time.monotonic() - started)



MAX_NAME_BYTES = 63  # PostgreSQL cuts a longer identifier


def kept_schema_name(schema: str, stamp: str) -> str:
    """The name a restore keeps the replaced schema under: ``<schema>_before_restore_<stamp>``, its
    start cut (and told apart by a digest of the whole name) where that would not fit in a PostgreSQL
    name, so the time always stays in it and it is never the schema's own name (pure)."""
    suffix = f"_before_restore_{stamp}"
    if len(schema) + len(suffix) <= MAX_NAME_BYTES:  # a schema name is ASCII: characters are bytes
        return schema + suffix
    digest = hashlib.sha256(schema.encode()).hexdigest()[:8]
    return f"{schema[: MAX_NAME_BYTES - len(suffix) - len(digest) - 1]}_{digest}{suffix}"


def restore(url: str, schema: str, backup_path: Path, *, force: bool = False) -> str:
    """Replace the store in ``schema`` by ``backup_path``, verified first; the name the old schema is kept as.

    Refuses while agents hold live leases, unless ``force``. Restores of one schema take turns, so
    each keeps the store it replaces under a name of its own.
    """
    with PostgresStore(url, schema=schema) as store:
        store.check_schema_version()  # the server and the store first: a problem there is not the backup's
        verify_backup(url, backup_path)
        connection = store.connection  # autocommit: the lock below is the session's, no transaction stays open
        turn = f"pytest-maf restore {schema}"
        connection.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (turn,))
        try:
            live = store.read(lambda transaction: [
                lease for lease in transaction.list_leases() if lease.lease_expires_at > transaction.now
            ])
            if live and not force:
                raise UsageError(
                    f"{len(live)} live lease(s) in {store.location} (agents are working): restore when they are"
                    " done, or add --force"
                )
            kept = _free_kept_name(connection, schema, _stamp())
            script, _ = _restore_script(url, backup_path, schema)
            rename: Any = sql.SQL("ALTER SCHEMA {} RENAME TO {};\n").format(sql.Identifier(schema), sql.Identifier(kept))
            _apply(url, rename.as_string(connection) + script, f"restoring {backup_path} into {redact_url(url)} (schema {schema})")
        finally:
            with contextlib.suppress(psycopg.Error):  # a connection gone lets go of the lock with it
                connection.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (turn,))
    return kept


def _stamp() -> str:
    """Now, as the name of a kept schema says it (UTC, to the second)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


def _free_kept_name(connection: Any, schema: str, stamp: str) -> str:
    """:func:`kept_schema_name` of ``stamp``, numbered (``_2``, ``_3`` ...) past the names an earlier
    restore of the same second kept."""
    kept, number = kept_schema_name(schema, stamp), 1
    while connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (kept,)).fetchone() is not None:
        number += 1
        kept = kept_schema_name(schema, f"{stamp}_{number}")
    return kept
