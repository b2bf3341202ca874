"""Backup, verification and restore of a PostgreSQL store with PostgreSQL's own tools.

* A backup is ``pg_dump -Fc --schema=<schema>``: one consistent snapshot
  while agents keep writing, verified before it is kept, written whole or not
  at all.
* A backup is verified by restoring it into a scratch schema of the same
  database (``pg_restore`` to SQL, the schema's name replaced outside the
  rows' data, applied by ``psql`` in one transaction), running the schema
  check and counting its rows; the scratch schema is dropped afterwards.
  Only a dump of one schema and nothing else is restored (its table of
  contents is read first, and ``pg_restore -n`` keeps to that schema), so a
  verification leaves nothing on the server whatever the file holds.
* The server is reached before the backup is judged: a server that cannot
  be reached, or a lock held past the busy timeout, is said as such, never
  as a bad backup.
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
from pytest_maf.errors import StoreBusyError, StoreError, StoreUnreachableError, UsageError
from pytest_maf.files import replaced_output
from pytest_maf.store.postgres import PostgresStore, drop_schema
from pytest_maf.store.postgres_schema import SCHEMA_VERSION
from pytest_maf.store.sqlite import DEFAULT_BUSY_TIMEOUT_S

_COPY_START = re.compile(r"^COPY \S+ \(.*\) FROM stdin;$")
# A line of `pg_restore -l`: "<id>; <catalog oid> <oid> <kind> <schema or -> <name> <owner>".
_TOC_ENTRY = re.compile(r"^(\d+); \d+ \d+ (.*)$")
PSQL_CONNECTION_FAILED = 2  # psql's exit status when it cannot reach the server


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


def _said(completed: subprocess.CompletedProcess[str], url: str) -> str:
    """What a tool said on stderr, on one line, without the URL's password."""
    return hide_password(" ".join(completed.stderr.split())[:500], url) or "no message"


def _run(command: list[str], url: str, environment: dict[str, str], what: str, stdin: str | None = None) -> str:
    completed = subprocess.run(
        command, input=stdin, capture_output=True, text=True, env=environment, check=False,
    )
    if completed.returncode != 0:
        raise StoreError(f"{what} failed (exit {completed.returncode}): {_said(completed, url)}")
    return completed.stdout


def _dumped_schema(url: str, backup_path: Path) -> str:
    """The one schema ``backup_path`` holds, read from its table of contents; a
    :class:`~pytest_maf.store.maintenance.VerificationError` for a dump of anything more (another schema,
    an extension, a large object), which `maf db backup` never writes and a check must not restore."""
    from pytest_maf.store.maintenance import VerificationError

    _, environment = _connection(url)
    pg_restore = _tool("pg_restore")
    try:
        listed = _run([pg_restore, "-l", str(backup_path)], url, environment, f"pg_restore of {backup_path}")
    except StoreError as error:
        raise VerificationError(backup_path, [str(error)]) from None
    entries = {found.group(1): found.group(2) for line in listed.splitlines() if (found := _TOC_ENTRY.match(line))}
    schemas = [entry.split(" ")[2] for entry in entries.values() if entry.startswith("SCHEMA - ")]
    if not schemas:
        raise VerificationError(backup_path, ["it holds no schema: it is not a backup taken by `maf db backup`"])
    if len(schemas) > 1:
        raise VerificationError(backup_path, [
            f"it holds {len(schemas)} schemas ({', '.join(sorted(schemas))}), and a backup taken by `maf db backup`"
            " holds one store's schema: it is neither checked nor restored"
        ])
    schema = schemas[0]
    kept = _run([pg_restore, "-l", "-n", schema, str(backup_path)], url, environment, f"pg_restore of {backup_path}")
    inside = {found.group(1) for line in kept.splitlines() if (found := _TOC_ENTRY.match(line))}
    the_schemas_own = (f"SCHEMA - {schema} ", f"ACL - SCHEMA {schema} ", f"COMMENT - SCHEMA {schema} ")
    outside = [entry for number, entry in entries.items()
               if number not in inside and not entry.startswith(the_schemas_own)]
    if outside:
        shown = "; ".join(entry.rsplit(" ", 1)[0] for entry in outside[:3]) + ("; ..." if len(outside) > 3 else "")
        raise VerificationError(backup_path, [
            f"it holds {len(outside)} object(s) outside the store's schema {schema} ({shown}), which a backup"
            " taken by `maf db backup` never holds: it is neither checked nor restored"
        ])
    return schema


def _restore_script(url: str, backup_path: Path, source_schema: str, target_schema: str) -> str:
    """The backup's ``source_schema`` (:func:`_dumped_schema`), and nothing else of it, as SQL that builds
    ``target_schema``."""
    _, environment = _connection(url)
    script = _run(
        [_tool("pg_restore"), "--no-owner", "--no-privileges", "-n", source_schema, "-f", "-", str(backup_path)],
        url, environment, f"pg_restore of {backup_path}",
    )
    qualified = re.compile(rf"(?<![\w.]){re.escape(source_schema)}(?=\.)|(?<=SCHEMA ){re.escape(source_schema)}\b")
    lines, in_rows = [f"CREATE SCHEMA {target_schema};"], False  # -n leaves it out; schema names are plain
    for line in script.splitlines():
        if in_rows:  # the rows' data is kept exactly as dumped
            in_rows = line != "\\."
        else:
            line = qualified.sub(target_schema, line)
            in_rows = bool(_COPY_START.match(line))
        lines.append(line)
    return "\n".join(lines) + "\n"


def _apply(url: str, script: str, what: str) -> None:
    """Run ``script`` with psql in one transaction, stopping at the first error."""
    conninfo, environment = _connection(url)
    command = [_tool("psql"), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", "-"]
    completed = subprocess.run(command, input=script, capture_output=True, text=True, env=environment, check=False)
    if completed.returncode == PSQL_CONNECTION_FAILED:  # nothing was applied: the server is the problem
        raise StoreUnreachableError(
            f"cannot reach the PostgreSQL store at {redact_url(url)}: {_said(completed, url)}; check"
            " MAF_DATABASE_URL (runtime.database_url) and that the server is running"
        )
    if completed.returncode != 0:
        raise StoreError(f"{what} failed (exit {completed.returncode}): {_said(completed, url)}")


def verify_backup(url: str, backup_path: Path) -> dict[str, int]:
    """Restore ``backup_path`` into a scratch schema of the database at ``url``, check its schema, count
    its rows per table, and drop it; raises :class:`~pytest_maf.store.maintenance.VerificationError`."""
    from pytest_maf.store.copy import count_rows
    from pytest_maf.store.maintenance import VerificationError

    if not backup_path.is_file():
        raise UsageError(f"no backup file at {backup_path}")
    _tool("psql")
    source = _dumped_schema(url, backup_path)
    scratch = f"maf_verify_{uuid.uuid4().hex[:12]}"
    with PostgresStore(url, schema=scratch) as restored:
        restored.connection  # the server first: one that cannot be reached is not the backup's fault
        try:
            try:
                _apply(url, _restore_script(url, backup_path, source, scratch), f"restoring {backup_path} into a scratch schema")
            except StoreUnreachableError:
                raise
            except StoreError as error:
                raise VerificationError(backup_path, [str(error)]) from None
            version = restored.schema_version()
            if version > SCHEMA_VERSION:
                raise VerificationError(backup_path, [
                    f"its store has schema version {version}, newer than this pytest-maf knows ({SCHEMA_VERSION}):"
                    " upgrade pytest-maf to check or restore it"
                ])
            if version == 0:
                raise VerificationError(backup_path, [
                    f"its schema {source} holds no pytest-maf store: it is not a backup taken by `maf db backup`"
                ])
            problems = restored.integrity_problems()
            if problems:
                raise VerificationError(backup_path, problems)
            rows = count_rows(restored)
        except BaseException:
            with contextlib.suppress(StoreError):  # what went wrong is said, not that the cleanup failed too
                drop_schema(url, scratch)
            raise
    drop_schema(url, scratch)
    return rows


@dataclass(frozen=True)
class PostgresBackupReport:
    path: Path
    bytes: int
    rows: dict[str, int]
    seconds: float


def backup(url: str, schema: str, output: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> PostgresBackupReport:
    """``pg_dump -Fc`` of the store's schema into ``output`` (whole or not at all), verified before it is kept.

    A lock on the store's tables held past ``busy_timeout_s`` (a REINDEX, a VACUUM FULL, a migration)
    is a :class:`~pytest_maf.errors.StoreBusyError`, and no file is made.
    """
    started = time.monotonic()
    output = replaced_output(output, "the backup")  # before any work
    pg_dump = _tool("pg_dump")
    with PostgresStore(url, schema=schema, busy_timeout_s=busy_timeout_s) as store:
        store.check_schema_version()  # a missing or foreign schema is refused before a file is made
        location = store.location
    conninfo, environment = _connection(url)
    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staged_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(descriptor)
    staged = Path(staged_name)
    try:
        lock_wait_ms = max(1, int((started + busy_timeout_s - time.monotonic()) * 1000))
        dumped = subprocess.run(
            [pg_dump, "-Fc", f"--schema={schema}", f"--lock-wait-timeout={lock_wait_ms}", "-f", str(staged), "-d", conninfo],
            capture_output=True, text=True, env=environment, check=False,
        )
        if dumped.returncode != 0 and "canceling statement due to statement timeout" in dumped.stderr:
            raise StoreBusyError(  # pg_dump bounds its wait for each table's lock with a statement timeout
                f"the runtime store {location} stayed busy for {time.monotonic() - started:.1f} s: another session"
                " holds a lock on its tables (`maf db optimize --reindex` or `--vacuum`, a migration); back up"
                " when it is done, or raise runtime.busy_timeout_seconds (MAF_BUSY_TIMEOUT)"
            )
        if dumped.returncode != 0:
            raise StoreError(f"pg_dump of {location} failed (exit {dumped.returncode}): {_said(dumped, url)}")
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


def restore(
    url: str, schema: str, backup_path: Path, *, force: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> str:
    """Replace the store in ``schema`` by ``backup_path``, verified first; the name the old schema is kept as.

    Refuses while agents hold live leases, unless ``force``. Restores of one schema take turns, so
    each keeps the store it replaces under a name of its own.
    """
    with PostgresStore(url, schema=schema, busy_timeout_s=busy_timeout_s) as store:
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
            script = _restore_script(url, backup_path, _dumped_schema(url, backup_path), schema)
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
