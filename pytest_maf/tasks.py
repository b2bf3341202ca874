"""Tasks and their leases: the state machine and the operations that drive it.

:data:`TRANSITIONS` is the one transition table; :func:`apply_transition` is
the only code that writes a task's state, and it writes an event for every
change. Each public operation runs in one store transaction: it happens
completely or not at all.

Example::

    store = open_store(".maf/runtime.db", create=True)
    add_task(store, payload={"goal": "fix the build"})
    claim = claim_next_task(store, "agent-a", ttl_ms=30_000)
    start_task(store, claim.task_id, "agent-a", claim.attempt)
    begin_verification(store, claim.task_id, "agent-a", claim.attempt)
    record_evidence(store, claim.task_id, claim.attempt, "unit-tests", "PASS", agent_id="agent-a")
    finish_task(store, claim.task_id, "agent-a", claim.attempt).final_state  # "DONE"

    # the same in two transactions after the add, with the same events and rows:
    claim = claim_next_task(store, "agent-a", ttl_ms=30_000, start=True)
    complete_task(store, claim.task_id, "agent-a", claim.attempt, [("unit-tests", "PASS", None)])

Every claim is an attempt. A task whose attempts reach its ``max_attempts``
goes to DEAD when its lease is released, expires or its verification fails,
instead of back to READY.

Every fenced operation by the live holder (start, verify, evidence, renew)
extends the lease to the store's lease length from now, so an agent that keeps
working keeps its task. A task's ``kind`` says who it is for: only ``work`` is
handed out by :func:`claim_next_task`; the tasks pytest-maf makes for itself
(preflight runs, fixture and load-test tasks) are claimed by id, and a
preflight's task is added, claimed and started in one transaction
(:func:`add_and_claim_task`), so no other agent can take it in between.
When a lease ends (finish, release, expiry) the reservations tied to the task
are released in the same transaction.
"""

from __future__ import annotations

import random
import time
from pytest_maf.light_dataclass import dataclass, light_replace
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from pytest_maf import kpi
from pytest_maf.agents import seen
from pytest_maf.errors import IllegalTransitionError, LeaseLostError, NothingToClaimError, UsageError
from pytest_maf.evidence import evidence_events, evidence_rows, evidence_verdict, insert_evidence_rows
from pytest_maf.leases import fenced_lease, held_lease, require_task, require_task_and_lease, validate_id
from pytest_maf.logs import log_event
from pytest_maf.records import TASK_KINDS, TASK_STATES, Event, Evidence, Lease, Task
from pytest_maf.values import INT64_MAX, INT64_MIN, check_integer, check_json

if TYPE_CHECKING:
    from pytest_maf.store import Store, Transaction

TaskState = Literal["READY", "LEASED", "RUNNING", "VERIFYING", "COMMITTED", "ROLLBACK", "DONE", "DEAD"]
Action = Literal[
    "claim", "cancel", "exhaust", "start", "release", "expire", "verify", "commit", "rollback", "done", "retry"
]


@dataclass(frozen=True)
class Move:
    """One row of the transition table: where an action leads and what else it does.

    ``new_attempt``: the move is a new attempt (a claim). ``ends_lease``: the
    lease and the reservations tied to the task go in the same transaction.
    ``then``: the move that follows at once: ``"done"`` after a commit;
    ``"settle"`` after a lost lease or a rollback: back to READY while attempts
    are left (``retry`` from ROLLBACK), else DEAD (``exhaust``).
    """

    target: TaskState
    new_attempt: bool = False
    ends_lease: bool = False
    then: Literal["done", "settle"] | None = None


TRANSITIONS: dict[tuple[TaskState, Action], Move] = {
    ("READY", "claim"): Move("LEASED", new_attempt=True),
    ("READY", "cancel"): Move("DEAD"),
    ("READY", "exhaust"): Move("DEAD"),
    ("LEASED", "start"): Move("RUNNING"),
    ("LEASED", "release"): Move("READY", ends_lease=True, then="settle"),
    ("LEASED", "expire"): Move("READY", ends_lease=True, then="settle"),
    ("RUNNING", "verify"): Move("VERIFYING"),
    ("RUNNING", "release"): Move("READY", ends_lease=True, then="settle"),
    ("RUNNING", "expire"): Move("READY", ends_lease=True, then="settle"),
    ("VERIFYING", "commit"): Move("COMMITTED", ends_lease=True, then="done"),
    ("VERIFYING", "rollback"): Move("ROLLBACK", ends_lease=True, then="settle"),
    ("VERIFYING", "expire"): Move("ROLLBACK", ends_lease=True, then="settle"),
    ("COMMITTED", "done"): Move("DONE"),
    ("ROLLBACK", "retry"): Move("READY"),
    ("ROLLBACK", "exhaust"): Move("DEAD"),
}
LEASED_STATES: frozenset[TaskState] = frozenset({"LEASED", "RUNNING", "VERIFYING"})
FINAL_STATES: frozenset[TaskState] = frozenset({"DONE", "DEAD"})
DEFAULT_PRIORITY = 100
MAX_ATTEMPTS_LIMIT = 1000


def next_move(task_id: str, state: str, action: Action) -> Move:
    """The table's row for ``action`` from ``state``; raises if the table forbids it."""
    move = TRANSITIONS.get((state, action))  # type: ignore[arg-type]
    if move is None:
        allowed = " or ".join(
            f"{source} -> {row.target}" for (source, name), row in TRANSITIONS.items() if name == action
        )
        raise IllegalTransitionError(task_id, state, action, allowed or "nothing")
    return move


@dataclass(frozen=True)
class Steps:
    """What one or more moves do to a task, worked out before anything is written: the task after
    them, each move's event in order, and whether a move ended the lease."""

    task: Task
    events: list[tuple[str, dict[str, Any]]]
    ends_lease: bool


def plan_transition(task: Task, action: Action, **event_data: Any) -> Steps:
    """The moves ``action`` makes from ``task``'s state, the moves that follow from it
    (``Move.then``) included, with the event each records; raises if the table forbids one."""
    state, attempts = task.state, task.attempts
    follow = {"agent": event_data["agent"]} if "agent" in event_data else {}
    events: list[tuple[str, dict[str, Any]]] = []
    ends_lease = False
    while True:
        move = next_move(task.id, state, action)
        if move.new_attempt:
            attempts += 1
        events.append((action, {"from": state, "to": move.target, "attempt": attempts, **event_data}))
        state = move.target
        ends_lease = ends_lease or move.ends_lease
        if move.then == "done":
            action, event_data = "done", follow
        elif move.then == "settle" and attempts >= task.max_attempts:
            action, event_data = "exhaust", {"max_attempts": task.max_attempts, **follow}
        elif move.then == "settle" and state == "ROLLBACK":
            action, event_data = "retry", follow
        else:
            break
    return Steps(light_replace(task, state=state, attempts=attempts), events, ends_lease)


def write_steps(transaction: Transaction, *planned: Steps) -> Task:
    """Write what :func:`plan_transition` worked out (several plans of one task, in order): the
    task's state once, every event in one statement, and the end of the lease."""
    task = light_replace(planned[-1].task, updated_at=transaction.now)
    transaction.write_task_state(task.id, task.state, task.attempts)
    events = [event for steps in planned for event in steps.events]
    if len(events) == 1:
        transaction.insert_event(task.id, *events[0])
    else:
        transaction.insert_events((task.id, action, data) for action, data in events)
    for action, data in events:
        if "to" in data:  # a move, not a row recorded between moves (evidence)
            log_event(action, task_id=task.id, agent_id=data.get("agent"), attempt=data["attempt"], to=data["to"])
    if any(steps.ends_lease for steps in planned):
        _end_lease(transaction, task.id)
    return task


def apply_transition(transaction: Transaction, task: Task, action: Action, **event_data: Any) -> Task:
    """Move ``task`` by ``action``, record the event and carry out the row's effects.

    The one writer of ``tasks.state`` (through :func:`write_steps`): every move, and every move that
    follows from it (``Move.then``), writes its event; the state is written once, as it ends.
    """
    return write_steps(transaction, plan_transition(task, action, **event_data))


@dataclass(frozen=True)
class Claim:
    task_id: str
    attempt: int
    agent_id: str
    lease_expires_at: int


@dataclass(frozen=True)
class FinishResult:
    task_id: str
    attempt: int
    verdict: str  # COMMITTED or ROLLBACK
    final_state: str  # DONE, READY or DEAD
    reason: str


@dataclass(frozen=True)
class Reclaimed:
    task_id: str
    agent_id: str
    attempt: int
    from_state: str
    final_state: str


@dataclass(frozen=True)
class TaskDetail:
    task: Task
    lease: Lease | None
    events: list[Event]
    evidence: list[Evidence]


def _validate_ttl(ttl_ms: int) -> int:
    if ttl_ms <= 0:
        raise UsageError(f"a lease TTL must be above 0, got {ttl_ms} ms")
    return ttl_ms


def _validate_kind(kind: str) -> str:
    if kind not in TASK_KINDS:
        raise UsageError(f"unknown task kind {kind!r}; kinds are {', '.join(TASK_KINDS)}")
    return kind


def _end_lease(transaction: Transaction, task_id: str) -> None:
    """Drop the task's lease and release the reservations tied to it, recorded."""
    transaction.delete_lease(task_id)
    for reservation in transaction.delete_task_reservations(task_id):
        transaction.insert_reservation_event(
            "release", reservation.agent_id,
            {"pattern": reservation.pattern, "task": task_id, "reason": "the task's lease ended"},
        )


def _new_task_id() -> str:
    """48 random bits, as ``uuid4().hex[:12]`` gave, without a system call for each: ``random`` is
    seeded from the system's randomness in every process (after a fork too)."""
    return f"task-{random.getrandbits(48):012x}"


def add_task(
    store: Store,
    *,
    task_id: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    payload: Any = None,
    max_attempts: int | None = None,
    kind: str = "work",
) -> Task:
    """Add a READY task; ``task_id`` is generated when not given.

    ``kind`` other than ``"work"`` marks a task pytest-maf made for itself:
    it is claimed only by id, never by :func:`claim_next_task`.
    """
    task_id = validate_id("task", task_id) if task_id is not None else _new_task_id()
    max_attempts = store.default_max_attempts if max_attempts is None else max_attempts
    check_integer("max attempts", max_attempts, 1, MAX_ATTEMPTS_LIMIT)
    check_integer("priority", priority, INT64_MIN, INT64_MAX)
    check_json("the payload", payload)
    _validate_kind(kind)
    return store.write(lambda transaction: _insert_task(transaction, task_id, priority, payload, max_attempts, kind))


def _insert_task(
    transaction: Transaction, task_id: str, priority: int, payload: Any, max_attempts: int, kind: str
) -> Task:
    task = Task(
        id=task_id,
        state="READY",
        priority=priority,
        payload={} if payload is None else payload,
        created_at=transaction.now,
        updated_at=transaction.now,
        attempts=0,
        max_attempts=max_attempts,
        kind=kind,
    )
    transaction.insert_task(task)
    data = {"to": "READY", "priority": priority, "max_attempts": max_attempts}
    transaction.insert_event(task_id, "add", data if kind == "work" else {**data, "kind": kind})
    return task


def _reclaim_expired(transaction: Transaction, leases: Sequence[Lease] | None = None) -> list[Reclaimed]:
    """End the expired ``leases`` (default: every expired one) as their expiry does: each task moves on
    (expire) and its lease and the reservations tied to it end."""
    reclaimed = []
    for lease in transaction.expired_leases() if leases is None else leases:
        task = require_task(transaction, lease.task_id)
        from_state = task.state
        if task.state in LEASED_STATES:  # the move ends the lease and settles the task
            task = apply_transition(
                transaction, task, "expire", agent=lease.agent_id, lease_expires_at=lease.lease_expires_at
            )
        else:
            _end_lease(transaction, lease.task_id)
        reclaimed.append(
            Reclaimed(task.id, lease.agent_id, lease.attempt, from_state, task.state)
        )
    return reclaimed


def reclaim_expired_leases(store: Store) -> list[Reclaimed]:
    """Reclaim every expired lease: LEASED and RUNNING go back to READY,
    VERIFYING rolls back; tasks out of attempts go to DEAD."""
    return store.write(_reclaim_expired)


def _lease_to(transaction: Transaction, task: Task, agent_id: str, ttl_ms: int, start: bool = False) -> Claim:
    """Claim ``task`` for ``agent_id`` (and with ``start`` start it: LEASED -> RUNNING, its own event)."""
    expires = transaction.now + ttl_ms
    claimed = plan_transition(task, "claim", agent=agent_id, lease_expires_at=expires)
    moves = [claimed]
    if start:
        moves.append(plan_transition(claimed.task, "start", agent=agent_id, lease_expires_at=expires))
    task = write_steps(transaction, *moves)
    transaction.put_lease(Lease(task.id, agent_id, expires, task.attempts))
    return Claim(task.id, task.attempts, agent_id, expires)


def claim_next_task(
    store: Store, agent_id: str, ttl_ms: int, *, kind: str = "work", start: bool = False
) -> Claim:
    """Lease the READY task of ``kind`` with the lowest priority, then the oldest, to ``agent_id``.

    Expired leases are reclaimed first, in the same transaction. Raises
    :class:`NothingToClaimError` when no task is READY. Tasks pytest-maf made
    for itself are never handed out here unless their ``kind`` is asked for.
    With ``start`` the task is also started (LEASED -> RUNNING, with its own
    'start' event) in the same transaction: one round trip instead of two.
    """
    started = time.perf_counter()
    validate_id("agent", agent_id)
    _validate_ttl(ttl_ms)
    _validate_kind(kind)

    def claim(transaction: Transaction) -> Claim | None:
        _reclaim_expired(transaction)
        task = transaction.next_ready_task(kind)
        claimed = None if task is None else _lease_to(transaction, task, agent_id, ttl_ms, start)
        seen(transaction, agent_id, None if claimed is None else kpi.since(started, "claim"))
        return claimed

    claimed = store.write(claim)
    if claimed is None:
        raise NothingToClaimError("no READY task to claim (see `maf task list`)")
    return claimed


# How long a waiting claimer sleeps between tries: doubling up to a second, which also
# bounds how late it notices a lease that expired (no commit announces that).
FIRST_WAIT_S, LONGEST_WAIT_S = 0.05, 1.0


def claim_next_task_waiting(
    store: Store, agent_id: str, ttl_ms: int, *, timeout_s: float | None = None, kind: str = "work",
) -> Claim:
    """:func:`claim_next_task`, waiting up to ``timeout_s`` (None: without end) for a task to claim.

    Between tries it waits with :meth:`Store.wait_for_work`: on PostgreSQL a
    commit that makes a task READY wakes it at once; on SQLite it polls, the
    pause doubling up to a second. Raises :class:`NothingToClaimError` when the
    time is up.
    """
    if timeout_s is not None and not 0 <= timeout_s < float("inf"):
        raise UsageError(f"a wait of {timeout_s!r} s: give a number of seconds, 0 or more")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pause = FIRST_WAIT_S
    while True:
        try:
            return claim_next_task(store, agent_id, ttl_ms, kind=kind)
        except NothingToClaimError:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise NothingToClaimError(
                    f"no READY task to claim within {timeout_s:g} s (see `maf task list`)"
                ) from None
        store.wait_for_work(pause if remaining is None else min(pause, remaining))
        pause = min(pause * 2, LONGEST_WAIT_S)


def claim_task(store: Store, task_id: str, agent_id: str, ttl_ms: int) -> Claim:
    """Lease one named READY task to ``agent_id``, whatever its kind."""
    started = time.perf_counter()
    validate_id("agent", agent_id)
    _validate_ttl(ttl_ms)

    def claim(transaction: Transaction) -> Claim:
        _reclaim_expired(transaction)
        claimed = _lease_to(transaction, require_task(transaction, task_id), agent_id, ttl_ms)
        seen(transaction, agent_id, kpi.since(started, "claim"))
        return claimed

    return store.write(claim)


def add_and_claim_task(
    store: Store,
    agent_id: str,
    ttl_ms: int,
    *,
    kind: str,
    payload: Any = None,
    max_attempts: int = 1,
    start: bool = False,
) -> Claim:
    """Add a task of ``kind`` and lease it to ``agent_id`` (and start it) in one transaction.

    No other agent can see it READY in between: this is how a preflight run
    takes its own task.
    """
    validate_id("agent", agent_id)
    _validate_ttl(ttl_ms)
    _validate_kind(kind)
    check_integer("max attempts", max_attempts, 1, MAX_ATTEMPTS_LIMIT)
    check_json("the payload", payload)
    task_id = _new_task_id()

    def add_and_claim(transaction: Transaction) -> Claim:
        _reclaim_expired(transaction)
        task = _insert_task(transaction, task_id, DEFAULT_PRIORITY, payload, max_attempts, kind)
        claim = _lease_to(transaction, task, agent_id, ttl_ms, start)
        seen(transaction, agent_id)  # not a claim's latency: a preflight's task is made, not waited for
        return claim

    return store.write(add_and_claim)


def renew_lease(
    store: Store, task_id: str, agent_id: str, attempt: int, ttl_ms: int, *, at_least: bool = False
) -> Lease:
    """Extend a live lease to ``ttl_ms`` from now; fenced. With ``at_least``, a lease that runs
    longer already is left as long (never shortened)."""
    _validate_ttl(ttl_ms)

    def renew(transaction: Transaction) -> Lease:
        _, lease = fenced_lease(transaction, task_id, agent_id, attempt, extend=False)
        renewed = _renewed(lease, transaction.now + ttl_ms, at_least)
        transaction.extend_lease(renewed)
        transaction.insert_event(
            task_id,
            "renew",
            {"agent": agent_id, "attempt": attempt, "lease_expires_at": renewed.lease_expires_at},
        )
        seen(transaction, agent_id)
        return renewed

    return store.write(renew)


def _renewed(lease: Lease, until: int, at_least: bool) -> Lease:
    """``lease`` running to ``until``; with ``at_least``, one that runs longer already stays as long."""
    return light_replace(lease, lease_expires_at=max(until, lease.lease_expires_at) if at_least else until)


class Renewed(list[Lease]):
    """The leases a heartbeat renewed; ``lost`` holds the agent's leases it found expired (not yet
    reclaimed by anyone), which it does not revive, as the store's clock read ``now``."""

    def __init__(self, renewed: Iterable[Lease] = (), lost: Iterable[Lease] = (), now: int = 0) -> None:
        super().__init__(renewed)
        self.lost = list(lost)
        self.now = now


def renew_held_leases(
    store: Store, agent_id: str, ttl_ms: int | None = None, *, task_id: str | None = None, at_least: bool = False
) -> Renewed:
    """Heartbeat: extend every live lease ``agent_id`` holds (or only ``task_id``'s).

    ``ttl_ms`` defaults to the store's lease length; with ``at_least``, a lease that runs longer
    already is left as long (never shortened). A lease that expired is not revived: it was
    reclaimable, and another agent may have it now; those still on record are returned as ``lost``
    and given back as their expiry gives them back (so each is reported once).
    """
    validate_id("agent", agent_id)
    ttl = _validate_ttl(store.lease_ttl_ms if ttl_ms is None else ttl_ms)

    def renew(transaction: Transaction) -> Renewed:
        mine = [lease for lease in transaction.list_leases(agent_id) if task_id in (None, lease.task_id)]
        held = [lease for lease in mine if lease.is_live(transaction.now)]
        if task_id is not None and not held:
            task, lease = require_task_and_lease(transaction, task_id)
            holder = f"its lease is {lease.agent_id}'s" if lease and lease.agent_id != agent_id else (
                "its lease expired" if lease else f"it is {task.state} with no lease"
            )
            raise LeaseLostError(
                f"agent {agent_id!r} holds no live lease on task {task_id!r} ({holder});"
                " claim a task again with `maf task claim`"
            )
        renewed = []
        for lease in held:
            lease = _renewed(lease, transaction.now + ttl, at_least)
            transaction.extend_lease(lease)
            transaction.insert_event(
                lease.task_id, "renew",
                {"agent": agent_id, "attempt": lease.attempt, "lease_expires_at": lease.lease_expires_at},
            )
            renewed.append(lease)
        lost = [lease for lease in mine if not lease.is_live(transaction.now)]
        _reclaim_expired(transaction, lost)  # told once: the next heartbeat finds them given back
        seen(transaction, agent_id)
        return Renewed(renewed, lost, transaction.now)

    return store.write(renew)


def held_attempt(store: Store, task_id: str, agent_id: str) -> int:
    """The attempt of ``task_id`` that ``agent_id`` holds live; raises :class:`LeaseLostError`."""
    return store.read(lambda transaction: held_lease(transaction, task_id, agent_id).attempt)


# The actions that end a lease, and those of them that decide the holder's own work.
_LEASE_ENDINGS = frozenset(action for (_, action), move in TRANSITIONS.items() if move.ends_lease)
_DECISIONS = frozenset({"commit", "rollback"})


def finished_by_holder(store: Store, task_id: str, agent_id: str, attempt: int) -> bool:
    """Whether ``agent_id``'s lease on attempt ``attempt`` of ``task_id`` ended because the holder itself
    decided the task (committed or rolled it back), not by an expiry, a release or another agent."""

    def last_ending(transaction: Transaction) -> bool:
        for event in reversed(transaction.events(task_id)):
            if event.kind in _LEASE_ENDINGS:
                return (
                    event.kind in _DECISIONS and event.data.get("agent") == agent_id
                    and event.data.get("attempt") == attempt
                )
        return False

    return store.read(last_ending)


def _fenced_transition(
    store: Store, task_id: str, agent_id: str, attempt: int, action: Action, ttl_ms: int | None
) -> Task:
    if ttl_ms is not None:
        _validate_ttl(ttl_ms)

    def move(transaction: Transaction) -> Task:
        row = TRANSITIONS.get((require_task(transaction, task_id).state, action))  # type: ignore[arg-type]
        ending = row is not None and row.ends_lease  # a lease that ends now is not extended first
        task, lease = fenced_lease(transaction, task_id, agent_id, attempt, extend=not ending)
        extra: dict[str, Any] = {"agent": agent_id}
        if ttl_ms is not None:
            lease = light_replace(lease, lease_expires_at=transaction.now + ttl_ms)
            transaction.extend_lease(lease)
        if not ending:
            extra["lease_expires_at"] = lease.lease_expires_at
        moved = apply_transition(transaction, task, action, **extra)
        seen(transaction, agent_id)
        return moved

    return store.write(move)


def start_task(
    store: Store, task_id: str, agent_id: str, attempt: int, ttl_ms: int | None = None
) -> Task:
    """LEASED -> RUNNING; fenced. ``ttl_ms`` also renews the lease."""
    return _fenced_transition(store, task_id, agent_id, attempt, "start", ttl_ms)


def begin_verification(
    store: Store, task_id: str, agent_id: str, attempt: int, ttl_ms: int | None = None
) -> Task:
    """RUNNING -> VERIFYING; fenced. ``ttl_ms`` also renews the lease."""
    return _fenced_transition(store, task_id, agent_id, attempt, "verify", ttl_ms)


def release_task(store: Store, task_id: str, agent_id: str, attempt: int) -> Task:
    """Give a LEASED or RUNNING task back: READY, or DEAD when out of attempts; fenced."""
    return _fenced_transition(store, task_id, agent_id, attempt, "release", None)


def finish_task(store: Store, task_id: str, agent_id: str, attempt: int) -> FinishResult:
    """Decide a VERIFYING task from its evidence for this attempt; fenced.

    All PASS: COMMITTED -> DONE. Any FAIL, or no evidence at all: ROLLBACK ->
    READY, or DEAD when its attempts are used up.
    """

    def finish(transaction: Transaction) -> FinishResult:
        task, _ = fenced_lease(transaction, task_id, agent_id, attempt, extend=False)
        if task.state != "VERIFYING":
            raise IllegalTransitionError(
                task_id, task.state, "finish", "VERIFYING -> COMMITTED or ROLLBACK"
            )
        decision, passed, reason = _decide(task, agent_id, transaction.evidence(task_id, attempt))
        return _decided(transaction, agent_id, attempt, write_steps(transaction, decision), passed, reason)

    return store.write(finish)


def _decide(task: Task, agent_id: str, evidence: Sequence[Evidence]) -> tuple[Steps, bool, str]:
    """COMMITTED -> DONE or ROLLBACK -> READY/DEAD, from every evidence row of the attempt, planned:
    the end of :func:`finish_task`. Returns the moves, whether they commit, and why."""
    passed, reason = evidence_verdict(evidence)
    return plan_transition(task, "commit" if passed else "rollback", agent=agent_id, reason=reason), passed, reason


def _decided(transaction: Transaction, agent_id: str, attempt: int, written: Task, passed: bool, reason: str) -> FinishResult:
    seen(transaction, agent_id, kpi.preflight_run(written, transaction.now, passed))
    return FinishResult(written.id, attempt, "COMMITTED" if passed else "ROLLBACK", written.state, reason)


def complete_task_rows(
    store: Store,
    task_id: str,
    agent_id: str,
    attempt: int,
    evidence: Sequence[tuple[str, str, dict[str, Any] | None]] = (),
) -> tuple[FinishResult, list[Evidence]]:
    """Verify, record ``evidence`` and finish, in one fenced transaction: all of it or none.

    What :func:`begin_verification` (for a RUNNING task), :func:`pytest_maf.evidence.record_evidence_batch`
    and :func:`finish_task` do one after another, with the same events
    ('verify', one 'evidence' per row, 'commit' and 'done' or 'rollback'
    ...), in one round trip: the task's state is written once and the events in one statement.
    ``evidence`` is ``(verifier, PASS or FAIL, details)``; the task is decided from every row of
    this attempt, those recorded before included. A verifier that already reported refuses the
    whole call (:class:`AlreadyExistsError`), and nothing is written.
    Returns the verdict and the rows written.
    """
    rows = evidence_rows(task_id, attempt, evidence)

    def complete(transaction: Transaction) -> tuple[FinishResult, list[Evidence]]:
        task, lease = fenced_lease(transaction, task_id, agent_id, attempt, extend=False)
        moves = []
        if task.state == "RUNNING":
            moves.append(plan_transition(task, "verify", agent=agent_id, lease_expires_at=lease.lease_expires_at))
        verifying = moves[-1].task if moves else task
        if verifying.state != "VERIFYING":
            raise IllegalTransitionError(
                task_id, task.state, "complete", "RUNNING or VERIFYING -> COMMITTED or ROLLBACK"
            )
        every_row = insert_evidence_rows(
            transaction, task_id, attempt, rows, agent_id, lease.lease_expires_at, events=False
        )
        recorded = Steps(verifying, evidence_events(rows, agent_id, attempt, lease.lease_expires_at), False)
        decision, passed, reason = _decide(verifying, agent_id, every_row)
        written = write_steps(transaction, *moves, recorded, decision)
        return _decided(transaction, agent_id, attempt, written, passed, reason), rows

    return store.write(complete)


def complete_task(
    store: Store,
    task_id: str,
    agent_id: str,
    attempt: int,
    evidence: Sequence[tuple[str, str, dict[str, Any] | None]] = (),
) -> FinishResult:
    """:func:`complete_task_rows`' verdict: verify, record ``evidence`` and finish, in one fenced transaction."""
    return complete_task_rows(store, task_id, agent_id, attempt, evidence)[0]


def cancel_task(store: Store, task_id: str) -> Task:
    """READY -> DEAD."""

    def cancel(transaction: Transaction) -> Task:
        return apply_transition(transaction, require_task(transaction, task_id), "cancel")

    return store.write(cancel)


def get_task(store: Store, task_id: str) -> Task:
    return store.read(lambda transaction: require_task(transaction, task_id))


def describe_task(store: Store, task_id: str) -> TaskDetail:
    """The task with its lease, events and evidence, from one snapshot."""

    def describe(transaction: Transaction) -> TaskDetail:
        task, lease = require_task_and_lease(transaction, task_id)
        return TaskDetail(task, lease, transaction.events(task_id), transaction.evidence(task_id))

    return store.read(describe)


def list_tasks(store: Store, state: str | None = None, *, include_internal: bool = False) -> list[Task]:
    """Tasks in claim order, optionally only those in ``state``.

    Only ``work`` tasks, unless ``include_internal`` also asks for the tasks
    pytest-maf made for itself (preflight runs, fixture and load-test tasks).
    """
    if state is not None:
        state = parse_state(state)
    kind = None if include_internal else "work"
    return store.read(lambda transaction: transaction.list_tasks(state, kind))


def parse_state(text: str) -> str:
    state = text.upper()
    if state not in TASK_STATES:
        raise UsageError(f"unknown state {text!r}; states are {', '.join(TASK_STATES)}")
    return state
