"""`maf load-test` and `maf bench` from the shell."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_maf.bench import compare
from pytest_maf.cli import main
from pytest_maf.loadtest import grace_s


@pytest.mark.slow
def test_load_test_reports_every_operation_and_holds_the_invariants(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    database = tmp_path / "load.db"

    code = main(["load-test", "--concurrent", "2", "--duration", "1", "--json", "--database", str(database)])
    report = json.loads(capsys.readouterr().out)

    assert code == 0
    assert report["invariants"]["ok"] is True
    for name in ("claim", "renew", "start", "verify", "evidence", "finish", "reserve", "release"):
        stats = report["operations"][name]
        assert stats["count"] > 0 and stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    assert report["errors"] == {}
    assert database.is_file()
    timing = report["timing"]
    assert timing["processes_stopped_by_parent"] == 0  # each stopped at the deadline by itself
    assert 0 <= timing["last_stop_after_deadline_s"] <= grace_s(1.0)
    finished = report["operations"]["finish"]
    assert finished["per_s"] == pytest.approx(finished["count"] / timing["measured_s"], rel=0.01)  # per measured second
    # the processor time of both processes from the shared start: some, and no more than the run had to give
    assert 0 < timing["cpu_s"] <= timing["run_s"] * (os.cpu_count() or 1)
    assert report["cpu_ms_per_cycle"] == pytest.approx(timing["cpu_s"] * 1000 / finished["count"], rel=0.01)
    turn = report["writers_turn"]
    assert turn["turns"] >= sum(stats["count"] for stats in report["operations"].values())  # a turn a write at least
    assert 0 < turn["held_share"] <= 1  # one process at a time holds it, within the measured time
    assert turn["held_share"] == pytest.approx(turn["turns"] * turn["held_ms_each"] / 1000 / timing["measured_s"], rel=0.01)
    assert turn["waited_ms_each"] >= 0


def test_a_load_test_too_short_to_measure_is_refused_before_it_writes_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["load-test", "--concurrent", "1", "--duration", "0.0001", "--database", str(tmp_path / "load.db")])

    # Before: a "pass" with no operation started in 100 µs, every invariant "ok" over nothing.
    assert code == 2
    assert "--duration must be a number of seconds from 0.1 (a shorter run measures nothing)" in capsys.readouterr().err
    assert not (tmp_path / "load.db").exists()


def test_bench_comparison_flags_ratios_above_the_threshold() -> None:
    baseline = {"metrics": {"claim": 1.0, "guard": 10.0, "gone": 3.0}}
    current = {"metrics": {"claim": 1.2, "guard": 13.0, "new": 1.0}}

    rows = {row["metric"]: row for row in compare(baseline, current, threshold=1.25)}

    assert rows["claim"]["ratio"] == 1.2 and not rows["claim"]["regression"]
    assert rows["guard"]["ratio"] == 1.3 and rows["guard"]["regression"]
    assert set(rows) == {"claim", "guard"}


@pytest.mark.slow
def test_bench_records_a_baseline_and_compares_against_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    assert main(["bench", "--output", str(baseline)]) == 0
    recorded = json.loads(baseline.read_text())
    assert set(recorded["metrics"]) >= {"claim_to_finish_cycle", "guard_1000_paths_5000_reservations", "escalation_open"}

    slow = {**recorded, "metrics": {name: value / 100 for name, value in recorded["metrics"].items()}}
    baseline.write_text(json.dumps(slow))
    capsys.readouterr()
    assert main(["bench", "--compare", str(baseline)]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_a_reservation_taken_just_before_the_deadline_is_released(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Else a second `maf load-test` on the same --database refused it: "holds 1 live reservation"."""
    import queue
    import signal
    import time

    from pytest_maf import loadtest, reservations, tasks
    from pytest_maf.store import open_store

    database = tmp_path / "load.db"
    open_store(database, create=True).close()  # as `maf load-test` makes it
    stop_at = time.time() + 1.0
    acquire = reservations.acquire

    def acquire_then_reach_the_deadline(*args: object, **kwargs: object) -> object:
        taken = acquire(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(max(0.0, stop_at - time.time()) + 0.05)  # the deadline passes between reserve and release
        return taken

    monkeypatch.setattr(reservations, "acquire", acquire_then_reach_the_deadline)
    results: queue.Queue[dict[str, object]] = queue.Queue()
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        loadtest._worker(str(database), "load-0", 1, time.time(), stop_at, 5.0, results)
    finally:  # a worker ignores Ctrl-C; this test process, and what it starts later, must not
        signal.signal(signal.SIGINT, interrupt)

    report = results.get(timeout=30)
    assert report["errors"] == {}
    with open_store(database) as store:
        assert reservations.list_reservations(store) == []
        assert tasks.list_tasks(store) == []  # the load test's own tasks are not agents' work
    loadtest.refuse_real_work(database)  # a second load test may use it
