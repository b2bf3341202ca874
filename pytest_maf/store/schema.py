"""The runtime store's schema and its numbered migrations.

The four canonical tables (``tasks``, ``leases``, ``events``, ``evidence``)
and ``idx_tasks_state_prio`` are exactly those of the operations guide's
"Canonical Schema Reference". What pytest-maf needs beyond them lives in
tables and indexes beside them, never in a changed canonical column.

The schema version is ``PRAGMA user_version``: migration N brings a database
from version N-1 to N.
"""

from __future__ import annotations

CANONICAL_TABLES = ("tasks", "leases", "events", "evidence")

CANONICAL_DDL = """
CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK (state IN ('READY','LEASED','RUNNING','VERIFYING','COMMITTED','ROLLBACK','DONE','DEAD')),
  priority INTEGER NOT NULL DEFAULT 100,
  payload_json TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  token_budget INTEGER NOT NULL DEFAULT 0,
  cost_budget_cents INTEGER NOT NULL DEFAULT 0,
  policy_label TEXT NOT NULL DEFAULT 'private'
);

CREATE INDEX idx_tasks_state_prio ON tasks(state, priority, created_at);

CREATE TABLE leases (
  task_id TEXT PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
  agent_id TEXT NOT NULL,
  lease_expires_at INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  UNIQUE(task_id),
  UNIQUE(task_id, attempt)
);

CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  ts INTEGER NOT NULL,
  kind TEXT NOT NULL,
  data_json TEXT NOT NULL
);

CREATE TABLE evidence (
  task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  verifier TEXT NOT NULL,
  result TEXT NOT NULL CHECK (result IN ('PASS','FAIL')),
  details_json TEXT NOT NULL,
  PRIMARY KEY (task_id, attempt, verifier)
);
"""

# Beside the canonical tables: per-task limits the canonical `tasks` has no
# column for, and an index so a task's history is read without a full scan.
PYTEST_MAF_DDL_V1 = """
CREATE TABLE task_options (
  task_id TEXT PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
  max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1)
);

CREATE INDEX idx_events_task ON events(task_id, id);
"""

# File reservations and their history. Released reservations are deleted;
# every grant, renewal, release and override stays in reservation_events.
# `anchor` is a pattern's first plain segment ('' when it starts with a glob):
# patterns with different anchors can never overlap, so a conflict check
# reads only the rows that can matter.
RESERVATIONS_DDL_V2 = """
CREATE TABLE reservations (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id TEXT NOT NULL,
  pattern TEXT NOT NULL,
  anchor TEXT NOT NULL,
  exclusive INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
  reason TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  UNIQUE (agent_id, pattern)
);

CREATE INDEX idx_reservations_expiry ON reservations(expires_at);
CREATE INDEX idx_reservations_anchor ON reservations(anchor, expires_at);

CREATE TABLE reservation_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts INTEGER NOT NULL,
  kind TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  data_json TEXT NOT NULL
);
"""

# Escalations through agent-mail: at most one active escalation per agent and
# bead (a repeat raises its level), with its history beside it.
ESCALATIONS_DDL_V3 = """
CREATE TABLE escalations (
  id TEXT PRIMARY KEY,
  agent_id TEXT NOT NULL,
  bead_id TEXT NOT NULL,
  target TEXT NOT NULL,
  level INTEGER NOT NULL CHECK (level >= 1),
  status TEXT NOT NULL CHECK (status IN ('active','resolved','cancelled')),
  context TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE UNIQUE INDEX idx_escalations_active ON escalations(agent_id, bead_id) WHERE status = 'active';
CREATE INDEX idx_escalations_status ON escalations(status, updated_at);

CREATE TABLE escalation_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  escalation_id TEXT NOT NULL REFERENCES escalations(id) ON DELETE CASCADE,
  ts INTEGER NOT NULL,
  kind TEXT NOT NULL,
  data_json TEXT NOT NULL
);
"""

# A task's kind: only 'work' is handed out by a claim without an id; the
# tasks pytest-maf makes for itself (preflight runs, fixture and load-test
# tasks) are claimed by id. A reservation may be tied to a task, and is then
# released with that task's lease.
TASK_KINDS_AND_TIED_RESERVATIONS_DDL_V4 = """
ALTER TABLE task_options ADD COLUMN kind TEXT NOT NULL DEFAULT 'work'
  CHECK (kind IN ('work','preflight','fixture','load-test'));

ALTER TABLE reservations ADD COLUMN task_id TEXT REFERENCES tasks(id) ON DELETE SET NULL;

CREATE INDEX idx_reservations_task ON reservations(task_id) WHERE task_id IS NOT NULL;
"""

# Totals of counted history that `maf db cleanup` deleted: `name` is the table
# the rows were deleted from, `label` the value they were counted by (an
# event's kind, an evidence row's result). The metrics add them to the live
# rows' counts, so a *_total counter never goes down.
COUNTERS_DDL_V5 = """
CREATE TABLE counters (
  name TEXT NOT NULL,
  label TEXT NOT NULL,
  value INTEGER NOT NULL CHECK (value >= 0),
  PRIMARY KEY (name, label)
);
"""

# Agent-mail that a store operation sends (an escalation's request, the
# notices of a force-release or an override), queued in the operation's own
# transaction and written to the mail root after it commits. `delivered_at`
# stays NULL until the files are written, so the next command delivers what a
# process that died in between left queued; the partial index makes "nothing
# queued" one index probe.
MAIL_OUTBOX_DDL_V6 = """
CREATE TABLE mail_outbox (
  id TEXT PRIMARY KEY,
  recipient TEXT NOT NULL,
  message_json TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  delivered_at INTEGER
);

CREATE INDEX idx_mail_outbox_queued ON mail_outbox(created_at, id) WHERE delivered_at IS NULL;
"""

# Every claim first reclaims the expired leases: an index on the expiry makes
# that one probe, however many live leases the store holds.
LEASE_EXPIRY_DDL_V7 = """
CREATE INDEX idx_leases_expiry ON leases(lease_expires_at);
"""

# The agents the store has seen (upserted by every write that names an agent,
# in that write's own transaction), and the running histograms of operation
# durations: one row per operation, outcome and bucket (its upper bound in
# microseconds), holding the count, sum and largest of the observations that
# fell in it. `shard` spreads concurrent writers of one bucket over several
# rows on PostgreSQL (SQLite has one writer and always writes 0); readers add
# the shards up.
AGENTS_AND_DURATIONS_DDL_V8 = """
CREATE TABLE agents (
  agent_id TEXT PRIMARY KEY,
  client TEXT NOT NULL DEFAULT '',
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL
);

CREATE TABLE operation_durations (
  operation TEXT NOT NULL,
  outcome TEXT NOT NULL,
  le_us INTEGER NOT NULL,
  shard INTEGER NOT NULL,
  count INTEGER NOT NULL CHECK (count >= 0),
  sum_us INTEGER NOT NULL CHECK (sum_us >= 0),
  max_us INTEGER NOT NULL CHECK (max_us >= 0),
  PRIMARY KEY (operation, outcome, le_us, shard)
);
"""

# `maf history` and `maf status` read the newest events first: an index on the
# time of each history makes that a walk back from its end, not a sort of all.
HISTORY_TIME_DDL_V9 = """
CREATE INDEX idx_events_ts ON events(ts);
CREATE INDEX idx_reservation_events_ts ON reservation_events(ts);
CREATE INDEX idx_escalation_events_ts ON escalation_events(ts);
"""

MIGRATIONS: tuple[str, ...] = (
    CANONICAL_DDL + PYTEST_MAF_DDL_V1,
    RESERVATIONS_DDL_V2,
    ESCALATIONS_DDL_V3,
    TASK_KINDS_AND_TIED_RESERVATIONS_DDL_V4,
    COUNTERS_DDL_V5,
    MAIL_OUTBOX_DDL_V6,
    LEASE_EXPIRY_DDL_V7,
    AGENTS_AND_DURATIONS_DDL_V8,
    HISTORY_TIME_DDL_V9,
)
SCHEMA_VERSION = len(MIGRATIONS)


# SQLite's application_id of a pytest-maf database: "maf1". A non-empty
# database with another id is some other application's, and is never changed.
APPLICATION_ID = 0x6D616631
# Stores made before databases were marked carry id 0 and these tables.
UNMARKED_STORE_TABLES = frozenset(CANONICAL_TABLES) | {"task_options"}


def not_ours(application_id: int, version: int, tables: list[str]) -> str | None:
    """Why a database may not be used as the runtime store, or None (pure)."""
    if application_id == APPLICATION_ID:
        return None
    if application_id == 0 and not tables:
        return (
            "is empty: it was truncated or damaged (a store is never empty); restore a backup"
            " with `maf db restore BACKUP`, try `maf db recover`, or remove the file and run"
            " `maf setup` to start afresh"
        )
    if application_id == 0 and version >= 1 and UNMARKED_STORE_TABLES <= set(tables):
        return None
    listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    return (
        f"is not a pytest-maf database (application_id {application_id:#x}; tables: {listed or 'none'});"
        " it is left untouched: point --db or MAF_DB_PATH at a pytest-maf store"
    )


def split_statements(script: str) -> list[str]:
    """Split a DDL script into statements (none of ours has a ';' inside)."""
    return [statement.strip() for statement in script.split(";") if statement.strip()]
