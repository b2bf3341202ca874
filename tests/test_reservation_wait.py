"""`maf reservation acquire --wait`: a request that conflicts waits for the holder's release."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from backends import open_shared_store, shared_store
from pytest_maf import reservations
from pytest_maf.cli import main
from pytest_maf.errors import UsageError
from pytest_maf.records import Reservation
from pytest_maf.store import Store

TTL_MS = 30 * 60_000
WAIT_S = 30.0  # far longer than any wake-up takes: a waiter still blocked after it failed


def release_later(store: Store, patterns: list[str], agent_id: str, after_s: float = 1.0) -> threading.Thread:
    """The holder releases ``patterns`` after ``after_s``, on a connection of its own."""

    def run() -> None:
        time.sleep(after_s)
        with store.reopen() as own:
            reservations.release(own, patterns, agent_id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_waiting_request_is_granted_once_the_holder_releases(store: Store) -> None:
    reservations.acquire(store, ["src/**"], "holder", TTL_MS)
    releaser = release_later(store, ["src/**"], "holder")
    started = time.monotonic()

    (granted,) = reservations.acquire_waiting(store, ["src/app.py"], "waiter", TTL_MS, timeout_s=WAIT_S)

    assert time.monotonic() - started >= 0.9  # not before the release
    releaser.join()
    assert (granted.agent_id, granted.pattern) == ("waiter", "src/app.py")
    assert [r.agent_id for r in reservations.list_reservations(store)] == ["waiter"]
    conflicts = store.read(lambda transaction: transaction.reservation_events("conflict"))
    assert len(conflicts) == 1  # the wait looks read-only: one conflict recorded, not one per look


def test_a_wait_that_runs_out_raises_the_conflicts_and_grants_nothing(store: Store) -> None:
    reservations.acquire(store, ["src/**"], "holder", TTL_MS)
    with pytest.raises(reservations.ReservationConflictError, match="after waiting 0.3 s") as raised:
        reservations.acquire_waiting(store, ["src/app.py", "/docs/"], "waiter", TTL_MS, timeout_s=0.3)
    assert [(c.requested, c.holder.agent_id) for c in raised.value.conflicts] == [("src/app.py", "holder")]
    assert [r.agent_id for r in reservations.list_reservations(store)] == ["holder"]
    with pytest.raises(UsageError):
        reservations.acquire_waiting(store, ["src/app.py"], "waiter", TTL_MS, timeout_s=float("nan"))


@pytest.fixture
def configured(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store on ``backend`` that `maf` commands run in ``tmp_path`` use; a handle on it."""
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_DB_PATH", "MAF_DATABASE_URL", "MAF_DATABASE_SCHEMA", "MAF_AGENT_MAIL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    with shared_store(backend, tmp_path) as (location, environment):
        if backend == "sqlite":
            monkeypatch.setenv("MAF_DB_PATH", location)
        else:
            monkeypatch.setenv("MAF_DATABASE_URL", location)
            monkeypatch.setenv("MAF_DATABASE_SCHEMA", environment["MAF_TEST_SCHEMA"])
        with open_shared_store(location, environment) as store:
            yield store


def test_the_command_waits_for_the_release_and_reserves(
    configured: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    reservations.acquire(configured, ["src/**"], "holder", TTL_MS)
    releaser = release_later(configured, ["src/**"], "holder")

    code = main(["reservation", "acquire", "src/app.py", "--agent", "waiter", "--wait", "--timeout", str(WAIT_S)])

    releaser.join()
    assert code == 0
    assert "reserved src/app.py (exclusive) for waiter" in capsys.readouterr().out
    live: list[Reservation] = reservations.list_reservations(configured)
    assert [r.agent_id for r in live] == ["waiter"]


def test_the_command_exits_1_with_the_conflicts_when_the_wait_runs_out(
    configured: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    reservations.acquire(configured, ["src/**"], "holder", TTL_MS, reason="refactor")

    code = main(["reservation", "acquire", "src/app.py", "--agent", "waiter", "--wait", "--timeout", "0.3"])

    assert code == 1
    err = capsys.readouterr().err
    assert "after waiting 0.3 s" in err and "src/**" in err and "holder" in err
    assert main(["reservation", "acquire", "x", "--agent", "waiter", "--timeout", "1"]) == 2  # --timeout needs --wait


def test_on_postgresql_a_release_wakes_a_waiter_at_once(store: Store) -> None:
    if store.backend != "postgresql":
        pytest.skip("SQLite has no signal: its waiters look again, a second apart at most")
    reservations.acquire(store, ["src/**"], "holder", TTL_MS)
    with store.reopen() as listener:
        listener.wait_for_work(0, "released")  # starts listening
        woke = threading.Event()
        waiter = threading.Thread(
            target=lambda: (listener.wait_for_work(WAIT_S, "released"), woke.set()), daemon=True
        )
        waiter.start()

        reservations.release(store, ["src/**"], "holder")

        assert woke.wait(WAIT_S / 2), "the release's NOTIFY did not wake the waiter"
        waiter.join(WAIT_S)
