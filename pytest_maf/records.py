"""Plain records read from and written to the runtime store."""

from __future__ import annotations

from pytest_maf.light_dataclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TASK_STATES = (
    "READY",
    "LEASED",
    "RUNNING",
    "VERIFYING",
    "COMMITTED",
    "ROLLBACK",
    "DONE",
    "DEAD",
)
EVIDENCE_RESULTS = ("PASS", "FAIL")
# What a task is for. Only "work" is handed out by a claim without an id; the
# others are tasks pytest-maf makes for itself (a preflight run, the maf_task
# fixture, a load test) and claims by id.
TASK_KINDS = ("work", "preflight", "fixture", "load-test")


@dataclass(frozen=True)
class Task:
    id: str
    state: str
    priority: int
    payload: Any
    created_at: int
    updated_at: int
    attempts: int
    max_attempts: int
    kind: str = "work"


@dataclass(frozen=True)
class Lease:
    task_id: str
    agent_id: str
    lease_expires_at: int
    attempt: int

    def is_live(self, now_ms: int) -> bool:
        return self.lease_expires_at > now_ms


@dataclass(frozen=True)
class Event:
    id: int
    task_id: str
    ts: int
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Evidence:
    task_id: str
    attempt: int
    verifier: str
    result: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reservation:
    agent_id: str
    pattern: str
    exclusive: bool
    reason: str
    created_at: int
    expires_at: int
    task_id: str | None = None  # released with this task's lease when set

    def is_live(self, now_ms: int) -> bool:
        return self.expires_at > now_ms


@dataclass(frozen=True)
class ReservationEvent:
    id: int
    ts: int
    kind: str
    agent_id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class AuditRow:
    """One row of the audit trail: a task's event, a reservation event or an escalation event.

    ``source`` says which: ``"task"`` rows carry ``task_id``, ``"reservation"``
    rows the acting ``agent_id``, ``"escalation"`` rows ``escalation_id``.
    """

    source: str
    id: int
    ts: int
    kind: str
    data: dict[str, Any]
    task_id: str | None = None
    agent_id: str | None = None
    escalation_id: str | None = None


AUDIT_SOURCES = ("task", "reservation", "escalation")
ESCALATION_STATUSES = ("active", "resolved", "cancelled")


@dataclass(frozen=True)
class Escalation:
    id: str
    agent_id: str
    bead_id: str
    target: str
    level: int
    status: str
    context: str
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class AgentSeen:
    """An agent the store has seen: when first and last, and through which client (``maf``, ``pytest``, ``mcp``)."""

    agent_id: str
    client: str
    first_seen: int
    last_seen: int


# A write that names an agent moves its last sighting on only when that is at least this old (or the
# agent's client changed): an agent writing many times a second rewrites its row ten times a second,
# not at every write, and last_seen is never more than this behind.
SEEN_REFRESH_MS = 100


# The upper bound of the last bucket of an operation's durations (Prometheus' +Inf).
UNBOUNDED_US = 2**63 - 1


@dataclass(frozen=True)
class Observation:
    """One operation's duration, and the histogram bucket it falls in (its upper bound, in microseconds)."""

    operation: str  # claim, guard, preflight, escalation_resolution
    outcome: str  # '' when the operation has none; pass or fail, passed or blocked
    le_us: int
    duration_us: int


@dataclass(frozen=True)
class DurationBucket:
    """The observations of one operation and outcome that fell in one bucket: their count, sum and largest."""

    operation: str
    outcome: str
    le_us: int  # the bucket's upper bound in microseconds; UNBOUNDED_US for +Inf
    count: int
    sum_us: int
    max_us: int


@dataclass(frozen=True)
class OperationStats:
    """Every recorded run of one operation: how many, their total and the slowest (microseconds)."""

    operation: str
    count: int
    total_us: int
    max_us: int
