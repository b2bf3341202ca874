"""Health checks shared by the preflight checks in ``checks/`` and ``maf health-check``.

Each function inspects one thing and returns a :class:`CheckResult` saying
whether it is sound, what is wrong, and what to do. None of them prints or
stores the value of an environment variable.

In a check, :func:`require` turns a result into a test outcome::

    @pytest.mark.maf_check(id="env.git", severity="critical", tags=["environment"])
    def test_git_is_available():
        require(git_available())
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pytest_maf import mail
from pytest_maf.errors import DamagedStoreError, MafError, NewerStoreError, StoreBusyError

if TYPE_CHECKING:
    from pytest_maf.store import Store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def passed(message: str, **details: Any) -> CheckResult:
    return CheckResult(True, message, details=details)


def failed(message: str, hint: str, **details: Any) -> CheckResult:
    return CheckResult(False, message, hint, details)


def require(result: CheckResult) -> None:
    """Fail the calling check with the result's message and hint unless it is ok."""
    __tracebackhide__ = True
    import pytest

    if not result.ok:
        pytest.fail(f"{result.message}; {result.hint}" if result.hint else result.message, pytrace=False)


def parse_version(text: str) -> tuple[int, ...]:
    """The leading dotted number of a version string: 'v18.17.1' -> (18, 17, 1)."""
    found = re.search(r"\d+(?:\.\d+)*", text)
    if not found:
        raise ValueError(f"no version number in {text!r}")
    return tuple(int(part) for part in found.group(0).split("."))


def _dotted(version: Sequence[int]) -> str:
    return ".".join(str(part) for part in version)


# Environment.


def python_at_least(minimum: str, version: Sequence[int] = sys.version_info[:3]) -> CheckResult:
    if tuple(version) >= parse_version(minimum):
        return passed(f"Python {_dotted(version)} >= {minimum}")
    return failed(f"Python {_dotted(version)} is older than {minimum}", f"install Python {minimum} or newer")


def sqlite_at_least(minimum: str, version: str = sqlite3.sqlite_version) -> CheckResult:
    if parse_version(version) >= parse_version(minimum):
        return passed(f"SQLite {version} >= {minimum}")
    return failed(
        f"SQLite {version} is older than {minimum}",
        f"use a Python linked against SQLite {minimum} or newer",
    )


def sqlite_wal_reset_safe(version: str = sqlite3.sqlite_version) -> CheckResult:
    """SQLite 3.7.0 through 3.51.2 can corrupt a WAL database in a rare reset race;
    3.51.3 fixed it, and 3.44.6 and 3.50.7 carry the fix as backports."""
    parsed = parse_version(version)[:3]
    fixed = parsed >= (3, 51, 3) or (3, 44, 6) <= parsed < (3, 45) or (3, 50, 7) <= parsed < (3, 51)
    if parsed < (3, 7, 0) or fixed:
        return passed(f"SQLite {version} is not affected by the WAL-reset race")
    return failed(
        f"SQLite {version} is in the range affected by the WAL-reset race (3.7.0-3.51.2)",
        "use a Python linked against SQLite 3.51.3 or newer (or the backports 3.44.6 / 3.50.7),"
        " or accept the risk under preflight.acknowledged_warnings"
        " (env.sqlite-wal-reset: {by: <who>, on: <YYYY-MM-DD>, reason: <why>})",
    )


def git_available() -> CheckResult:
    executable = shutil.which("git")
    if executable is None:
        return failed("git is not on PATH", "install git")
    completed = subprocess.run([executable, "--version"], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return failed(f"{executable} --version failed", "repair the git installation")
    return passed(completed.stdout.strip())


def environment_variables_present(names: Sequence[str], environ: Mapping[str, str] = os.environ) -> CheckResult:
    missing = [name for name in names if not environ.get(name)]
    if missing:
        return failed(
            f"required environment variable(s) not set: {', '.join(missing)}",
            "set them in the agent's environment",
        )
    return passed(f"{len(names)} required environment variable(s) set")


def tool_version(tool: str, requirement: str) -> CheckResult:
    """``requirement`` like '>= 18.17' (only '>=' is understood)."""
    minimum = requirement.replace(">=", "").strip()
    executable = shutil.which(tool)
    if executable is None:
        return failed(f"{tool} is not on PATH", f"install {tool} {requirement}")
    completed = subprocess.run([executable, "--version"], capture_output=True, text=True, check=False)
    try:
        version = parse_version(completed.stdout or completed.stderr)
    except ValueError:
        return failed(f"{tool} --version printed no version", f"check the {tool} installation")
    if version < parse_version(minimum):
        return failed(f"{tool} {_dotted(version)} is older than {minimum}", f"install {tool} {requirement}")
    return passed(f"{tool} {_dotted(version)} {requirement}")


# MCP client configuration.


def mcp_client_config(client: str, path: Path, required: bool) -> CheckResult:
    """A client's MCP file parses and lists servers, each with a command or a url.

    Missing (when required), unparseable, and without servers are three distinct failures.
    """
    if not path.is_file():
        if required:
            return failed(f"{client}: {path} is missing", f"create it, or drop {client} from the required MCP clients")
        return passed(f"{client}: {path} not present (not required)", skipped=True)
    try:
        text = path.read_text(encoding="utf-8")
        document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        return failed(f"{client}: {path} does not parse: {error}", "fix its syntax")
    servers = document.get("mcp_servers" if path.suffix == ".toml" else "mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict) or not servers:
        key = "mcp_servers" if path.suffix == ".toml" else "mcpServers"
        return failed(f"{client}: {path} defines no MCP servers", f"add a {key} table with at least one server")
    incomplete = sorted(
        name for name, server in servers.items()
        if not (isinstance(server, dict) and (server.get("command") or server.get("url")))
    )
    if incomplete:
        return failed(
            f"{client}: server(s) without a command or url: {', '.join(incomplete)}",
            "give each server a command (stdio) or a url (http)",
        )
    return passed(f"{client}: {len(servers)} MCP server(s) configured")


# Agent-mail.


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mail_root_writable(root: Path) -> CheckResult:
    """The mail root is writable, or can be created where it is configured, and no symbolic link on
    the way to it leads out of its repository (every mail command refuses one)."""
    try:
        mail.check_root(root)
    except MafError as error:
        return failed(str(error), "until then no agent-mail is sent or read, and no escalation raised")
    target = root if root.exists() else _nearest_existing(root)
    if not target.is_dir():
        return failed(f"{target} is not a directory", f"point MAF_AGENT_MAIL_ROOT at a directory (now {root})")
    if not os.access(target, os.W_OK | os.X_OK):
        return failed(f"{target} is not writable", f"fix its permissions or set MAF_AGENT_MAIL_ROOT (now {root})")
    return passed(f"mail root {root} is writable" if root.exists() else f"mail root {root} can be created")


def mail_root_initialised(root: Path) -> CheckResult:
    missing = [name for name in ("messages", "outbox") if not (root / name).is_dir()]
    if missing:
        return failed(
            f"mail root {root} lacks {' and '.join(name + '/' for name in missing)}",
            "run `maf init` to lay it out",
        )
    return passed(f"mail root {root} is laid out")


def escalation_inboxes_creatable(root: Path, targets: Sequence[str]) -> CheckResult:
    try:
        mail.check_root(root)
    except MafError as error:  # once, not once a target
        return failed(str(error), "until then no escalation is raised")
    problems = []
    for target in targets:
        try:
            mail.validate_name("escalation target", target)
        except MafError as error:
            problems.append(str(error))
            continue
        inbox = root / "messages" / target
        try:
            mail.check_deliverable(root, target)  # no link out of the mail root on the way
        except MafError as error:
            problems.append(str(error))
            continue
        existing = _nearest_existing(inbox)
        if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            problems.append(f"cannot create {inbox}")
    if problems:
        return failed("; ".join(dict.fromkeys(problems)), "fix the escalation targets or the mail root's permissions")
    return passed(f"inboxes of {len(targets)} escalation target(s) can be created")


# Store and disk.


def database_schema(path: Path) -> CheckResult:
    from pytest_maf.store.verify import schema_problems

    if not path.is_file():
        return failed(f"no runtime database at {path}", "run `maf setup`")
    problems = schema_problems(path)
    if problems:
        return failed(f"{path}: {'; '.join(problems)}", _schema_hint(problems))
    return passed(f"{path} matches the canonical schema")


def configured_store_schema(settings: Any) -> CheckResult:
    """The configured store against the current schema: the SQLite file, or the PostgreSQL store."""
    if settings.database_url is None:
        return database_schema(settings.db_path)
    from pytest_maf.store import open_store_for

    try:
        with open_store_for(settings) as store:
            return store_schema(store)
    except MafError as error:
        return failed(str(error), _unreachable_hint(settings, error))


def store_connection(store: Store, connect_ms: float, **details: Any) -> CheckResult:
    """What the open store is and how fast it answers: its server (PostgreSQL's version, or SQLite's),
    its schema version, the time ``connect_ms`` it took to open and the round trip of one read."""
    import time

    started = time.perf_counter()
    version = store.schema_version()
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    if store.backend == "postgresql":
        server = f"PostgreSQL {getattr(store, 'server_version', '?')}"
    else:
        server = f"SQLite {sqlite3.sqlite_version}"
    return passed(
        f"{store.location} reached: {server}, schema version {version}; opened in {connect_ms} ms,"
        f" a round trip took {latency_ms} ms",
        backend=store.backend, server_version=server.split(" ", 1)[1], schema_version=version,
        connect_ms=connect_ms, latency_ms=latency_ms, **details,
    )


def configured_store_connection(settings: Any) -> CheckResult:
    """The configured store reached: server and schema versions, connection and round-trip times."""
    import time

    from pytest_maf.store import open_store_for

    try:
        started = time.perf_counter()
        with open_store_for(settings) as store:
            connect_ms = round((time.perf_counter() - started) * 1000, 3)
            return store_connection(store, connect_ms)
    except MafError as error:
        return failed(str(error), _unreachable_hint(settings, error))


RECOVER_OR_RESTORE = "run `maf db recover`, or `maf db restore latest`"
UPGRADE = "upgrade pytest-maf to the version that wrote this store, or a newer one"
BUSY_HINT = (
    "another session holds the store (`maf db optimize --reindex` or `--vacuum`, a migration, a restore): check"
    " again when it is done, or raise runtime.busy_timeout_seconds (MAF_BUSY_TIMEOUT)"
)


def _schema_hint(problems: Sequence[str]) -> str:
    """What mends the schema problems found: a newer store wants a newer pytest-maf, damaged pages or rows
    a recovery or a backup; an older or half-made schema `maf setup`."""
    from pytest_maf.store.verify import BUSY  # read only once a store was found wanting

    said = "; ".join(problems)
    if any(problem.startswith(BUSY) for problem in problems):  # nothing is wrong with it: it is in use
        return BUSY_HINT
    if "upgrade pytest-maf" in said:  # the version problem names its own way out
        return UPGRADE
    if any(sign in said for sign in ("integrity_check", "foreign_key_check", "cannot read", "cannot open")):
        return RECOVER_OR_RESTORE
    return "run `maf setup`, or `maf db restore latest`"


def _unreachable_hint(settings: Any, error: MafError) -> str:
    """What to do about a store that could not be opened: a damaged one is recovered or restored
    (`maf setup` refuses it); any other is made, or named right."""
    from pytest_maf.extras import MissingExtraError

    if isinstance(error, MissingExtraError):
        return error.install
    if isinstance(error, DamagedStoreError):
        return RECOVER_OR_RESTORE
    if isinstance(error, NewerStoreError):
        return UPGRADE
    if isinstance(error, StoreBusyError):
        return BUSY_HINT
    return f"run `maf setup` or fix {'MAF_DATABASE_URL' if settings.database_url else 'MAF_DB_PATH'}"


def store_schema(store: Store) -> CheckResult:
    """The open store's tables against the current schema (how a PostgreSQL store is checked)."""
    problems = store.integrity_problems()
    if problems:
        return failed(f"{store.location}: {'; '.join(problems)}", _schema_hint(problems))
    return passed(f"{store.location} matches the canonical schema")


def store_disk_space(settings: Any) -> CheckResult:
    """Room for the store to grow where it lives; a PostgreSQL store's disk is the server's to watch."""
    if settings.database_url is not None:
        return passed(f"the store is on PostgreSQL ({settings.store_shown}): no local file grows")
    return free_disk_space(settings.db_path, settings.min_free_disk_mb)


def free_disk_space(path: Path, minimum_mb: int) -> CheckResult:
    usage = shutil.disk_usage(_nearest_existing(path))
    free_mb = usage.free // (1024 * 1024)
    if free_mb < minimum_mb:
        return failed(
            f"{free_mb} MB free where {path} lives, under the minimum of {minimum_mb} MB",
            "free some disk space",
            free_mb=free_mb,
        )
    return passed(f"{free_mb} MB free where {path} lives", free_mb=free_mb)


def staged_paths_unreserved(
    settings: Any, cwd: Path, agent_id: str | None, environ: Mapping[str, str] = os.environ
) -> CheckResult:
    """No staged path lies under another agent's exclusive reservation, decided by the guard's
    own policy (:func:`pytest_maf.guard.guard_verdict`), override included.

    A commit let through by ``MAF_RESERVATION_OVERRIDE`` passes; the override
    is recorded once, whether `maf guard` or this check sees it first.
    """
    from pytest_maf import guard

    try:
        verdict = guard.guard_verdict(settings, cwd, agent_id, environ)
    except MafError as error:
        return failed(str(error), "`maf guard` gives the same answer", error=type(error).__name__)
    if verdict.status == guard.BLOCKED:
        shown = ", ".join(verdict.details[:5]) + (", ..." if len(verdict.details) > 5 else "")
        return failed(
            f"{verdict.summary}: {shown}",
            "wait, ask the holder to release, unstage them, or override:"
            f' {guard.OVERRIDE_VARIABLE}=true {guard.REASON_VARIABLE}="why" git commit ...',
        )
    if verdict.status == guard.OVERRIDDEN:
        return passed(f"overridden: {verdict.summary}", overridden=True, warnings=verdict.warnings)
    return passed(verdict.summary)


# The health report of `maf health-check`.

CRITICAL, WARNING = "critical", "warning"


@dataclass(frozen=True)
class HealthItem:
    name: str
    severity: str
    result: CheckResult


def database_health(settings: Any) -> list[HealthItem]:
    """Reachable, sound schema and integrity, no expired lease left unreclaimed, a timed probe."""
    import time

    from pytest_maf.store import open_store_for

    items = []
    try:
        opening = time.perf_counter()
        with open_store_for(settings) as store:
            connect_ms = round((time.perf_counter() - opening) * 1000, 3)
            started = time.perf_counter()
            counts = store.read(lambda transaction: transaction.count_tasks_by_state())
            probe_ms = round((time.perf_counter() - started) * 1000, 3)
            expired = store.read(lambda transaction: len(transaction.expired_leases()))
            reached = store_connection(store, connect_ms, tasks=counts)
    except MafError as error:
        return [HealthItem("database.reachable", CRITICAL, failed(str(error), _unreachable_hint(settings, error)))]
    items.append(HealthItem("database.reachable", CRITICAL, reached))
    items.append(HealthItem("database.schema", CRITICAL, configured_store_schema(settings)))
    items.append(HealthItem(
        "database.expired-leases", WARNING,
        failed(f"{expired} expired lease(s) not yet reclaimed", "run `maf leases reclaim`", expired=expired)
        if expired else passed("no expired lease waiting", expired=0),
    ))
    items.append(HealthItem(
        "database.probe", WARNING,
        passed(f"probe query took {probe_ms} ms", probe_ms=probe_ms) if probe_ms < 100
        else failed(f"probe query took {probe_ms} ms", "check disk load; run `maf db optimize`", probe_ms=probe_ms),
    ))
    return items


def environment_health(settings: Any) -> list[HealthItem]:
    return [
        HealthItem("agent-mail.root", CRITICAL, mail_root_writable(settings.mail_root)),
        HealthItem("agent-mail.escalation-targets", CRITICAL, escalation_inboxes_creatable(settings.mail_root, settings.escalation_targets)),
        HealthItem("disk.free", CRITICAL, store_disk_space(settings)),
    ]


def health_exit_code(items: Sequence[HealthItem]) -> int:
    """0 healthy, 1 a critical check failed, 2 warnings only."""
    if any(not item.result.ok and item.severity == CRITICAL for item in items):
        return 1
    return 2 if any(not item.result.ok for item in items) else 0
