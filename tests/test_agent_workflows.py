"""The everyday workflow of agents, through the installed `maf` command and `pytest`,
in a scratch repository with two worktrees: leases that last the work, and
pytest-maf's own tasks never handed to an agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from workspace import DEADLINE_S, Workspace, maf_command

VERIFIER = """\
def test_the_fix():
    assert 1 + 1 == 2
"""


def ok(completed: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert completed.returncode == 0, (completed.stdout, completed.stderr)
    return completed


def task_state(workspace: Workspace, task_id: str) -> str:
    shown = ok(workspace.maf(workspace.main, "task", "show", task_id, "--json"))
    return str(json.loads(shown.stdout)["task"]["state"])


@pytest.mark.slow
def test_the_readme_workflow_outlives_the_lease_length_between_steps(workspace: Workspace) -> None:
    # An 11 s lease with 6 s pauses: the pauses alone outlast one lease, and the
    # workflow passes only because every step of the holder extends it (5 s are
    # left for each command to start, even on a machine busy with other tests).
    lease_s, pause_s = 11, 6
    short = {"MAF_TASK_LEASE_TTL": str(lease_s)}
    tree = workspace.second
    workspace.write(tree, "tests/test_fix.py", VERIFIER)
    ok(workspace.maf(tree, "task", "add", "--id", "fix-42", "--priority", "10"))
    claimed = json.loads(ok(workspace.maf(tree, "task", "claim", "--json", agent="claude-1", **short)).stdout)
    assert (claimed["task_id"], claimed["attempt"]) == ("fix-42", 1)
    started = time.monotonic()
    time.sleep(pause_s)
    ok(workspace.maf(tree, "task", "start", "fix-42", "--attempt", "1", agent="claude-1", **short))
    time.sleep(pause_s)
    run = workspace.pytest(tree, "--maf-task", "fix-42", "tests/test_fix.py", agent="claude-1", **short)

    assert time.monotonic() - started > lease_s  # longer than one lease
    assert run.returncode == 0, run.stdout + run.stderr
    assert "COMMITTED -> DONE" in run.stdout
    assert task_state(workspace, "fix-42") == "DONE"


def test_a_holder_that_stays_silent_past_its_lease_loses_it(workspace: Workspace) -> None:
    short = {"MAF_TASK_LEASE_TTL": "1"}
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1", **short))
    time.sleep(1.5)

    late = workspace.maf(workspace.main, "task", "start", "fix-42", "--attempt", "1", agent="claude-1")

    assert late.returncode == 4
    assert "expired" in late.stderr and "Traceback" not in late.stderr


def test_heartbeat_is_one_short_command(workspace: Workspace) -> None:
    for task_id in ("a", "b"):
        ok(workspace.maf(workspace.main, "task", "add", "--id", task_id))
        ok(workspace.maf(workspace.main, "task", "claim", "--ttl", "60", agent="claude-1"))
    before = {row["task_id"]: row["lease_expires_at"] for row in (
        json.loads(ok(workspace.maf(workspace.main, "task", "show", t, "--json")).stdout)["lease"] for t in ("a", "b")
    )}

    beat = ok(workspace.maf(workspace.second, "task", "heartbeat", "--json", agent="claude-1"))

    renewed = {row["task_id"]: row["lease_expires_at"] for row in json.loads(beat.stdout)}
    assert set(renewed) == {"a", "b"}
    assert all(renewed[t] > before[t] + 1_000_000 for t in renewed)  # 60 s -> the 30 min default
    other = workspace.maf(workspace.main, "task", "heartbeat", "a", agent="codex-2")
    assert other.returncode == 4 and "codex-2" in other.stderr


@pytest.mark.slow
def test_task_run_keeps_the_lease_alive_and_exits_with_the_commands_code(workspace: Workspace) -> None:
    short = {"MAF_TASK_LEASE_TTL": "4"}
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1", **short))
    script = "import os, sys, time; time.sleep(7); print(os.environ['MAF_TASK_ID'], os.environ['MAF_TASK_ATTEMPT']); sys.exit(7)"

    run = workspace.maf(workspace.second, "task", "run", "fix-42", "--", sys.executable, "-c", script, agent="claude-1", **short)

    assert run.returncode == 7, run.stderr
    assert run.stdout.split() == ["fix-42", "1"]
    # 7 seconds under a 4 s lease, and the lease is still ours.
    ok(workspace.maf(workspace.main, "task", "start", "fix-42", "--attempt", "1", agent="claude-1"))


def test_task_run_stops_the_command_when_the_lease_is_lost(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1", MAF_TASK_LEASE_TTL="2"))
    marker = workspace.home / "finished"
    # The command gives the task back (as a lead's force would), then works on as if nothing happened.
    script = textwrap.dedent(f"""
        import os, subprocess, sys, time
        subprocess.run({maf_command()!r} + ["task", "release", "fix-42", "--attempt", "1"], check=True)
        time.sleep(20)
        open({str(marker)!r}, "w").close()
    """)

    run = workspace.maf(
        workspace.main, "task", "run", "fix-42", "--", sys.executable, "-c", script,
        agent="claude-1", MAF_TASK_LEASE_TTL="2", timeout=DEADLINE_S,
    )

    assert run.returncode == 4, run.stderr
    assert "stopped" in run.stderr and "Traceback" not in run.stderr
    assert not marker.exists()


def test_task_run_refuses_a_task_the_agent_does_not_hold(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1"))
    marker = workspace.home / "ran"

    run = workspace.maf(
        workspace.second, "task", "run", "fix-42", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
        agent="codex-2",
    )

    assert run.returncode == 4 and "codex-2" in run.stderr
    assert not marker.exists()


def test_the_preflight_task_is_hidden_from_lists_and_claims(workspace: Workspace) -> None:
    ok(workspace.pytest(workspace.main, "--maf-preflight", agent="alice"))

    assert "no tasks" in ok(workspace.maf(workspace.main, "task", "list")).stdout
    every = json.loads(ok(workspace.maf(workspace.main, "task", "list", "--all", "--json")).stdout)
    assert [(t["kind"], t["state"]) for t in every] == [("preflight", "DONE")]
    assert workspace.maf(workspace.second, "task", "claim", agent="bob").returncode == 3


def test_load_test_refuses_a_store_that_holds_real_work(workspace: Workspace) -> None:
    database = workspace.home / "team.db"  # a store with work in it, not this repository's
    ok(workspace.maf(workspace.main, "--db", str(database), "setup"))
    ok(workspace.maf(workspace.main, "--db", str(database), "task", "add", "--id", "fix-42"))
    before = database.read_bytes()

    refused = workspace.maf(workspace.main, "load-test", "--database", str(database), "--duration", "1")

    assert refused.returncode == 2
    assert "1 task(s)" in refused.stderr and "scratch" in refused.stderr
    assert database.read_bytes() == before


CLAIMER = """
import json, sys, time
from pathlib import Path

from pytest_maf import tasks
from pytest_maf.errors import NothingToClaimError
from pytest_maf.store import open_store

database, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
claimed, attempts, deadline = [], 0, time.monotonic() + float(sys.argv[4])
with open_store(database) as store:
    while not stop.exists() and time.monotonic() < deadline:
        attempts += 1
        try:
            claimed.append(tasks.claim_next_task(store, "poller", 60_000).task_id)
        except NothingToClaimError:
            pass
out.write_text(json.dumps({"claimed": claimed, "attempts": attempts}))
"""


PREFLIGHT_RUNS = 8  # each a whole pytest process: a few seconds apiece on a slow machine


@pytest.mark.slow
def test_a_polling_agent_never_takes_a_preflight_run(workspace: Workspace) -> None:
    stop, out = workspace.home / "stop", workspace.home / "claims.json"
    poller = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(workspace.main / ".maf" / "runtime.db"), str(stop), str(out), "100"],
        env=workspace.env(),
    )
    try:
        runs = [workspace.pytest(workspace.main, "--maf-preflight", agent="alice") for _ in range(PREFLIGHT_RUNS)]
    finally:
        stop.touch()
        poller.wait(timeout=DEADLINE_S)

    failed = [run.stdout[-800:] for run in runs if run.returncode != 0]
    assert not failed, failed
    report = json.loads(out.read_text())
    assert report["attempts"] > PREFLIGHT_RUNS  # it really polled while the runs went on
    assert report["claimed"] == []
    every = json.loads(ok(workspace.maf(workspace.main, "task", "list", "--all", "--json")).stdout)
    assert sorted(t["state"] for t in every) == ["DONE"] * PREFLIGHT_RUNS


def test_a_reservation_tied_to_a_task_is_released_with_its_lease(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.second, "task", "claim", agent="alice"))
    ok(workspace.maf(workspace.second / "docs", "reservation", "acquire", ".", "--task", "fix-42", agent="alice"))
    workspace.stage(workspace.main, "docs/api.md")

    blocked = workspace.maf(workspace.main, "guard", agent="bob")
    listed = ok(workspace.maf(workspace.main, "reservation", "list")).stdout
    ok(workspace.maf(workspace.second, "task", "release", "fix-42", "--attempt", "1", agent="alice"))
    passed = workspace.maf(workspace.main, "guard", agent="bob")

    assert blocked.returncode == 1 and "alice" in blocked.stdout
    assert "fix-42" in listed
    assert passed.returncode == 0, passed.stdout + passed.stderr
    refused = workspace.maf(workspace.main, "reservation", "acquire", "src/", "--task", "fix-42", agent="bob")
    assert refused.returncode == 4 and "bob" in refused.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stopping_task_run_stops_its_command(workspace: Workspace, signum: int) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1"))
    started = workspace.home / "started"
    script = f"import os, pathlib, time; pathlib.Path({str(started)!r}).write_text(str(os.getpid())); time.sleep(60)"
    run = subprocess.Popen(
        [*maf_command(), "task", "run", "fix-42", "--", sys.executable, "-c", script],
        cwd=workspace.main, env=workspace.env("claude-1"), stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + DEADLINE_S
    while not (started.exists() and started.read_text()):
        assert time.monotonic() < deadline and run.poll() is None, "the command did not start"
        time.sleep(0.05)
    command_pid = int(started.read_text())

    run.send_signal(signum)

    assert run.wait(timeout=DEADLINE_S) == 128 + signum
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left running without its lease
        os.kill(command_pid, 0)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the processes below the command are found in /proc")
def test_task_run_stops_what_the_command_started_too_when_the_lease_is_lost(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1", MAF_TASK_LEASE_TTL="2"))
    pid_file = workspace.home / "worker.pid"
    # The command starts a worker of its own, gives the task back (as a lead's force would) and waits.
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        worker = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        open({str(pid_file)!r}, "w").write(str(worker.pid))
        subprocess.run({maf_command()!r} + ["task", "release", "fix-42", "--attempt", "1"], check=True)
        worker.wait()
    """)

    run = workspace.maf(
        workspace.main, "task", "run", "fix-42", "--", sys.executable, "-c", script,
        agent="claude-1", MAF_TASK_LEASE_TTL="2", timeout=DEADLINE_S,
    )

    assert run.returncode == 4, run.stderr
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(worker)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def stoppable_verification(workspace: Workspace) -> tuple[list[str], "os.PathLike[str]"]:
    """fix-42 RUNNING for claude-1, and the `pytest --maf-task` command whose second test says it has started
    and then waits (bounded) to be stopped."""
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1"))
    ok(workspace.maf(workspace.main, "task", "start", "fix-42", "--attempt", "1", agent="claude-1"))
    started = workspace.home / "started"
    workspace.write(workspace.main, "tests/test_slow.py", textwrap.dedent(f"""
        import pathlib, time

        def test_quick():
            pass

        def test_slow():
            pathlib.Path({str(started)!r}).write_text("started")
            deadline = time.monotonic() + {DEADLINE_S}
            while time.monotonic() < deadline:  # until stopped
                time.sleep(0.05)
    """))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--maf-task", "fix-42", "tests/test_slow.py"]
    return command, started


def wait_for(started: "os.PathLike[str]", process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not os.path.exists(started):
        assert time.monotonic() < deadline and process.poll() is None, "the slow test did not start"
        time.sleep(0.05)


def interrupted_and_rolled_back(workspace: Workspace) -> None:
    """The stopped run's evidence: its quick test, and the interruption, as a FAIL; the task given back."""
    assert task_state(workspace, "fix-42") == "READY"
    listed = json.loads(ok(workspace.maf(workspace.main, "evidence", "list", "--task", "fix-42", "--json")).stdout)
    rows = listed["evidence"] if isinstance(listed, dict) else listed
    assert {row["verifier"]: row["result"] for row in rows} == {
        "tests/test_slow.py::test_quick": "PASS", "verification.interrupted": "FAIL",
    }


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # a CI time limit, `kill`; a closed terminal
def test_sigterm_or_sighup_stops_a_verification_as_ctrl_c_does_and_exits_as_that_signal(
    workspace: Workspace, signum: int
) -> None:
    command, started = stoppable_verification(workspace)
    run = subprocess.Popen(
        command, cwd=workspace.main, env=workspace.env("claude-1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(started, run)

    run.send_signal(signum)

    output, _ = run.communicate(timeout=DEADLINE_S)
    name = signal.Signals(signum).name
    assert run.returncode == 128 + signum, output
    assert f"FAIL verification.interrupted: the run was interrupted ({name}): 1 check(s) did not finish" in output
    assert "task fix-42: ROLLBACK -> READY" in output
    interrupted_and_rolled_back(workspace)


def test_a_run_started_under_nohup_goes_on_through_sighup(workspace: Workspace) -> None:
    command, started = stoppable_verification(workspace)
    run = subprocess.Popen(
        command, cwd=workspace.main, env=workspace.env("claude-1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # as nohup starts it
    )
    wait_for(started, run)

    run.send_signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):
        run.wait(timeout=1.0)  # still running: the hang-up it was told to ignore stopped nothing
    run.send_signal(signal.SIGTERM)

    output, _ = run.communicate(timeout=DEADLINE_S)
    assert run.returncode == 128 + signal.SIGTERM, output
    interrupted_and_rolled_back(workspace)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_task_run_lets_its_pytest_record_the_run_before_it_ends(workspace: Workspace, signum: int) -> None:
    command, started = stoppable_verification(workspace)
    run = subprocess.Popen(
        [*maf_command(), "task", "run", "fix-42", "--", *command], cwd=workspace.main, env=workspace.env("claude-1"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    wait_for(started, run)

    run.send_signal(signum)  # to maf alone, as a supervisor stops it: the command is told the same

    output, _ = run.communicate(timeout=DEADLINE_S)
    assert run.returncode == 128 + signum, output
    assert "FAIL verification.interrupted" in output
    interrupted_and_rolled_back(workspace)


def test_a_second_ctrl_c_cutting_pytests_handling_of_the_first_short_commits_nothing(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1"))
    ok(workspace.maf(workspace.main, "task", "start", "fix-42", "--attempt", "1", agent="claude-1"))
    workspace.write(workspace.main, "tests/test_slow.py", textwrap.dedent("""
        def test_quick():
            pass

        def test_slow():
            raise KeyboardInterrupt  # the first Ctrl-C, in the middle of the run
    """))
    workspace.write(workspace.main, "tests/conftest.py", textwrap.dedent("""
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_keyboard_interrupt(excinfo):
            raise KeyboardInterrupt  # the second, landing as pytest reports the first: no other hook hears of it
    """))

    stopped = workspace.pytest(workspace.main, "--maf-task", "fix-42", "tests/test_slow.py", agent="claude-1")

    assert stopped.returncode != 0
    assert task_state(workspace, "fix-42") == "READY", stopped.stdout + stopped.stderr  # was DONE on one PASS
    interrupted_and_rolled_back(workspace)


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_sent_to_task_runs_whole_process_group_is_recorded_once(workspace: Workspace, signum: int) -> None:
    """`timeout`, a CI runner or a closed terminal signal the whole group: pytest gets the signal from
    them and again from `maf task run` passing it on, and must still record its run."""
    command, started = stoppable_verification(workspace)
    run = subprocess.Popen(
        [*maf_command(), "task", "run", "fix-42", "--", *command], cwd=workspace.main, env=workspace.env("claude-1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    wait_for(started, run)

    os.killpg(run.pid, signum)

    output, _ = run.communicate(timeout=DEADLINE_S)
    assert run.returncode == 128 + signum, output
    assert "FAIL verification.interrupted" in output, output
    interrupted_and_rolled_back(workspace)


def test_a_task_left_verifying_by_a_killed_run_is_refused_with_the_way_out(workspace: Workspace) -> None:
    command, started = stoppable_verification(workspace)
    run = subprocess.Popen(command, cwd=workspace.main, env=workspace.env("claude-1"), stdout=subprocess.DEVNULL)
    wait_for(started, run)  # type: ignore[arg-type]
    run.kill()  # nothing can be recorded: the task stays VERIFYING
    run.wait(timeout=DEADLINE_S)

    again = workspace.pytest(workspace.main, "--maf-task", "fix-42", "tests/test_slow.py", agent="claude-1")

    assert again.returncode == 4
    assert "fix-42: it is VERIFYING already, under attempt 1" in again.stderr
    advice = "`maf task finish fix-42 --agent claude-1 --attempt 1` rolls it back now"
    assert advice in again.stderr, again.stderr
    ok(workspace.maf(workspace.main, "task", "finish", "fix-42", "--agent", "claude-1", "--attempt", "1"))
    assert task_state(workspace, "fix-42") == "READY"


def test_a_lone_sigint_to_task_run_is_passed_on_to_its_command(workspace: Workspace) -> None:
    ok(workspace.maf(workspace.main, "task", "add", "--id", "fix-42"))
    ok(workspace.maf(workspace.main, "task", "claim", agent="claude-1"))
    started, said = workspace.home / "started", workspace.home / "said"
    script = textwrap.dedent(f"""
        import pathlib, time
        pathlib.Path({str(started)!r}).write_text("started")
        try:
            deadline = time.monotonic() + {DEADLINE_S}
            while time.monotonic() < deadline:
                time.sleep(0.05)
        except KeyboardInterrupt:
            pathlib.Path({str(said)!r}).write_text("interrupted")  # what a command does on Ctrl-C
            raise SystemExit(130)
    """)
    run = subprocess.Popen(
        [*maf_command(), "task", "run", "fix-42", "--", sys.executable, "-c", script], cwd=workspace.main,
        env=workspace.env("claude-1"), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + DEADLINE_S
    while not started.exists():
        assert time.monotonic() < deadline and run.poll() is None, "the command did not start"
        time.sleep(0.05)

    run.send_signal(signal.SIGINT)  # to maf alone: no terminal sent the command a Ctrl-C of its own

    assert run.wait(timeout=DEADLINE_S) == 130
    assert said.read_text() == "interrupted"  # it was told SIGINT, not stopped by SIGTERM
