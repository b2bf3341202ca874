"""`maf status` and `maf history` as data: a store with known contents, read back as a person checks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_maf import evidence, mail, reservations, tasks
from pytest_maf.clock import ManualClock
from pytest_maf.errors import NotFoundError, UsageError
from pytest_maf.guard import record_override
from pytest_maf.history import history
from pytest_maf.records import Escalation
from pytest_maf.reservations import check_paths
from pytest_maf.status import DAY_MS, relative_time, status_snapshot
from pytest_maf.store import Store, Transaction
from pytest_maf.values import parse_duration

MINUTE = 60_000


def override(store: Store, agent: str, path: str, reason: str) -> None:
    """What `git commit` under MAF_GUARD_OVERRIDE records: ``agent`` commits ``path`` past its holders."""
    blocks = check_paths(store, [path], agent)
    assert blocks, f"nothing holds {path}"
    assert record_override(store, agent, blocks, reason, content=f"tree:{path}") is not None


def test_status_shows_each_holder_with_its_expiry_and_what_was_overridden(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    for task_id in ("fix-1", "fix-2", "fix-3"):
        tasks.add_task(store, task_id=task_id)
    first = tasks.claim_task(store, "fix-1", "claude-1", 10 * MINUTE)
    second = tasks.claim_task(store, "fix-2", "gemini-2", 30 * MINUTE)
    tasks.start_task(store, "fix-2", "gemini-2", second.attempt)
    reservations.acquire(store, ["src/app/**"], "claude-1", 20 * MINUTE, reason="models", task_id="fix-1")
    reservations.acquire(store, ["docs/*.md"], "gemini-2", 5 * MINUTE, exclusive=False)
    reservations.acquire(store, ["tests/**"], "gemini-2", 15 * MINUTE)
    clock.advance(2 * MINUTE)
    override(store, "gemini-2", "src/app/models.py", "hotfix for the release")
    reservations.force_release(store, ["tests/**"], "lead", "gemini-2 is stuck", tmp_path / "mail")

    snapshot = status_snapshot(store, tmp_path / "mail")

    assert snapshot.tasks_by_state["READY"] == 1 and snapshot.tasks_by_state["LEASED"] == 1
    assert snapshot.tasks_by_state["RUNNING"] == 1
    leases = {lease.task_id: lease for lease in snapshot.leases}
    assert (leases["fix-1"].agent_id, leases["fix-1"].state, leases["fix-1"].attempt) == ("claude-1", "LEASED", 1)
    assert leases["fix-1"].expires_in_ms == first.lease_expires_at - clock() == 8 * MINUTE
    assert (leases["fix-2"].agent_id, leases["fix-2"].state) == ("gemini-2", "RUNNING")
    held = {(r.pattern, r.agent_id): r for r in snapshot.reservations}
    assert set(held) == {("src/app/**", "claude-1"), ("docs/*.md", "gemini-2")}  # tests/** was force-released
    assert held["src/app/**", "claude-1"].task_id == "fix-1" and held["src/app/**", "claude-1"].exclusive
    assert not held["docs/*.md", "gemini-2"].exclusive
    assert relative_time(held["docs/*.md", "gemini-2"].expires_in_ms) == "in 3m"
    by_kind = {entry.kind: entry for entry in snapshot.overrides}
    assert set(by_kind) == {"override", "force_release"}
    assert by_kind["override"].agent == "gemini-2"
    assert by_kind["override"].data["holders"] == [["claude-1", "src/app/**"]]
    assert by_kind["override"].data["reason"] == "hotfix for the release"
    assert "claude-1's src/app/**" in by_kind["override"].summary
    assert (by_kind["force_release"].agent, by_kind["force_release"].data["holder"]) == ("lead", "gemini-2")
    assert "gemini-2 is stuck" in by_kind["force_release"].summary
    mailed = {count.agent: (count.unread, count.queued) for count in snapshot.mail}
    # gemini-2 was told of the force-release; the override's notice to claude-1 waits for the next command
    assert mailed == {"claude-1": (0, 1), "gemini-2": (1, 0)}


def test_status_forgets_overrides_after_a_day_and_shows_an_expired_lease_as_expired(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    tasks.add_task(store, task_id="fix-1")
    tasks.claim_task(store, "fix-1", "claude-1", MINUTE)
    reservations.acquire(store, ["src/**"], "claude-1", 2 * DAY_MS)
    override(store, "gemini-2", "src/a.py", "urgent")
    clock.advance(DAY_MS + 1)

    snapshot = status_snapshot(store, None)

    assert snapshot.overrides == []
    (lease,) = snapshot.leases
    assert lease.agent_id == "claude-1" and relative_time(lease.expires_in_ms) == "expired"
    assert history(store, kinds=["override"])[0].data["reason"] == "urgent"


def test_status_shows_the_last_preflight_run_and_why_it_failed(store: Store, clock: ManualClock) -> None:
    older = tasks.add_and_claim_task(store, "ci", MINUTE, kind="preflight", payload={"agent": "ci"}, start=True)
    clock.advance(1000)
    run = tasks.add_and_claim_task(store, "claude-1", MINUTE, kind="preflight", payload={"agent": "claude-1"}, start=True)
    evidence.record_evidence_batch(store, run.task_id, run.attempt, [
        ("checks/test_env.py::test_python", "PASS", {}),
        ("checks/test_env.py::test_database", "FAIL", {"message": "connection refused", "severity": "critical"}),
    ], agent_id="claude-1")
    tasks.begin_verification(store, run.task_id, "claude-1", run.attempt)
    tasks.finish_task(store, run.task_id, "claude-1", run.attempt)

    snapshot = status_snapshot(store, None)

    preflight = snapshot.preflight
    assert snapshot.preflight_by_state == {"RUNNING": 1, "DEAD": 1}  # the older run is still running
    assert snapshot.tasks_by_state["RUNNING"] == 1 and snapshot.tasks_by_state["DEAD"] == 1
    assert preflight is not None and preflight.task_id == run.task_id != older.task_id
    assert (preflight.agent, preflight.passed, preflight.failed) == ("claude-1", 1, 1)
    (failure,) = preflight.failures
    assert failure.verifier == "checks/test_env.py::test_database"
    assert failure.details["message"] == "connection refused"



def test_evidence_and_events_stored_in_an_unexpected_shape_are_shown_not_fatal(store: Store, clock: ManualClock) -> None:
    from pytest_maf.cli.views import Paint, render_status
    from pytest_maf.records import Evidence
    from pytest_maf.report import gather_report
    from pytest_maf.report_html import render_report

    run = tasks.add_and_claim_task(store, "ci", MINUTE, kind="preflight", payload={"agent": "ci"}, start=True)
    damaged: list[object] = ["connection refused", [1, 2], None]  # what a hand edit or an older writer may leave

    def damage(transaction: Transaction) -> None:
        for number, details in enumerate(damaged):
            transaction.insert_evidence(Evidence(run.task_id, run.attempt, f"check-{number}", "FAIL", details))  # type: ignore[arg-type]
        transaction.insert_event(run.task_id, "verify", None)  # type: ignore[arg-type]

    store.write(damage)

    snapshot = status_snapshot(store, None)
    page = render_report(gather_report(store))

    assert snapshot.preflight is not None and snapshot.preflight.failed == 3
    assert [row.details for row in snapshot.preflight.failures] == [{"value": value} for value in damaged]
    assert "  FAIL check-0" in "\n".join(render_status(snapshot, Paint(False)))
    assert page.count("data-testid=failure-detail") == 3 and "connection refused" in page


def test_status_counts_unread_and_queued_mail_per_agent(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    first = mail.send(root, "lead", "claude-1", "rebase", "please", 1)
    mail.send(root, "lead", "claude-1", "and", "test", 2)
    mail.acknowledge(root, first["id"], "claude-1", 3)
    store.write(lambda t: t.enqueue_mail({"id": mail.new_message_id(), "to": "gemini-2", "type": "NOTE"}))

    counts = {count.agent: (count.unread, count.queued) for count in status_snapshot(store, root).mail}

    assert counts == {"claude-1": (1, 0), "gemini-2": (0, 1)}


def test_history_merges_tasks_reservations_and_escalations_newest_first(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    tasks.add_task(store, task_id="fix-1")
    clock.advance(1000)
    tasks.claim_task(store, "fix-1", "claude-1", MINUTE)
    clock.advance(1000)
    reservations.acquire(store, ["src/**"], "claude-1", 10 * MINUTE)
    clock.advance(MINUTE)
    tasks.reclaim_expired_leases(store)
    clock.advance(1000)
    reservations.force_release(store, ["src/**"], "lead", "claude-1 went quiet", tmp_path / "mail")
    clock.advance(1000)
    store.write(lambda t: t.put_escalation(_escalation("esc-1", clock())))
    store.write(lambda t: t.insert_escalation_event("esc-1", "open", {"level": 1, "target": "lead"}))

    trail = history(store)

    assert [(entry.source, entry.kind) for entry in trail] == [
        ("escalation", "open"), ("reservation", "force_release"), ("task", "expire"),
        ("reservation", "acquire"), ("task", "claim"), ("task", "add"),
    ]
    assert [entry.ts for entry in trail] == sorted((entry.ts for entry in trail), reverse=True)
    expired = trail[2]
    assert (expired.agent, expired.task_id) == ("claude-1", "fix-1")
    assert "claude-1's lease on fix-1 expired" in expired.summary
    assert trail[0].agent == "claude-1" and trail[0].data["bead"] == "fix-1"
    assert trail[0].to_json()["ts"].endswith("Z")

    assert [e.kind for e in history(store, agent="lead")] == ["open", "force_release"]  # lead: actor and target
    assert [e.kind for e in history(store, agent="claude-1", kinds=["force_release", "claim"])] == [
        "force_release", "claim"  # forced from claude-1: whose reservation it was
    ]
    assert [e.kind for e in history(store, task="fix-1", limit=2)] == ["open", "expire"]
    assert [e.kind for e in history(store, within_ms=1500)] == ["open", "force_release"]
    clock.advance(1000)
    assert history(store, agent="claude-1", within_ms=500) == []  # known, merely quiet


def _escalation(escalation_id: str, now: int) -> Escalation:
    return Escalation(escalation_id, "claude-1", "fix-1", "lead", 1, "active", "tests hang", now, now)



def test_history_of_a_task_holds_every_event_of_the_reservations_tied_to_it(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    tasks.add_task(store, task_id="fix-1")
    tasks.claim_task(store, "fix-1", "claude-1", MINUTE // 2)  # tied reservations last exactly as long
    reservations.acquire(store, ["src/**", "docs/**", "lib/**"], "claude-1", MINUTE, task_id="fix-1")
    clock.advance(1000)
    reservations.renew(store, ["src/**"], "claude-1", 10 * MINUTE)
    reservations.release(store, ["docs/**"], "claude-1")
    reservations.force_release(store, ["src/**"], "lead", "claude-1 went quiet", tmp_path / "mail")
    clock.advance(MINUTE)  # lib/** runs out, with the lease
    reservations.acquire(store, ["other/**"], "gemini-2", MINUTE)  # reclaims the expired one on its way

    trail = history(store, task="fix-1", kinds=["renew", "release", "expire", "force_release"])

    assert sorted((entry.kind, entry.data["pattern"]) for entry in trail) == [
        ("expire", "lib/**"), ("force_release", "src/**"), ("release", "docs/**"), ("renew", "src/**"),
    ]
    assert {entry.task_id for entry in trail} == {"fix-1"}


def test_history_of_a_task_holds_the_override_of_its_reservation(store: Store) -> None:
    tasks.add_task(store, task_id="fix-1")
    tasks.claim_task(store, "fix-1", "claude-1", 60 * MINUTE)
    reservations.acquire(store, ["src/**"], "claude-1", 30 * MINUTE, task_id="fix-1")
    override(store, "gemini-2", "src/app.py", "hotfix")

    (overridden,) = history(store, task="fix-1", kinds=["override"])

    assert overridden.task_id == "fix-1" and overridden.agent == "gemini-2" and overridden.data["reason"] == "hotfix"


def test_history_refuses_what_names_nothing(store: Store) -> None:
    tasks.add_task(store, task_id="fix-1")
    tasks.claim_task(store, "fix-1", "Claude-1", MINUTE)

    with pytest.raises(NotFoundError, match="agent 'claude-1' appears nowhere"):
        history(store, agent="claude-1")  # ids are case-sensitive
    with pytest.raises(NotFoundError, match="no task 'fix-9'"):
        history(store, task="fix-9")
    with pytest.raises(UsageError, match="unknown event kind 'claimed'"):
        history(store, kinds=["claimed"])
    with pytest.raises(UsageError, match="agent id"):
        history(store, agent="a/b")
    assert [e.kind for e in history(store, agent="Claude-1")] == ["claim"]


def test_an_agent_named_inside_another_text_is_not_matched(store: Store) -> None:
    reservations.acquire(store, ["src/**"], "a", MINUTE, reason='held by "agent":"b"')
    reservations.acquire(store, ["docs/**"], "b", MINUTE)

    assert [e.data["pattern"] for e in history(store, agent="b")] == ["docs/**"]


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("30m", 1_800_000), ("2h", 7_200_000), ("1d", DAY_MS),
                                          ("1h30m", 5_400_000), ("45", 45_000), ("1.5h", 5_400_000)])
def test_a_duration_is_read_as_people_write_it(text: str, ms: int) -> None:
    assert parse_duration("--since", text) == ms


@pytest.mark.parametrize("text", ["", "h", "-1h", "1y", "1e9d", "2 hours", "99999999999999d"])
def test_a_duration_that_is_not_one_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="--since"):
        parse_duration("--since", text)


def test_an_unreadable_inbox_is_named_and_the_rest_still_shown(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    mail.send(root, "lead", "claude-1", "rebase", "please", 1)
    (root / "messages" / "gemini-2").mkdir(parents=True)
    (root / "messages" / "gemini-2" / "msg-planted.json").write_text("not json")
    tasks.add_task(store, task_id="fix-1")

    snapshot = status_snapshot(store, root)

    counts = {count.agent: count for count in snapshot.mail}
    assert counts["claude-1"].unread == 1 and counts["claude-1"].problem is None
    assert counts["gemini-2"].problem is not None and "msg-planted.json" in counts["gemini-2"].problem
    assert snapshot.tasks_by_state["READY"] == 1
