"""Progress on slow work: a line redrawn in place on a terminal, nothing when piped."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from pytest_maf.terminal import Progress
from workspace import isolated_env, maf_command

DEADLINE_S = 60


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_on_a_terminal_the_line_is_redrawn_then_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    screen = FakeTerminal()
    with Progress("backing up a\x1b[31mb.db", after_s=0, every_s=0.01, stream=screen):
        wait_for(lambda: screen.getvalue().count("\r\x1b[K") >= 2, "two redraws")
    shown = screen.getvalue()
    assert shown.startswith("\r\x1b[Kbacking up a\\x1b[31mb.db: 0 s")  # the name's escape is shown, not obeyed
    assert shown.endswith("\r\x1b[K")  # the line is left clean


def test_quick_work_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    screen = FakeTerminal()
    with Progress("optimizing", after_s=DEADLINE_S, stream=screen):
        pass
    assert screen.getvalue() == ""


@pytest.mark.parametrize("term", ["xterm", "dumb"])
def test_a_pipe_or_a_dumb_terminal_gets_nothing(monkeypatch: pytest.MonkeyPatch, term: str) -> None:
    monkeypatch.setenv("TERM", term)
    piped = io.StringIO() if term == "xterm" else FakeTerminal()
    progress = Progress("backing up", after_s=0, every_s=0.01, stream=piped)
    with progress:
        time.sleep(0.1)  # ten redraws' time, had there been a terminal
    assert piped.getvalue() == ""


def load_test(tmp_path: Path, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*maf_command(), "load-test", "--concurrent", "1", "--duration", "2", "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr,
        env=isolated_env(tmp_path, {"TERM": "xterm"}),
    )


@pytest.mark.slow
def test_maf_load_test_shows_progress_on_a_terminal_and_none_when_piped(tmp_path: Path) -> None:
    piped = load_test(tmp_path, subprocess.PIPE)
    out, err = piped.communicate(timeout=DEADLINE_S)
    assert piped.returncode == 0, err
    assert err == b"" and b"load test" not in out

    leader, follower = pty.openpty()
    try:
        on_terminal = load_test(tmp_path, follower)
        os.close(follower)
        shown = b""
        deadline = time.monotonic() + DEADLINE_S
        while on_terminal.poll() is None or select.select([leader], [], [], 0)[0]:
            assert time.monotonic() < deadline, "maf load-test did not finish"
            if select.select([leader], [], [], 0.1)[0]:
                try:
                    shown += os.read(leader, 4096)
                except OSError:  # the terminal closed with the process
                    break
        on_terminal.communicate(timeout=DEADLINE_S)
    finally:
        os.close(leader)
    assert on_terminal.returncode == 0
    assert b"\r\x1b[Kload test: 1 process(es), 2 s of load and the audit: 1 s" in shown
    assert shown.endswith(b"\r\x1b[K")
