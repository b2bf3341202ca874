"""The coordination operations `maf mcp` gives an agent, each acting for one agent only.

:class:`AgentTools` is made for one agent id and no method takes another, so
whoever calls it acts as that agent and no other. Each method is a thin call
into the library functions the `maf` command calls, opens the configured
store for that one call (short transactions, like a command), and returns
plain JSON values. A refusal is the library's own
:class:`~pytest_maf.errors.MafError`, with the same words the command prints;
:func:`error_kind` names it (``lease_lost``, ``conflict``, ...) from one table.

Paths and patterns are repository-relative (an absolute path inside the work
tree is taken as that path), as an agent sees them from the repository root.

Example::

    tools = AgentTools(load_settings(), "claude-1", Path.cwd())
    claim = tools.task_claim()
    tools.reservation_acquire(["src/api/**"], task_id=claim["task_id"])
    tools.task_start(claim["task_id"], claim["attempt"])
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from pytest_maf import escalation, mail, tasks
from pytest_maf import evidence as evidence_ops
from pytest_maf import reservations as reservation_ops
from pytest_maf.cli.common import open_configured_store
from pytest_maf.clock import system_clock
from pytest_maf.config import Settings
from pytest_maf.errors import (
    AlreadyExistsError,
    IllegalTransitionError,
    LeaseLostError,
    MafError,
    NotFoundError,
    NothingToClaimError,
    StoreBusyError,
    StoreError,
    SystemRefusalError,
)
from pytest_maf.gitignore_lines import drop_trailing_spaces, refuse_other_meanings
from pytest_maf.guard import describe_holder
from pytest_maf.paths import WorkingDirectory
from pytest_maf.repository import find_work_tree
from pytest_maf.patterns import check_pattern_text, normalize_pattern
from pytest_maf.ids import validate_id
from pytest_maf.records import TASK_STATES, Reservation
from pytest_maf.reservations import NotHolderError, ReservationConflictError, normalize_place

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction

PREFLIGHT_GRACE_S = 30  # beyond preflight.timeout_seconds: interpreter start-up and collection


class PreflightTimeoutError(MafError):
    """The preflight subprocess outlived its own time limit and was stopped."""

    exit_code = 1


# The kind of each refusal, most specific class first; the first match names it.
ERROR_KINDS: tuple[tuple[type[MafError], str], ...] = (
    (ReservationConflictError, "conflict"),
    (NotHolderError, "not_holder"),
    (LeaseLostError, "lease_lost"),
    (NothingToClaimError, "nothing_to_claim"),
    (IllegalTransitionError, "illegal_transition"),
    (NotFoundError, "not_found"),
    (AlreadyExistsError, "already_exists"),
    (StoreBusyError, "store_busy"),
    (StoreError, "store"),
    (PreflightTimeoutError, "timeout"),
    (SystemRefusalError, "system"),
)
# Any other refusal is named by its exit code (pytest_maf.errors.EXIT_CODES).
KIND_BY_EXIT_CODE = {1: "refused", 2: "bad_input", 3: "nothing_to_do", 4: "lease_lost", 5: "store_busy"}


def error_kind(error: MafError) -> str:
    for error_class, kind in ERROR_KINDS:
        if isinstance(error, error_class):
            return kind
    return KIND_BY_EXIT_CODE.get(error.exit_code, "refused")


# The conflicts a refusal lists: an agent reads every word, and a pattern such as '*' can meet thousands.
CONFLICTS_SHOWN = 20


def error_payload(error: MafError) -> dict[str, Any]:
    """A refusal as JSON: its kind, the command's message and exit code, and any conflicts (the first
    :data:`CONFLICTS_SHOWN`, with ``conflict_count`` all of them)."""
    payload: dict[str, Any] = {"kind": error_kind(error), "message": str(error), "exit_code": error.exit_code}
    if isinstance(error, ReservationConflictError):
        payload["conflicts"] = [conflict.as_json() for conflict in error.conflicts[:CONFLICTS_SHOWN]]
        payload["conflict_count"] = len(error.conflicts)
    return payload


def error_text(error: MafError) -> str:
    """``lease_lost: <the command's error line>``, and for a conflict one line per conflict as the command
    gives, the first :data:`CONFLICTS_SHOWN` of them and how many more."""
    lines = [f"{error_kind(error)}: {error}"]
    if isinstance(error, ReservationConflictError):
        for conflict in error.conflicts[:CONFLICTS_SHOWN]:
            lines.append(f"  {conflict.requested}: {describe_holder(conflict.holder)} (both match {conflict.witness})")
            hint = conflict.hint()
            lines += [f"    hint: {hint}"] if hint else []
        more = len(error.conflicts) - CONFLICTS_SHOWN
        lines += [f"  ... and {more} more (reservation_list lists every live reservation)"] if more > 0 else []
    return "\n".join(lines)


def _reservation_json(reservation: Reservation, agent_id: str) -> dict[str, Any]:
    return {**asdict(reservation), "mine": reservation.agent_id == agent_id}


@dataclass
class AgentTools:
    """Coordination operations for ``agent_id``, in the repository at ``work_dir``.

    ``environ`` is the environment a preflight subprocess starts from.
    """

    settings: Settings
    agent_id: str
    work_dir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def __post_init__(self) -> None:
        validate_id("agent", self.agent_id)
        self.work_dir = self.work_dir.resolve()
        self._top = find_work_tree(self.work_dir) or self.work_dir  # a linked worktree's own top

    @contextmanager
    def _store(self, *, deliver_queued_mail: bool = True) -> Iterator[Store]:
        with open_configured_store(self.settings, deliver_queued_mail=deliver_queued_mail) as store:
            yield store

    def _place(self, text: str, *, through_links: bool = True) -> str:
        """A path given to a tool as the concrete repository path the command line reads at the work
        tree's top, ending in '/' for a folder (:meth:`WorkingDirectory.place`): '/' or '.' is the
        root itself, not a file, and is refused so."""
        check_pattern_text(text)
        return WorkingDirectory(self._top, "").place(text, through_links=through_links)

    def _reservable(self, text: str) -> str:
        """A pattern to reserve, read as :meth:`_relative` reads it; refused through a symbolic link
        (:meth:`WorkingDirectory.refuse_through_a_link`)."""
        pattern = normalize_pattern(self._relative(text))
        WorkingDirectory(self._top, "").refuse_through_a_link(text, pattern)
        return pattern

    def _relative(self, text: str) -> str:
        """A pattern or path given to a tool, read from the work tree's top as the command line reads
        it there: an absolute path inside is the repository path it names, one outside is refused."""
        check_pattern_text(text)  # NUL and control characters first: no file system call sees them
        refuse_other_meanings(drop_trailing_spaces(text))  # '!x' is a negation, not a name, as in a .gitignore
        return WorkingDirectory(self._top, "").anchored(text)

    # Tasks.

    def task_claim(self, task_id: str | None = None, ttl_seconds: float | None = None) -> dict[str, Any]:
        """Lease a task to this agent: the named READY task, else the READY task with the lowest
        priority, then the oldest. Returns task_id and attempt: every later call under the lease
        (start, verify, evidence, renew, finish, release) gives both. nothing_to_claim when no task
        is READY. ttl_seconds: lease length (default the configured one, 1800)."""
        ttl_ms = self.settings.lease_ttl_ms(ttl_seconds)
        with self._store() as store:
            if task_id is None:
                claim = tasks.claim_next_task(store, self.agent_id, ttl_ms)
            else:
                claim = tasks.claim_task(store, task_id, self.agent_id, ttl_ms)
        return asdict(claim)

    def task_renew(self, task_id: str, attempt: int, ttl_seconds: float | None = None) -> dict[str, Any]:
        """Extend this agent's live lease on task_id (that attempt) to ttl_seconds from now; without
        it, to the configured lease length, never shortening a longer lease. lease_lost if the lease
        is not, or no longer, yours."""
        ttl_ms = self.settings.lease_ttl_ms(ttl_seconds)
        with self._store() as store:
            return asdict(tasks.renew_lease(store, task_id, self.agent_id, attempt, ttl_ms, at_least=ttl_seconds is None))

    def task_heartbeat(self, task_id: str | None = None, ttl_seconds: float | None = None) -> dict[str, Any]:
        """Renew every live lease this agent holds (or only task_id's); without ttl_seconds, never
        shortening a longer lease. An expired lease is not revived: "lost" lists this agent's leases
        found expired, whose work should stop (lease_lost when task_id's is gone)."""
        ttl_ms = self.settings.lease_ttl_ms(ttl_seconds)
        with self._store() as store:
            renewed = tasks.renew_held_leases(store, self.agent_id, ttl_ms, task_id=task_id, at_least=ttl_seconds is None)
        return {"renewed": [asdict(lease) for lease in renewed], "lost": [asdict(lease) for lease in renewed.lost]}

    def task_start(self, task_id: str, attempt: int, ttl_seconds: float | None = None) -> dict[str, Any]:
        """LEASED -> RUNNING for the task this agent holds (that attempt); extends the lease."""
        return self._move(tasks.start_task, task_id, attempt, ttl_seconds)

    def task_verify(self, task_id: str, attempt: int, ttl_seconds: float | None = None) -> dict[str, Any]:
        """RUNNING -> VERIFYING: record evidence next (evidence_record), then task_finish."""
        return self._move(tasks.begin_verification, task_id, attempt, ttl_seconds)

    def _move(self, operation: Any, task_id: str, attempt: int, ttl_seconds: float | None) -> dict[str, Any]:
        extra = {} if ttl_seconds is None else {"ttl_ms": self.settings.lease_ttl_ms(ttl_seconds)}
        with self._store() as store:
            return asdict(operation(store, task_id, self.agent_id, attempt, **extra))

    def task_finish(self, task_id: str, attempt: int) -> dict[str, Any]:
        """Decide a VERIFYING task from this attempt's evidence: all PASS -> COMMITTED -> DONE;
        any FAIL, or none -> ROLLBACK -> READY (or DEAD when out of attempts). Ends the lease and
        releases the reservations tied to the task."""
        with self._store() as store:
            return asdict(tasks.finish_task(store, task_id, self.agent_id, attempt))

    def task_release(self, task_id: str, attempt: int) -> dict[str, Any]:
        """Give a LEASED or RUNNING task back: READY, or DEAD when out of attempts; releases the
        reservations tied to it."""
        with self._store() as store:
            return asdict(tasks.release_task(store, task_id, self.agent_id, attempt))

    def task_show(self, task_id: str) -> dict[str, Any]:
        """A task with its lease, events and evidence."""
        with self._store() as store:
            return asdict(tasks.describe_task(store, task_id))

    # Evidence.

    def evidence_record(
        self, task_id: str, attempt: int, verifier: str, result: str, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record a verifier's PASS or FAIL for the attempt of task_id this agent holds, with
        details (a JSON object). Once per verifier and attempt; extends the lease."""
        with self._store() as store:
            row = evidence_ops.record_evidence(
                store, task_id, attempt, verifier, result, details, agent_id=self.agent_id
            )
        return asdict(row)

    # Reservations.

    def reservation_acquire(
        self, patterns: list[str], ttl_minutes: float | None = None, shared: bool = False, reason: str = "",
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """Reserve repository-relative paths or gitignore-style globs (*, **, ?, [...]) for this
        agent, all or nothing. A pattern covers everything beneath what it matches ('docs' covers
        docs/api.md); one without '/' matches at any depth; a leading '/' anchors at the root.
        Exclusive unless shared. conflict (nothing reserved) names each holder, its pattern, its
        expiry and a path both match. task_id ties them to a lease you hold: released when it ends.
        ttl_minutes: default 30, at most 120. Acquiring again extends."""
        ttl_ms = self.settings.reservation_ttl_ms(ttl_minutes)
        requested = [self._reservable(pattern) for pattern in patterns]
        with self._store() as store:
            granted = reservation_ops.acquire(
                store, requested, self.agent_id, ttl_ms, exclusive=not shared, reason=reason, task_id=task_id
            )
        return {"granted": [_reservation_json(reservation, self.agent_id) for reservation in granted]}

    def reservation_renew(self, patterns: list[str], ttl_minutes: float | None = None) -> dict[str, Any]:
        """Extend reservations this agent holds to ttl_minutes from now (not_holder if another
        agent holds one). One tied to a task lasts as long as the task's lease, whatever ttl_minutes:
        "notes" says so for each; renew the lease (task_renew, task_heartbeat) to keep it longer."""
        ttl_ms = self.settings.reservation_ttl_ms(ttl_minutes)
        with self._store() as store:
            renewed = reservation_ops.renew(store, [self._relative(p) for p in patterns], self.agent_id, ttl_ms)
        notes = [
            f"{reservation.pattern} is tied to task {reservation.task_id}: it lasts as long as the task's lease"
            " (until expires_at), not ttl_minutes; renew the lease with task_renew or task_heartbeat"
            for reservation in renewed if reservation.task_id is not None
        ]
        return {"renewed": [_reservation_json(reservation, self.agent_id) for reservation in renewed], "notes": notes}

    def reservation_release(self, patterns: list[str], force: bool = False, reason: str = "") -> dict[str, Any]:
        """Release reservations this agent holds. force with a reason releases whoever holds them:
        recorded, and each holder is told by agent-mail."""
        requested = [self._relative(pattern) for pattern in patterns]
        untold: list[str] = []
        with self._store() as store:
            if force:
                forced = reservation_ops.force_release(store, requested, self.agent_id, reason, self.settings.mail_root)
                released, untold = list(forced), forced.undelivered
            else:
                released = reservation_ops.release(store, requested, self.agent_id)
        return {"released": [_reservation_json(r, self.agent_id) for r in released], "undelivered": untold}

    def reservation_check(self, paths: list[str]) -> dict[str, Any]:
        """Which of these repository-relative paths lie under another agent's exclusive
        reservation (blocked, with holder, pattern and expiry), and which are free. A folder
        (a directory, or a path ending in '/') is blocked by any that covers a path beneath it
        (example_path names one)."""
        requested = [self._place(path, through_links=False) for path in paths]
        with self._store() as store:
            blocks = reservation_ops.check_paths(store, requested, self.agent_id)
        blocked = {block.path for block in blocks}
        free = [path for path in dict.fromkeys(normalize_place(p) for p in requested) if path not in blocked]
        return {"ok": not blocks, "blocked": [block.as_json() for block in blocks], "free": free}

    def reservation_list(self, mine_only: bool = False, include_expired: bool = False) -> dict[str, Any]:
        """Live reservations of every agent (mine_only: this agent's), each marked mine or not."""
        with self._store() as store:
            found = reservation_ops.list_reservations(
                store, self.agent_id if mine_only else None, include_expired=include_expired
            )
        return {"reservations": [_reservation_json(reservation, self.agent_id) for reservation in found]}

    # Agent-mail and escalation.

    def _deliver_queued_mail(self) -> None:
        """Before mail is read: deliver what store operations queued, when there is a store."""
        if self.settings.database_url is None and not self.settings.db_path.is_file():
            return
        try:
            with self._store():
                pass
        except MafError as error:
            print(f"maf: warning: queued agent-mail was not delivered: {error}", file=sys.stderr)

    def mail_send(self, to: str, subject: str, body: str) -> dict[str, Any]:
        """Send a message from this agent to another agent's inbox."""
        return mail.send(self.settings.mail_root, self.agent_id, to, subject, body, system_clock())

    def mail_list(self, unread_only: bool = False) -> dict[str, Any]:
        """This agent's inbox: unread messages first, each group oldest first."""
        self._deliver_queued_mail()
        unreadable: list[str] = []
        messages = mail.list_messages(self.settings.mail_root, self.agent_id, unread_only, unreadable)
        messages.sort(key=lambda message: bool(message.get("read_at")))  # stable: oldest first stays
        unread = sum(1 for message in messages if not message.get("read_at"))
        listed: dict[str, Any] = {"agent": self.agent_id, "unread": unread, "messages": messages}
        if unreadable:  # the files passed over, each with why: the agent is told, not left guessing
            listed["unreadable"] = unreadable
        return listed

    def mail_show(self, message_id: str) -> dict[str, Any]:
        """One message sent to or by this agent."""
        self._deliver_queued_mail()
        _, message = mail.find_message(self.settings.mail_root, message_id)
        if self.agent_id not in (message.get("to"), message.get("from")):
            raise NotFoundError(f"no message {message_id!r} to or from {self.agent_id}")
        return message

    def mail_ack(self, message_id: str) -> dict[str, Any]:
        """Mark a message in this agent's inbox read (it stays in the archive)."""
        self._deliver_queued_mail()
        return mail.acknowledge(self.settings.mail_root, message_id, self.agent_id, system_clock())

    def escalate(self, bead_id: str, error_context: str, target: str, dry_run: bool = False) -> dict[str, Any]:
        """Ask a senior agent for help: an ESCALATION_REQUEST in target's inbox, tracked in the
        store. Escalating the same bead again raises its level. dry_run checks everything and
        returns the message without writing anything. undelivered says why the message is still
        queued, if it is (the next operation delivers it)."""
        with self._store(deliver_queued_mail=not dry_run) as store:
            outcome = escalation.escalate(
                store, self.settings, agent_id=self.agent_id, bead_id=bead_id,
                error_context=error_context, target=target, dry_run=dry_run,
            )
        return {
            "escalation_id": outcome.escalation.id, "level": outcome.escalation.level,
            "target": outcome.escalation.target, "raised": outcome.raised, "dry_run": outcome.dry_run,
            "message": outcome.message, "undelivered": list(outcome.undelivered), "note": outcome.note,
        }

    # Overview and preflight.

    def status(self) -> dict[str, Any]:
        """Now, from one snapshot: tasks by state, live leases, live reservations and open
        escalations, each lease and reservation marked mine or not."""

        def snapshot(transaction: Transaction) -> dict[str, Any]:
            now = transaction.now
            counts = transaction.count_tasks_by_state()
            return {
                "agent": self.agent_id,
                "now": now,
                "tasks_by_state": {state: counts.get(state, 0) for state in TASK_STATES},
                "leases": [
                    {**asdict(lease), "mine": lease.agent_id == self.agent_id}
                    for lease in transaction.list_leases() if lease.is_live(now)
                ],
                "reservations": [_reservation_json(r, self.agent_id) for r in transaction.reservations(live_only=True)],
                "open_escalations": [asdict(found) for found in transaction.escalations(status="active")],
            }

        with self._store() as store:
            return store.read(snapshot)

    def preflight(self) -> dict[str, Any]:
        """Run the preflight checks (pytest --maf-preflight) in the repository as this agent:
        ok, the summary, each failure's check and first line, warnings, and the task's verdict."""
        environ = {**self.environ, "MAF_AGENT_ID": self.agent_id}
        command = [sys.executable, "-m", "pytest", "--maf-preflight", "-p", "no:cacheprovider", "--color=no"]
        limit = self.settings.preflight_timeout_s + PREFLIGHT_GRACE_S
        child = subprocess.Popen(
            command, cwd=self.work_dir, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="backslashreplace",
        )
        with _CHILDREN_LOCK:
            _CHILDREN.add(child)
        try:
            stdout, stderr = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise PreflightTimeoutError(
                f"the preflight did not end within {limit} s and was stopped; run `pytest --maf-preflight` to see why"
            ) from None
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(child)
        return {"exit_code": child.returncode, "ok": child.returncode == 0, **preflight_summary(stdout, stderr)}


# The preflight runs under way, which a server that ends stops with it.
_CHILDREN: set[subprocess.Popen[str]] = set()
_CHILDREN_LOCK = threading.Lock()


def stop_children() -> None:
    """Stop the preflight runs under way: the server that asked for them is ending, and nobody would
    hear their verdict."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN)
    for child in children:
        with contextlib.suppress(OSError):
            child.terminate()


SEPARATOR = re.compile(r"^=+ (.*?) =+$")
SUMMARY_PREFIXES = (("FAIL ", "failures"), ("WARN ", "warnings"), ("ACK ", "acknowledged"))


def preflight_summary(stdout: str, stderr: str = "") -> dict[str, Any]:
    """The `maf preflight` section of a run's output, read into its parts (pure).

    Without that section (a usage or collection error), ``output`` holds the
    last lines of the run's output instead.
    """
    summary: dict[str, Any] = {"summary": None, "verdict": None, "failures": [], "warnings": [],
                               "acknowledged": [], "notes": []}
    lines = stdout.splitlines()
    starts = [index for index, line in enumerate(lines) if (found := SEPARATOR.match(line)) and found[1] == "maf preflight"]
    if not starts:
        summary["output"] = (stdout.strip().splitlines() + stderr.strip().splitlines())[-20:]
        return summary
    section = []
    for line in lines[starts[-1] + 1:]:
        if SEPARATOR.match(line):
            break
        section.append(line)
    if section:
        summary["summary"] = section[0]
    for line in section[1:]:
        for prefix, key in SUMMARY_PREFIXES:
            if line.startswith(prefix):
                check, _, message = line[len(prefix):].partition(": ")
                summary[key].append({"check": check, "message": message})
                break
        else:
            if line.startswith("task "):
                summary["verdict"] = line
            elif line.strip():
                summary["notes"].append(line.removeprefix("maf: "))
    return summary
