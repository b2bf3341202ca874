"""The operations commands under faults: slow scrapers, Ctrl-C, long histories, stuck processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_maf import audit, loadtest, metrics, reservations, tasks
from pytest_maf.clock import ManualClock
from pytest_maf.config import load_settings
from pytest_maf.records import ReservationEvent
from pytest_maf.store import open_store, setup_store
from workspace import isolated_env, maf_command

DEADLINE_S = 30


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """`maf metrics serve` on a free loopback port, in this process; its /metrics URL."""
    (tmp_path / ".git").mkdir()
    settings = load_settings(environ={}, cwd=tmp_path)
    setup_store(settings.db_path)
    server = metrics.metrics_server(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_an_idle_connection_does_not_stall_the_next_scrape(served: str) -> None:
    port = int(served.split(":")[2].split("/")[0])
    idle = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)  # sends nothing at all
    half = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    half.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never finishes its request
    try:
        with urllib.request.urlopen(served, timeout=3) as answer:
            status, body = answer.status, answer.read().decode()
    finally:
        idle.close()
        half.close()

    assert status == 200
    assert "maf_tasks" in body


def test_an_idle_connection_is_dropped_after_the_timeout(monkeypatch: pytest.MonkeyPatch, served: str) -> None:
    monkeypatch.setattr(metrics.MetricsRequestHandler, "timeout", 0.3)
    port = int(served.split(":")[2].split("/")[0])
    idle = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    try:
        assert idle.recv(1) == b""  # the server closed it (recv would wait out DEADLINE_S otherwise)
    finally:
        idle.close()


def test_a_scrape_of_a_store_gone_missing_is_answered_with_one_line_and_the_server_goes_on(
    tmp_path: Path, served: str, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / ".maf" / "runtime.db"
    moved = tmp_path / "moved.db"
    db.rename(moved)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(served, timeout=5)
    moved.rename(db)
    with urllib.request.urlopen(served, timeout=5) as answer:
        assert answer.status == 200

    assert refused.value.code == 503
    assert b"no runtime database" in refused.value.read()
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert err.count("maf: metrics:") == 1


def load_test_history(events: int, agents: int = 10) -> list[ReservationEvent]:
    """Reservation events as `maf load-test` makes them: rounds of every agent holding a pattern at once."""
    history: list[ReservationEvent] = []
    ts = round_number = 0
    while len(history) < events:
        held = []
        for number in range(agents):
            slot = (round_number + number) % agents
            held.append((f"load-{number}", f"shared/module{slot}/**" if slot % 2 else f"own/load-{number}/**"))
        for kind in ("acquire", "release"):
            for agent, pattern in held:
                ts += 1
                data = {"pattern": pattern, "exclusive": True, "expires_at": ts + 60_000} if kind == "acquire" else {"pattern": pattern}
                history.append(ReservationEvent(len(history) + 1, ts, kind, agent, data))
        round_number += 1
    return history


def test_the_reservation_audit_grows_linearly_with_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    comparisons = 0
    overlaps_decided = 0
    compare, decide = audit.clash, audit.overlap_witness

    def counted_clash(*args: Any) -> bool:
        nonlocal comparisons
        comparisons += 1
        return compare(*args)

    def counted_overlap(left: str, right: str) -> str | None:
        nonlocal overlaps_decided
        overlaps_decided += 1
        return decide(left, right)

    monkeypatch.setattr(audit, "clash", counted_clash)
    monkeypatch.setattr(audit, "overlap_witness", counted_overlap)
    counts = {}
    for events in (10_000, 20_000):
        comparisons = overlaps_decided = 0
        assert audit.reservation_clashes(load_test_history(events)) == []
        counts[events] = (comparisons, overlaps_decided)

    holdings = 20_000 // 2
    assert counts[20_000][0] <= 10 * holdings  # each holding meets at most the nine others held with it
    assert counts[20_000][0] <= 2.1 * counts[10_000][0]  # twice the history, twice the work (not four times)
    assert counts[20_000][1] == counts[10_000][1] <= 20 * 20  # each pair of patterns decided once


def test_the_audit_finds_a_planted_double_grant_and_a_planted_overlapping_holding(tmp_path: Path) -> None:
    db = tmp_path / "load.db"
    clock = ManualClock(1_700_000_000_000)
    with open_store(db, create=True, clock=clock) as store:
        tasks.add_task(store, task_id="t1", kind=loadtest.KIND)
        tasks.claim_task(store, "t1", "load-a", 60_000)
        reservations.acquire(store, ["src/**"], "load-a", 60_000)
    clean = loadtest.check_invariants(db)

    with open_store(db, clock=clock) as store:
        clock.advance(1_000)
        expires = clock() + 60_000
        store.write(lambda t: t.insert_event(
            "t1", "claim", {"from": "LEASED", "to": "LEASED", "agent": "load-b", "attempt": 2, "lease_expires_at": expires}
        ))
        store.write(lambda t: t.insert_reservation_event(
            "acquire", "load-b", {"pattern": "src/app.py", "exclusive": True, "expires_at": expires}
        ))
    planted = loadtest.check_invariants(db)

    assert clean["ok"] is True
    assert planted["ok"] is False
    assert planted["no_double_grant_or_stale_operation"]["problems"] == ["t1: claimed by load-b while load-a held it"]
    assert planted["no_overlapping_exclusive_reservations"]["problems"] == ["load-a:src/** and load-b:src/app.py"]
    assert planted["no_lost_task"]["ok"] and planted["integrity"]["ok"]


def test_a_process_that_does_not_stop_is_stopped_by_the_parent() -> None:
    context = multiprocessing.get_context("spawn")
    stuck = context.Process(target=time.sleep, args=(600,), daemon=True)
    stuck.start()

    stopped = loadtest._stop([stuck], deadline=time.time() + 0.2)

    assert stopped == 1
    assert not stuck.is_alive()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ctrl_c_stops_a_load_test_with_one_line_and_removes_its_scratch_database(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (tmp_path / "home").mkdir()
    env = isolated_env(tmp_path / "home", {"TMPDIR": str(scratch)})
    run = subprocess.Popen(
        [*maf_command(), "load-test", "--concurrent", "4", "--duration", "120"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not list(scratch.glob("maf-load-*/load.db-wal")):  # the processes are writing
            assert time.monotonic() < deadline and run.poll() is None, run.stderr.read() if run.stderr else ""
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(run.pid, signal.SIGINT)  # as a terminal does: to every process of the group
        out, err = run.communicate(timeout=DEADLINE_S)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=DEADLINE_S)

    assert run.returncode == 130
    assert err == "maf: interrupted\n"
    assert out == ""
    assert list(scratch.iterdir()) == []
    deadline = time.monotonic() + DEADLINE_S
    while group_alive(run.pid):  # no worker is left behind
        assert time.monotonic() < deadline, "processes of the load test outlived it"
        time.sleep(0.1)


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:5432/postgres", "mysql://db/x"])
def test_load_test_refuses_a_url_for_its_sqlite_file_and_makes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    from pytest_maf.cli import main

    monkeypatch.chdir(tmp_path)

    assert main(["load-test", "--database", url, "--duration", "1"]) == 2

    assert "takes a file path, not a URL" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_metrics_answer_a_head_without_a_body_and_no_other_path(served: str) -> None:
    head = urllib.request.urlopen(urllib.request.Request(served, method="HEAD"), timeout=DEADLINE_S)
    scraped = urllib.request.urlopen(served, timeout=DEADLINE_S).read()

    assert head.status == 200 and head.read() == b""
    assert int(head.headers["Content-Length"]) > 0 and b"maf_tasks" in scraped
    for wrong in ("/", "/metricz", "/metrics/extra"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(served.replace("/metrics", wrong), timeout=DEADLINE_S)
        assert refused.value.code == 404


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_metrics_serve_on_an_ipv6_address(tmp_path: Path, host: str) -> None:
    (tmp_path / ".git").mkdir()
    settings = load_settings(environ={}, cwd=tmp_path)
    setup_store(settings.db_path)
    server = metrics.metrics_server(settings, host, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scraped = urllib.request.urlopen(f"http://[::1]:{server.server_port}/metrics", timeout=DEADLINE_S).read()
    finally:
        server.shutdown()
        server.server_close()
    assert b"maf_tasks" in scraped
