"""`maf status` and `maf history` as a person runs them: piped, as JSON, under a terminal, and given nonsense."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from backends import environment_store, open_environment_store, store_rows
from pytest_maf import evidence, reservations, tasks
from pytest_maf.cli import main
from pytest_maf.cli.views import ENTER_SCREEN, HOME, LEAVE_SCREEN, Paint, fit_screen, wants_colour
from pytest_maf.guard import record_override
from pytest_maf.reservations import check_paths
from pytest_maf.store import Store
from workspace import Workspace, maf_command

MINUTE = 60_000
DEADLINE_S = 30


@pytest.fixture
def known_store(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store on ``backend`` that `maf` run here opens: claude-1 holds fix-1 and src/app/**, gemini-2
    overrode it to commit src/app/models.py, lead force-released gemini-2's docs/**."""
    monkeypatch.chdir(tmp_path)
    with environment_store(backend, monkeypatch):
        with open_environment_store(tmp_path, create=True) as store:
            tasks.add_task(store, task_id="fix-1")
            tasks.add_task(store, task_id="fix-2")
            tasks.claim_task(store, "fix-1", "claude-1", 10 * MINUTE)
            reservations.acquire(store, ["src/app/**"], "claude-1", 20 * MINUTE, reason="models", task_id="fix-1")
            reservations.acquire(store, ["docs/**"], "gemini-2", 20 * MINUTE)
            blocks = check_paths(store, ["src/app/models.py"], "gemini-2")
            record_override(store, "gemini-2", blocks, "hotfix for the release", content="tree:abc")
            reservations.force_release(store, ["docs/**"], "lead", "gemini-2 is stuck", tmp_path / ".agent-mail")
            yield store


def test_status_piped_is_plain_text_with_each_holder_and_expiry(
    known_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store_rows(known_store)

    assert main(["status"]) == 0

    out = capsys.readouterr().out
    assert "\x1b" not in out  # no colour or cursor movement into a pipe
    lease = next(line for line in out.splitlines() if line.startswith("fix-1"))
    assert lease.split()[:4] == ["fix-1", "claude-1", "1", "LEASED"] and ("in 9m" in lease or "in 10m" in lease)
    reservation = next(line for line in out.splitlines() if line.startswith("src/app/**"))
    assert reservation.split()[:4] == ["src/app/**", "claude-1", "exclusive", "fix-1"]
    assert "docs/**" not in out.split("reservations")[1].split("escalations")[0]  # force-released
    assert "gemini-2 overrode claude-1's src/app/** to commit src/app/models.py: hotfix for the release" in out
    assert "lead force-released gemini-2's docs/**: gemini-2 is stuck" in out
    assert "READY 1" in out and "LEASED 1" in out
    assert store_rows(known_store) == before  # a view: the override's queued notice stays queued


def test_status_json_is_one_object_for_scripts(known_store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"]) == 0

    status = json.loads(capsys.readouterr().out)
    (lease,) = status["leases"]
    assert (lease["task_id"], lease["agent_id"], lease["state"]) == ("fix-1", "claude-1", "LEASED")
    assert 0 < lease["expires_in_ms"] <= 10 * MINUTE and lease["expires_at_iso"].endswith("Z")
    (reservation,) = status["reservations"]
    assert (reservation["pattern"], reservation["task_id"], reservation["exclusive"]) == ("src/app/**", "fix-1", True)
    reasons = {entry["kind"]: entry["data"]["reason"] for entry in status["overrides"]}
    assert reasons == {"override": "hotfix for the release", "force_release": "gemini-2 is stuck"}
    mail = {count["agent"]: (count["unread"], count["queued"]) for count in status["mail"]}
    assert mail == {"claude-1": (0, 1), "gemini-2": (1, 0)}


def test_history_answers_who_overrode_whom_and_why(known_store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--kind", "override,force_release", "--since", "1h", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)

    assert [entry["kind"] for entry in entries] == ["force_release", "override"]  # newest first
    forced, overridden = entries
    assert (forced["agent"], forced["data"]["holder"], forced["data"]["reason"]) == ("lead", "gemini-2", "gemini-2 is stuck")
    assert overridden["agent"] == "gemini-2" and overridden["data"]["holders"] == [["claude-1", "src/app/**"]]
    assert overridden["data"]["paths"] == ["src/app/models.py"]
    assert overridden["ts"].endswith("Z") and overridden["ts"] <= forced["ts"]

    before = store_rows(known_store)
    assert main(["history", "--agent", "claude-1", "--limit", "2"]) == 0
    assert store_rows(known_store) == before
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "KIND", "AGENT", "TASK", "WHAT"]
    assert [line.split()[1] for line in lines[1:3]] == ["override", "acquire"]
    assert "--limit N shows more" in lines[-1]


def test_status_names_the_failed_checks_of_the_last_preflight(
    known_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tasks.add_and_claim_task(known_store, "ci-bot", MINUTE, kind="preflight", payload={"agent": "ci-bot"}, start=True)
    evidence.record_evidence_batch(known_store, run.task_id, run.attempt, [
        ("ci/test_db.py::test_reachable", "FAIL", {
            "message": "connection refused; start it with `make db`\nassert False\n +  where False = ping()", "blocking": True,
        }),
        ("env.sqlite-wal-reset", "FAIL", {"message": "SQLite 3.40.1 is affected", "blocking": False}),
        ("store.schema", "PASS", {}),
    ], agent_id="ci-bot")

    assert main(["status"]) == 0

    out = capsys.readouterr().out.split("last preflight")[1]
    assert f"{run.task_id} by ci-bot" in out and "1 passed, 1 failed, 1 warning(s)" in out
    assert "FAIL ci/test_db.py::test_reachable: connection refused; start it with `make db`" in out  # the first line
    assert "WARN env.sqlite-wal-reset: SQLite 3.40.1 is affected" in out



def test_a_very_long_stored_text_is_cut_on_its_line_and_whole_in_json(
    known_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    long = "why " * 500  # 2,000 characters, the most a reason may hold
    reservations.acquire(known_store, ["lib/**"], "claude-1", 20 * MINUTE, reason=long)
    record_override(known_store, "gemini-2", check_paths(known_store, ["lib/x.py"], "gemini-2"), long, content="tree:d")

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert main(["history"]) == 0
    trail = capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)

    for shown in (status, trail):
        assert max(len(line) for line in shown.splitlines()) < 1_000  # not a screenful of one reason
        assert "more characters; --json shows all" in shown
    assert long in [reservation["reason"] for reservation in exact["reservations"]]



def test_a_cut_text_counts_what_it_leaves_out_in_its_own_characters_and_cuts_no_escape_in_two() -> None:
    from pytest_maf.terminal import BRIEF_LIMIT, brief
    from pytest_maf.terminal import printable

    escape = printable("\x07")  # a control character is shown as its escape, several characters long
    kept, said = brief("\x07" * 5_000).split("... (")

    fit = BRIEF_LIMIT // len(escape)
    assert kept == escape * fit  # before: cut inside an escape
    assert said.startswith(f"{5_000 - fit} more characters")  # before: counted the escapes' characters


def test_a_preflight_still_running_is_not_painted_as_failed(known_store: Store) -> None:
    from pytest_maf.cli.views import render_status
    from pytest_maf.status import status_snapshot

    tasks.add_and_claim_task(known_store, "ci-bot", MINUTE, kind="preflight", payload={"agent": "ci-bot"}, start=True)

    (line,) = [line for line in render_status(status_snapshot(known_store, None), Paint(True)) if " by ci-bot, " in line]

    assert "RUNNING" in line and "\x1b[31mRUNNING" not in line  # not red: nothing has failed yet


@pytest.mark.parametrize(("tty", "no_color", "term", "coloured"), [
    (True, "", "xterm-256color", True), (True, "1", "xterm", False), (True, "", "dumb", False), (False, "", "xterm", False),
])
def test_colour_only_on_a_terminal_that_wants_it(
    monkeypatch: pytest.MonkeyPatch, tty: bool, no_color: str, term: str, coloured: bool
) -> None:
    monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("TERM", term)
    stream = io.StringIO()
    stream.isatty = lambda: tty  # type: ignore[method-assign]

    painted = Paint(wants_colour(stream))("red", "expired")

    assert ("\x1b[" in painted) is coloured and painted.replace("\x1b[31m", "").replace("\x1b[0m", "") == "expired"


def test_a_watched_screen_never_wraps_or_scrolls() -> None:
    lines = ["\x1b[1mmaf status\x1b[0m  " + "x" * 200, *(f"row {n}" for n in range(100))]

    fitted = fit_screen(lines, height=20, width=40)

    assert len(fitted) == 19 and fitted[-1].startswith("... 83 more line(s)")
    assert all(len(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)) <= 40 for line in fitted)
    assert fitted[0].startswith("\x1b[1mmaf status\x1b[0m") and fitted[0].endswith("\x1b[0m")


VIEW_REFUSALS = [
    (["history", "--since", "5x"], "--since"),
    (["history", "--since", ""], "--since"),
    (["history", "--since", "1e400d"], "--since"),
    (["history", "--limit", "0"], "--limit"),
    (["history", "--limit", "ten"], "--limit"),
    (["history", "--limit", "100000000000000000000"], "--limit"),
    (["history", "--agent", "nobody"], "agent 'nobody' appears nowhere"),
    (["history", "--agent", "a/b"], "agent id"),
    (["history", "--agent", "x\x1b[2J"], "agent id"),
    (["history", "--task", "no-such-task"], "no task"),
    (["history", "--kind", "claimed"], "unknown event kind"),
    (["status", "--watch", "0"], "--watch"),
    (["status", "--watch", "0.001"], "at least 0.1"),  # a busy loop of store reads, not a view
    (["status", "--watch", "nan"], "--watch"),
    (["status", "--watch", "soon"], "--watch"),
]


@pytest.mark.parametrize(("argv", "words"), VIEW_REFUSALS, ids=[" ".join(argv) for argv, _ in VIEW_REFUSALS])
def test_nonsense_is_one_line_and_exit_2(views_workspace: Workspace, argv: list[str], words: str) -> None:
    completed = views_workspace.maf(views_workspace.main, *argv, timeout=DEADLINE_S)

    assert completed.returncode == 2, (completed.stdout, completed.stderr)
    assert "Traceback" not in completed.stderr + completed.stdout
    (line,) = [line for line in completed.stderr.splitlines() if line.startswith("maf")]
    assert words in line and "\x1b" not in line


@pytest.fixture(scope="module")
def views_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from workspace import make_workspace

    workspace = make_workspace(tmp_path_factory.mktemp("views"))
    assert workspace.maf(workspace.main, "task", "add", "--id", "fix-1").returncode == 0
    return workspace


def ctrl_c_as_on_a_terminal() -> None:
    """In the child: Ctrl-C delivered and acted on, as in a shell's foreground job, whatever
    disposition or mask the test process had when it started the child."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """`maf status --watch` running under a pseudo-terminal of 60 rows by 160 columns; what it drew is ``seen``."""

    def __init__(self, workspace: Workspace, *args: str, size: tuple[int, int] = (60, 160), **env: str) -> None:
        import fcntl
        import struct
        import termios

        self.controller, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
        self.process = subprocess.Popen(
            [*maf_command(), "status", *args], cwd=workspace.main, env=workspace.env(**env),
            stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True, preexec_fn=ctrl_c_as_on_a_terminal,
        )
        os.close(terminal)
        self.seen = b""

    def read_until(self, wanted: bytes, times: int = 1) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while self.seen.count(wanted) < times:
            left = deadline - time.monotonic()
            assert left > 0 and self.process.poll() is None, (
                f"never saw {wanted!r}; the screen showed:\n{self.seen[-3000:]!r}"
            )
            if select.select([self.controller], [], [], min(left, 0.5))[0]:
                self._read()

    def _read(self) -> bool:
        try:
            chunk = os.read(self.controller, 65536)
        except OSError:  # the terminal closed: the watcher is gone
            return False
        self.seen += chunk
        return bool(chunk)

    def stop(self, signal_number: int) -> int:
        """Send the signal; the exit code, once everything drawn until then is read."""
        self.process.send_signal(signal_number)
        code = self.process.wait(timeout=DEADLINE_S)
        while select.select([self.controller], [], [], 0.2)[0] and self._read():
            pass
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_S)
        os.close(self.controller)


@pytest.mark.slow
def test_watch_redraws_in_place_and_shows_a_claim_made_meanwhile(workspace: Workspace) -> None:
    assert workspace.maf(workspace.main, "task", "add", "--id", "fix-42").returncode == 0
    screen = Terminal(workspace, "--watch", "0.5")
    try:
        screen.read_until(b"no task is leased")
        assert screen.seen.startswith(ENTER_SCREEN.encode())  # the alternate screen, only because this is a terminal
        screen.read_until(HOME.encode(), screen.seen.count(HOME.encode()) + 2)  # redrawn in place, from the top left

        claimed = workspace.maf(workspace.main, "task", "claim", agent="claude-7", timeout=DEADLINE_S)
        assert claimed.returncode == 0, claimed.stderr
        screen.read_until(b"claude-7")
        last = screen.seen.rsplit(HOME.encode(), 1)[-1]
        assert b"fix-42" in last and b"LEASED" in last

        assert screen.stop(signal.SIGINT) == 0  # Ctrl-C is how a watch ends
        assert screen.seen.rstrip().endswith(LEAVE_SCREEN.encode())  # the screen the user had is given back
        assert b"Traceback" not in screen.seen and b"interrupted" not in screen.seen
    finally:
        screen.close()


@pytest.mark.slow
def test_a_watch_on_a_terminal_that_reports_no_size_draws_as_on_80_by_24(views_workspace: Workspace) -> None:
    screen = Terminal(views_workspace, "--watch", "0.5", size=(0, 0))  # a pseudo-terminal nobody sized
    try:
        screen.read_until(b"leases")  # before: each redraw was "." alone

        assert screen.stop(signal.SIGINT) == 0
        assert b"maf status" in screen.seen and b"Traceback" not in screen.seen
    finally:
        screen.close()


@pytest.mark.slow
def test_a_watch_killed_by_sigterm_still_gives_the_screen_back(views_workspace: Workspace) -> None:
    screen = Terminal(views_workspace, "--watch", "0.5")
    try:
        screen.read_until(b"leases")

        assert screen.stop(signal.SIGTERM) == 128 + signal.SIGTERM
        assert screen.seen.rstrip().endswith(LEAVE_SCREEN.encode())
        assert b"Traceback" not in screen.seen
    finally:
        screen.close()


@pytest.mark.slow
def test_a_watch_on_a_dumb_terminal_prints_snapshot_after_snapshot_without_escapes(views_workspace: Workspace) -> None:
    screen = Terminal(views_workspace, "--watch", "0.2", TERM="dumb")  # Emacs' shell, a serial console
    try:
        screen.read_until(b"maf status", times=3)

        assert screen.stop(signal.SIGINT) == 0
        assert b"\x1b" not in screen.seen  # no alternate screen, cursor movement or colour it cannot show
        assert screen.seen.count(b"leases (0)") >= 3 and b"Traceback" not in screen.seen
    finally:
        screen.close()


@pytest.mark.slow
def test_a_piped_watch_prints_one_json_object_per_redraw_and_ends_on_ctrl_c(views_workspace: Workspace) -> None:
    watcher = subprocess.Popen(
        [*maf_command(), "status", "--watch", "0.2", "--json"], cwd=views_workspace.main, env=views_workspace.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_on_a_terminal,
    )
    try:
        assert watcher.stdout is not None
        stalled = threading.Timer(DEADLINE_S, watcher.kill)  # a watch that prints nothing ends the read with ''
        stalled.start()
        try:
            lines = [watcher.stdout.readline() for _ in range(3)]  # each redraw is one line
        finally:
            stalled.cancel()
        assert all(lines), f"the watch printed {lines} within {DEADLINE_S} s"
        snapshots = [json.loads(line) for line in lines]
        assert all(snapshot["tasks_by_state"]["READY"] == 1 for snapshot in snapshots)
        assert snapshots[0]["now"] < snapshots[-1]["now"]
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=DEADLINE_S)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(timeout=DEADLINE_S)
    assert watcher.returncode == 0 and "Traceback" not in err
    assert "\x1b" not in out
