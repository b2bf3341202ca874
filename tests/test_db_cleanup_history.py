"""`maf db cleanup` prunes old reservation and escalation history too, on both backends, and no
`maf metrics` counter goes down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends import backend_store, maf_on_store
from pytest_maf import escalation, reservations, tasks
from pytest_maf.clock import ManualClock, system_clock
from pytest_maf.config import load_settings
from pytest_maf.store import Store

DAY_MS = 24 * 60 * 60_000


def counter_totals(root: Path, store: Store) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    scraped = maf_on_store(root, store, "metrics")
    assert scraped.returncode == 0, scraped.stderr
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.stdout)
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def history(store: Store) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """The reservation events (agent, kind) and each escalation's event kinds."""
    def read(transaction: object) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
        found = [(event.agent_id, event.kind) for event in transaction.reservation_events()]  # type: ignore[attr-defined]
        kinds = {
            item.bead_id: [event["kind"] for event in transaction.escalation_events(item.id)]  # type: ignore[attr-defined]
            for item in transaction.escalations()  # type: ignore[attr-defined]
        }
        return sorted(found), kinds

    return store.read(read)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "home").mkdir()
    return tmp_path


def test_cleanup_prunes_old_reservation_and_closed_escalation_events_and_keeps_every_total(
    backend: str, root: Path
) -> None:
    clock = ManualClock(system_clock() - 60 * DAY_MS)  # two months ago: past a 30-day window
    settings = load_settings(environ={}, cwd=root)
    with backend_store(backend, root / "store", clock=clock) as store:
        reservations.acquire(store, ["src/**"], "alice", 60_000)
        with pytest.raises(reservations.ReservationConflictError):
            reservations.acquire(store, ["src/x.py"], "bob", 60_000)
        reservations.release(store, ["src/**"], "alice")
        reservations.acquire(store, ["docs/**"], "carol", 60_000)
        reservations.force_release(store, ["docs/**"], "lead", "stuck", settings.mail_root)
        closed = escalation.escalate(store, settings, agent_id="alice", bead_id="old-closed", error_context="x",
                                     target="codex-senior")
        escalation.close_escalation(store, closed.escalation.id, by="alice")
        escalation.escalate(store, settings, agent_id="alice", bead_id="old-open", error_context="x",
                            target="codex-senior")
        tasks.add_task(store, task_id="old-task")
        tasks.cancel_task(store, "old-task")
        clock.advance(59 * DAY_MS)  # yesterday: inside the window
        reservations.acquire(store, ["lib/**"], "dave", 60_000)
        recent = escalation.escalate(store, settings, agent_id="bob", bead_id="recent-closed", error_context="y",
                                     target="codex-senior")
        escalation.close_escalation(store, recent.escalation.id, by="bob")
        before_rows = history(store)
        before = counter_totals(root, store)

        dry = maf_on_store(root, store, "db", "cleanup", "--days", "30", "--json")
        assert dry.returncode == 0, dry.stderr
        assert history(store) == before_rows  # a dry run deletes nothing
        applied = maf_on_store(root, store, "db", "cleanup", "--days", "30", "--apply", "--json")
        assert applied.returncode == 0, applied.stderr
        text = maf_on_store(root, store, "db", "cleanup", "--days", "30", "--apply")  # nothing left to fold twice

        counted = json.loads(applied.stdout)
        assert json.loads(dry.stdout) == {**counted, "applied": False}
        assert (counted["reservation_events"], counted["escalation_events"]) == (5, 2)
        assert (counted["tasks"], counted["events"]) == (1, 2)
        assert text.returncode == 0 and "0 reservation events and 0 events of closed escalations" in text.stdout
        reservation_rows, escalation_rows = history(store)
        assert reservation_rows == [("dave", "acquire")]
        assert escalation_rows == {"old-closed": [], "old-open": ["open"], "recent-closed": ["open", "resolved"]}
        after = counter_totals(root, store)

    assert before[("maf_reservation_operations_total", (("op", "force_release"),))] == 1
    assert before[("maf_reservation_conflicts_total", ())] == 1
    assert after == before  # a counter never goes down: Prometheus would read a reset
