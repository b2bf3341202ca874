"""Which agents are alive (`maf agents`, maf_agents) and the KPI histograms recorded by real traffic."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterator

import pytest

from backends import environment_store, open_environment_store
from pytest_maf import escalation, kpi, reservations, tasks
from pytest_maf.agents import agent_statuses, availability, forget
from pytest_maf.clock import ManualClock, system_clock
from pytest_maf.config import Settings, load_settings
from pytest_maf.errors import NothingToClaimError, NotFoundError, UsageError
from pytest_maf.evidence import record_evidence
from pytest_maf.metrics import exposition
from pytest_maf.records import SEEN_REFRESH_MS, UNBOUNDED_US, DurationBucket
from pytest_maf.store import Store, open_store
from test_operations import metric_values
from workspace import Workspace

WINDOW_MS = 900_000  # agents.stale_after_seconds' default
HOUR_MS = 3_600_000


def test_an_agent_is_stale_once_silent_past_the_window(store: Store, clock: ManualClock) -> None:
    tasks.add_task(store, task_id="t1")
    tasks.claim_next_task(store, "alice", HOUR_MS)
    clock.advance(WINDOW_MS)
    reservations.acquire(store, ["docs/**"], "bob", HOUR_MS)

    at_the_window = {status.agent_id: status for status in agent_statuses(store, WINDOW_MS)}
    clock.advance(1)
    past_it = {status.agent_id: status for status in agent_statuses(store, WINDOW_MS)}

    assert at_the_window["alice"].state == "active" and at_the_window["alice"].silent_ms == WINDOW_MS
    assert past_it["alice"].state == "stale" and past_it["bob"].state == "active"
    assert [(task.task_id, task.state) for task in past_it["alice"].tasks] == [("t1", "LEASED")]
    assert past_it["bob"].reservations == ("docs/**",) and past_it["bob"].tasks == ()
    assert availability(list(past_it.values())) == 0.5


def test_only_a_stale_agent_holding_nothing_is_forgotten_and_a_refusal_forgets_none(
    store: Store, clock: ManualClock
) -> None:
    tasks.add_task(store, task_id="t1")
    tasks.claim_next_task(store, "alice", 2 * HOUR_MS)
    reservations.acquire(store, ["docs/**"], "bob", 60_000)
    with pytest.raises(NothingToClaimError):
        tasks.claim_next_task(store, "carol", HOUR_MS)  # waiting for work counts as being seen
    clock.advance(WINDOW_MS + 1)
    tasks.add_task(store, task_id="t2")
    tasks.claim_next_task(store, "dave", HOUR_MS)

    with pytest.raises(UsageError, match="'alice' still holds task t1"):
        forget(store, ["carol", "alice"], WINDOW_MS)
    with pytest.raises(UsageError, match="'dave' was seen just now; only a stale agent is forgotten"):
        forget(store, ["dave"], WINDOW_MS)
    with pytest.raises(NotFoundError):
        forget(store, ["zed"], WINDOW_MS)
    assert [s.agent_id for s in agent_statuses(store, WINDOW_MS)] == ["alice", "bob", "carol", "dave"]

    forgotten = forget(store, ["carol", "bob"], WINDOW_MS)  # bob's reservation has expired

    assert [s.agent_id for s in forgotten] == ["carol", "bob"]
    assert [s.agent_id for s in agent_statuses(store, WINDOW_MS)] == ["alice", "dave"]


def test_every_write_that_names_an_agent_marks_it_seen_without_changing_when_it_was_first(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    started = clock()
    tasks.add_task(store, task_id="t1")
    claim = tasks.claim_next_task(store, "alice", HOUR_MS)
    steps = [
        ("alice", lambda: tasks.start_task(store, "t1", "alice", claim.attempt)),
        ("alice", lambda: tasks.renew_held_leases(store, "alice")),
        ("alice", lambda: tasks.begin_verification(store, "t1", "alice", claim.attempt)),
        ("alice", lambda: record_evidence(store, "t1", claim.attempt, "unit", "PASS", agent_id="alice")),
        ("alice", lambda: tasks.finish_task(store, "t1", "alice", claim.attempt)),
        ("alice", lambda: reservations.acquire(store, ["src/**"], "alice", HOUR_MS)),
        ("alice", lambda: reservations.renew(store, ["src/**"], "alice", HOUR_MS)),
        ("alice", lambda: reservations.release(store, ["src/**"], "alice")),
        ("bob", lambda: reservations.acquire(store, ["docs/**"], "bob", HOUR_MS)),
        ("alice", lambda: reservations.force_release(store, ["docs/**"], "alice", "bob is gone", tmp_path / "mail")),
    ]
    for agent, step in steps:
        clock.advance(1000)
        step()
        seen_now = {status.agent_id: status for status in agent_statuses(store, WINDOW_MS)}
        assert seen_now[agent].last_seen == clock() and seen_now["alice"].first_seen == started


def test_an_agent_writing_many_times_a_second_is_seen_to_a_tenth_of_a_second_and_a_new_client_at_once(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = clock()
    tasks.add_task(store, task_id="t1")
    claim = tasks.claim_next_task(store, "alice", HOUR_MS)

    def last_seen() -> tuple[int, str]:
        (alice,) = [status for status in agent_statuses(store, WINDOW_MS) if status.agent_id == "alice"]
        return alice.last_seen, alice.client

    clock.advance(SEEN_REFRESH_MS - 1)
    tasks.renew_lease(store, "t1", "alice", claim.attempt, HOUR_MS)
    assert last_seen() == (first, "")  # not rewritten for a sighting under a tenth of a second newer
    monkeypatch.setattr("pytest_maf.agents._client", "mcp")
    tasks.renew_lease(store, "t1", "alice", claim.attempt, HOUR_MS)
    assert last_seen() == (first + SEEN_REFRESH_MS - 1, "mcp")  # another client: recorded at once
    clock.advance(SEEN_REFRESH_MS)
    tasks.start_task(store, "t1", "alice", claim.attempt)
    assert last_seen() == (first + 2 * SEEN_REFRESH_MS - 1, "mcp")


@contextlib.contextmanager
def repository_store(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> Iterator[tuple[Settings, Store]]:
    """A repository's settings and its store on ``backend`` (as `maf` finds it), written on ``clock``."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    with environment_store(backend, monkeypatch):
        with open_environment_store(tmp_path, create=True, clock=clock, use_client_clock=True) as store:
            yield load_settings(cwd=tmp_path), store


def test_claim_counts_and_preflight_and_escalation_buckets_match_what_happened(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(system_clock())
    with repository_store(backend, tmp_path, monkeypatch, clock) as (settings, store):
        for n in range(5):
            tasks.add_task(store, task_id=f"t{n}")
            tasks.claim_next_task(store, ("alice", "bob")[n % 2], HOUR_MS)
        run_preflight(store, clock, took_ms=2500, result="PASS")  # the 3 s bucket, not the 2 s one
        run_preflight(store, clock, took_ms=400, result="FAIL")  # the 0.5 s bucket
        opened = escalation.escalate(
            store, settings, agent_id="alice", bead_id="b1", error_context="stuck", target="codex-senior"
        )
        clock.advance(7 * 60_000)  # the 600 s bucket, not the 300 s one
        escalation.close_escalation(store, opened.escalation.id, by="alice")
        stats = {row.operation: row for row in store.read(lambda transaction: transaction.operation_stats())}
        values = metric_values(exposition(settings))

    claims = [values[("maf_claim_duration_seconds_bucket", (("le", le),))] for le in claim_bounds()]
    assert claims[-1] == values[("maf_claim_duration_seconds_count", ())] == 5
    assert claims == sorted(claims) and values[("maf_claim_duration_seconds_sum", ())] > 0
    assert stats["claim"].count == 5 and 0 < stats["claim"].max_us <= stats["claim"].total_us

    def preflight(sample: str, outcome: str, le: str | None = None) -> float:
        labels = (("le", le), ("outcome", outcome)) if le else (("outcome", outcome),)
        return values[(f"maf_preflight_duration_seconds_{sample}", labels)]

    assert (preflight("bucket", "pass", "2.0"), preflight("bucket", "pass", "3.0")) == (0, 1)
    assert (preflight("count", "pass"), preflight("sum", "pass")) == (1, 2.5)
    assert (preflight("bucket", "fail", "0.5"), preflight("count", "fail")) == (1, 1)
    assert values[("maf_preflight_pass_ratio", ())] == 0.5
    assert stats["preflight"].count == 2 and stats["preflight"].max_us == 2_500_000

    resolution = {le: values[("maf_escalation_resolution_seconds_bucket", (("le", le),))] for le in ("300.0", "600.0")}
    assert resolution == {"300.0": 0, "600.0": 1}
    assert values[("maf_escalation_resolution_seconds_sum", ())] == 420
    assert values[("maf_agents", (("state", "active"),))] == 3 and values[("maf_agent_availability", ())] == 1


def run_preflight(store: Store, clock: ManualClock, *, took_ms: int, result: str) -> None:
    claim = tasks.add_and_claim_task(store, "carol", HOUR_MS, kind="preflight", start=True)
    clock.advance(took_ms)
    tasks.begin_verification(store, claim.task_id, "carol", claim.attempt)
    record_evidence(store, claim.task_id, claim.attempt, "env.python", result, agent_id="carol")
    tasks.finish_task(store, claim.task_id, "carol", claim.attempt)


def claim_bounds() -> list[str]:
    return [repr(bound) for bound in kpi.OPERATION_BUCKETS["claim"]] + ["+Inf"]


def test_the_oldest_open_escalation_is_as_old_as_the_time_since_it_was_opened(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = system_clock()
    eleven_minutes_ago = ManualClock(began - 660_000)
    with repository_store(backend, tmp_path, monkeypatch, eleven_minutes_ago) as (settings, store):
        escalation.escalate(store, settings, agent_id="alice", bead_id="b1", error_context="stuck", target="codex-senior")
        eleven_minutes_ago.advance(60_000)
        escalation.escalate(store, settings, agent_id="bob", bead_id="b2", error_context="stuck", target="codex-senior")
        values = metric_values(exposition(settings))

    took_s = (system_clock() - began) / 1000
    assert 660 <= values[("maf_escalation_oldest_open_seconds", ())] <= 660 + took_s + 1  # the first one's age
    assert values[("maf_escalations", (("status", "active"),))] == 2


def test_no_agent_known_is_not_counted_as_available_and_no_preflight_is_not_a_pass_rate(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    settings = load_settings(environ={}, cwd=tmp_path)
    open_store(settings.db_path, create=True).close()

    values = metric_values(exposition(settings))

    assert math.isnan(values[("maf_agent_availability", ())]) and math.isnan(values[("maf_preflight_pass_ratio", ())])
    assert values[("maf_agents", (("state", "stale"),))] == 0 and values[("maf_escalation_oldest_open_seconds", ())] == 0


def test_a_bucket_bound_that_changed_counts_in_the_next_current_bucket() -> None:
    rows = [DurationBucket("claim", "", 700, 2, 1300, 700), DurationBucket("claim", "", UNBOUNDED_US, 1, 9_000_000, 9_000_000)]

    claim = kpi.histograms(rows)[("claim", "")]

    counts = dict(claim.buckets)
    assert (counts[0.0005], counts[0.001], counts[5.0], counts[float("inf")]) == (0, 2, 2, 3)
    assert (claim.count, claim.sum_s, claim.max_s) == (3, 9.0013, 9.0)


@pytest.mark.slow
def test_the_agents_record_follows_real_commands_from_two_agents(workspace: Workspace) -> None:
    main = workspace.main
    for n in range(3):
        assert workspace.maf(main, "task", "add", "--id", f"t{n}").returncode == 0
    claimed = workspace.maf(main, "task", "claim", "--json", agent="alice")
    assert claimed.returncode == 0, claimed.stderr
    assert workspace.maf(main, "reservation", "acquire", "docs/**", agent="bob").returncode == 0

    first = agents_json(workspace)
    assert [(a["agent_id"], a["client"], a["state"]) for a in first] == [("alice", "maf", "active"), ("bob", "maf", "active")]
    assert [task["task_id"] for task in first[0]["tasks"]] == ["t0"] and first[1]["reservations"] == ["docs/**"]

    attempt = str(json.loads(claimed.stdout)["attempt"])
    assert workspace.maf(main, "task", "start", "t0", "--attempt", attempt, agent="alice").returncode == 0
    assert workspace.maf(main, "reservation", "release", "docs/**", agent="bob").returncode == 0
    for agent in ("bob", "alice"):
        assert workspace.maf(main, "task", "claim", agent=agent).returncode == 0
    workspace.stage(main, "README.md")
    assert workspace.maf(main, "guard", agent="bob").returncode == 0

    second = {a["agent_id"]: a for a in agents_json(workspace)}
    assert second["alice"]["first_seen"] == first[0]["first_seen"] < second["alice"]["last_seen"]
    assert sorted((t["task_id"], t["state"]) for t in second["alice"]["tasks"]) == [("t0", "RUNNING"), ("t2", "LEASED")]
    assert second["bob"]["reservations"] == [] and [t["task_id"] for t in second["bob"]["tasks"]] == ["t1"]

    values = metric_values(workspace.maf(main, "metrics").stdout)
    assert values[("maf_claim_duration_seconds_count", ())] == 3  # three real claims
    assert values[("maf_guard_duration_seconds_count", (("outcome", "passed"),))] == 1


@pytest.mark.slow
def test_maf_agents_shows_a_silent_agent_as_stale_and_a_preflight_agent_by_its_client(workspace: Workspace) -> None:
    main = workspace.main
    assert "no agent seen yet" in workspace.maf(main, "agents").stdout
    twenty_minutes_ago = ManualClock(system_clock() - 20 * 60_000)
    with open_store(main / ".maf" / "runtime.db", clock=twenty_minutes_ago) as store:
        reservations.acquire(store, ["src/**"], "carol", 2 * HOUR_MS)
    ran = workspace.pytest(main, "--maf-preflight", "-q", agent="dave")
    assert "task task-" in ran.stdout, ran.stdout + ran.stderr

    listed = workspace.maf(main, "agents", MAF_AGENT_STALE_AFTER="600")
    by_agent = {line.split()[0]: line for line in listed.stdout.splitlines()[1:-1]}
    assert by_agent["carol"].split()[2:5] == ["20m", "ago", "stale"] and "src/**" in by_agent["carol"]
    assert by_agent["dave"].split()[1] == "pytest" and " active " in by_agent["dave"]
    assert listed.stdout.splitlines()[-1] == "2 agent(s), 1 stale (silent for more than 600 s)"

    values = metric_values(workspace.maf(main, "metrics", MAF_AGENT_STALE_AFTER="600").stdout)
    assert values[("maf_agents", (("state", "stale"),))] == 1 and values[("maf_agent_availability", ())] == 0.5
    refused = workspace.maf(main, "agents", "--forget", "carol", MAF_AGENT_STALE_AFTER="600")
    assert refused.returncode == 2 and "'carol' still holds reservation src/**" in refused.stderr
    with open_store(main / ".maf" / "runtime.db", clock=twenty_minutes_ago) as store, pytest.raises(NothingToClaimError):
        tasks.claim_next_task(store, "hank", HOUR_MS)  # seen, holding nothing
    forgotten = workspace.maf(main, "agents", "--forget", "hank", MAF_AGENT_STALE_AFTER="600")
    assert (forgotten.returncode, forgotten.stdout) == (0, "forgot hank (last seen 20m ago)\n")
    assert [a["agent_id"] for a in agents_json(workspace)] == ["carol", "dave"]
    assert values[("maf_preflight_duration_seconds_count", (("outcome", "pass"),))] + values[
        ("maf_preflight_duration_seconds_count", (("outcome", "fail"),))
    ] == 1


def test_agent_mail_marks_its_agent_seen_at_most_once_a_minute(workspace: Workspace) -> None:
    main = workspace.main
    two_minutes_ago = ManualClock(system_clock() - 120_000)
    with open_store(main / ".maf" / "runtime.db", clock=two_minutes_ago) as store:
        reservations.acquire(store, ["docs/**"], "gina", HOUR_MS)

    sent = workspace.maf(main, "mail", "send", "--to", "gina", "--subject", "hi", "--body", "ready?", agent="erin")
    assert sent.returncode == 0, sent.stderr
    first = {a["agent_id"]: a for a in agents_json(workspace)}
    for agent in ("erin", "gina"):
        assert workspace.maf(main, "mail", "list", agent=agent).returncode == 0
    second = {a["agent_id"]: a for a in agents_json(workspace)}

    assert first["erin"]["client"] == "maf" and second["erin"]["last_seen"] == first["erin"]["last_seen"]  # within the minute
    assert second["gina"]["last_seen"] > first["gina"]["last_seen"] == two_minutes_ago()  # silent for two


def test_an_agent_served_over_mcp_is_recorded_with_its_client(workspace: Workspace) -> None:
    pytest.importorskip("mcp", reason="maf mcp needs the mcp extra")
    from test_mcp_server import run, serving

    assert workspace.maf(workspace.main, "task", "add", "--id", "t1").returncode == 0

    async def scenario() -> None:
        async with serving(workspace, workspace.main, "claude-1") as agent:
            await agent.ok("task_claim")

    run(scenario())

    (claude,) = agents_json(workspace)
    assert (claude["agent_id"], claude["client"], claude["state"]) == ("claude-1", "mcp", "active")
    assert [task["task_id"] for task in claude["tasks"]] == ["t1"]


def agents_json(workspace: Workspace) -> list[dict[str, object]]:
    completed = workspace.maf(workspace.main, "agents", "--json")
    assert completed.returncode == 0, completed.stderr
    listed: list[dict[str, object]] = json.loads(completed.stdout)
    return listed


def test_an_agent_holding_many_tasks_keeps_the_table_narrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_maf.cli import main

    monkeypatch.chdir(tmp_path)
    with open_store(tmp_path / ".maf" / "runtime.db", create=True) as store:
        for n in range(50):
            tasks.add_task(store, task_id=f"task-number-{n:02}")
            tasks.claim_task(store, f"task-number-{n:02}", "busy", HOUR_MS)
        reservations.acquire(store, [f"src/module_{n}/**" for n in range(20)], "busy", HOUR_MS)
        tasks.add_task(store, task_id="idle-task")
        tasks.claim_task(store, "idle-task", "idle", HOUR_MS)
    capsys.readouterr()

    assert main(["agents"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) < 200, lines
    busy = next(line for line in lines if line.startswith("busy "))
    assert "task-number-00 (LEASED), task-number-01 (LEASED), task-number-02 (LEASED) +47 more" in busy
    assert "+17 more" in busy
    assert main(["agents", "--json"]) == 0
    (held,) = [agent for agent in json.loads(capsys.readouterr().out) if agent["agent_id"] == "busy"]
    assert len(held["tasks"]) == 50 and len(held["reservations"]) == 20  # --json keeps them all
