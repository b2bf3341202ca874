"""Which agents are alive: the ``agents`` record, kept up to date by the commands agents already run.

Every write that names an agent (a claim, start, verify, finish, evidence, a
lease renewal or heartbeat, a reservation's acquire, renewal, release or force-release, an
escalation, a guard run) ends with :func:`seen`, one upsert in that same
transaction: no extra call, no extra transaction; agent-mail commands, which
write no store row, mark their agent seen at most once a minute
(:func:`seen_without_a_write`). What an agent holds is not
stored twice; :func:`agent_statuses` reads it from the leases and
reservations at the same moment. An agent silent for longer than
``agents.stale_after_seconds`` is stale::

    statuses = agent_statuses(store, stale_after_ms=900_000)
    [(s.agent_id, s.state, [t.task_id for t in s.tasks]) for s in statuses]
"""

from __future__ import annotations


from pytest_maf.clock import span
from pytest_maf.errors import NotFoundError, UsageError
from pytest_maf.ids import validate_id
from pytest_maf.light_dataclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from pytest_maf.records import Observation
    from pytest_maf.store import Store, Transaction

ACTIVE, STALE = "active", "stale"
AGENT_STATES = (ACTIVE, STALE)

# The program this process's operations come through (maf, pytest, mcp), recorded with the agent; ''
# when unknown. One per process, not per context: a lease keeper's thread reports for the same program.
_client = ""


def set_client(name: str) -> None:
    """Name the program this process's operations come through: ``maf``, ``pytest`` or ``mcp``."""
    global _client
    _client = name


def current_client() -> str:
    return _client


def seen(transaction: Transaction, agent_id: str | None, observation: Observation | None = None) -> None:
    """Mark ``agent_id`` seen now, and record ``observation``: the last statement of an operation's transaction
    (so on PostgreSQL the agent's row is always the last lock taken)."""
    transaction.record_activity(agent_id, current_client(), observation)


# A command that writes nothing to the store (reading or sending agent-mail) marks its agent seen at
# most this often: one read each time, and a write only when the last sighting is older.
QUIET_SEEN_INTERVAL_MS = 60_000


def seen_without_a_write(store: Store, agent_id: str) -> bool:
    """For a command of ``agent_id`` that writes nothing to the store: mark it seen, at most once per
    :data:`QUIET_SEEN_INTERVAL_MS`; True when this call wrote."""

    def last_seen(transaction: Transaction) -> tuple[int, int | None]:
        known = [agent.last_seen for agent in transaction.agents() if agent.agent_id == agent_id]
        return transaction.now, known[0] if known else None

    now, last = store.read(last_seen)
    if last is not None and now - last < QUIET_SEEN_INTERVAL_MS:
        return False
    store.write(lambda transaction: seen(transaction, agent_id))
    return True


@dataclass(frozen=True)
class HeldTask:
    task_id: str
    state: str
    attempt: int
    lease_expires_at: int


@dataclass(frozen=True)
class AgentStatus:
    """An agent as `maf agents` shows it: when seen, whether stale, and what it holds now."""

    agent_id: str
    client: str
    first_seen: int
    last_seen: int
    silent_ms: int  # since last seen, at the time of the reading
    state: str  # active or stale
    tasks: tuple[HeldTask, ...]
    reservations: tuple[str, ...]  # the patterns of its live reservations


def statuses_in(transaction: Transaction, stale_after_ms: int, *, holdings: bool = True) -> list[AgentStatus]:
    """Every agent the store has seen, read in ``transaction`` (one snapshot); with ``holdings``, what each
    holds (without: only when each was seen, as a scrape needs, at the cost of one query)."""
    now = transaction.now
    held: dict[str, list[HeldTask]] = {}
    for lease in transaction.list_leases() if holdings else ():
        if lease.is_live(now):
            task = transaction.get_task(lease.task_id)
            state = task.state if task is not None else "?"
            held.setdefault(lease.agent_id, []).append(
                HeldTask(lease.task_id, state, lease.attempt, lease.lease_expires_at)
            )
    patterns: dict[str, list[str]] = {}
    for reservation in transaction.reservations() if holdings else ():
        patterns.setdefault(reservation.agent_id, []).append(reservation.pattern)
    statuses = []
    for agent in transaction.agents():
        silent = max(0, now - agent.last_seen)
        statuses.append(AgentStatus(
            agent.agent_id, agent.client, agent.first_seen, agent.last_seen, silent,
            STALE if silent > stale_after_ms else ACTIVE,
            tuple(held.get(agent.agent_id, ())), tuple(patterns.get(agent.agent_id, ())),
        ))
    return statuses


def agent_statuses(store: Store, stale_after_ms: int) -> list[AgentStatus]:
    """Every agent the store has seen, by id, as of the store's time now."""
    return store.read(lambda transaction: statuses_in(transaction, stale_after_ms))


def forget(store: Store, agent_ids: Sequence[str], stale_after_ms: int) -> list[AgentStatus]:
    """Remove stale agents that hold nothing from the record (an agent gone for good), all or none.

    An agent that is unknown, still active, or holds a live lease or
    reservation is refused, and nothing is removed; one that comes back is
    recorded afresh by its next command.
    """
    for agent_id in agent_ids:
        validate_id("agent", agent_id)

    def remove(transaction: Transaction) -> list[AgentStatus]:
        known = {status.agent_id: status for status in statuses_in(transaction, stale_after_ms)}
        chosen = []
        for agent_id in dict.fromkeys(agent_ids):
            status = known.get(agent_id)
            if status is None:
                raise NotFoundError(f"no agent {agent_id!r} has been seen (see `maf agents`)")
            if status.state != STALE:
                raise UsageError(
                    f"agent {agent_id!r} was seen {ago(status.silent_ms)}; only a stale agent is forgotten"
                )
            holds = [f"task {task.task_id}" for task in status.tasks] + [f"reservation {p}" for p in status.reservations]
            if holds:
                raise UsageError(
                    f"agent {agent_id!r} still holds {', '.join(holds)}; wait for its leases and reservations"
                    " to expire (or release them) before forgetting it"
                )
            transaction.delete_agent(agent_id)
            chosen.append(status)
        return chosen

    return store.write(remove)


def availability(statuses: list[AgentStatus]) -> float:
    """The share of known agents seen within the window (0..1); NaN when no agent is known."""
    if not statuses:
        return float("nan")
    return sum(1 for status in statuses if status.state == ACTIVE) / len(statuses)


def ago(ms: int) -> str:
    """A silence as a person reads it: ``just now``, ``42s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    return "just now" if ms < 1000 else f"{span(ms, units=1)} ago"
