"""Agent-mail stays inside its root, shows what was stored, and never loses or invents a notice.

* A symbolic link that leads out of the mail root (an inbox, ``messages/``,
  ``outbox/``, a message file, or a default ``.agent-mail`` leading out of the
  repository) is refused for reads and writes: exit 2, one line naming the
  link, nothing read or written outside.
* Control characters in stored text are shown escaped by the text printers.
* Notices are queued with their rows and delivered after the commit: processes
  killed or failing at every file operation leave, after the next ordinary
  command, no notice without its row and no row without its notice.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from pytest_maf import escalation, mail
from pytest_maf import reservations as reservation_ops
from pytest_maf.cli import main
from pytest_maf.config import Settings, load_settings
from pytest_maf.errors import NotFoundError
from pytest_maf.store import Store, open_store
from workspace import isolated_env

INBOX = "codex-senior"  # a configured escalation target


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A set-up repository as the current directory, with no MAF_* variable of the machine's."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=isolated_env(tmp_path))
    for name in [name for name in os.environ if name.startswith("MAF_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(root)
    assert main(["setup"]) == 0
    capsys.readouterr()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys: pytest.CaptureFixture[str], link: str, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, (argv, out, err)
    (line,) = err.splitlines()
    assert line.startswith(f"maf: error: {link} is a symbolic link to "), line
    return line


# Links out of the mail root, for writes and reads.

LINKS = {  # the link, and where below it the inbox of INBOX is
    ".agent-mail": f"messages/{INBOX}",
    ".agent-mail/messages": INBOX,
    f".agent-mail/messages/{INBOX}": "",
}
SEND = ["mail", "send", "--from", "alice", "--to", INBOX, "--subject", "s", "--body", "b"]
ESCALATE = ["escalate", "--agent", "alice", "--error-context", "stuck", "--bead-id", "bd-1", "--target", INBOX]


def plant_link(repo: Path, link: str, outside: Path) -> None:
    path = repo / link
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(outside, target_is_directory=True)


@pytest.mark.parametrize("link", [*LINKS, ".agent-mail/outbox"])
@pytest.mark.parametrize("argv", [SEND, ESCALATE, ["init"]], ids=["send", "escalate", "init"])
def test_no_write_follows_a_link_out_of_the_mail_root(
    repo: Path, outside: Path, capsys: pytest.CaptureFixture[str], link: str, argv: list[str]
) -> None:
    main(["init"])
    plant_link(repo, link, outside)
    capsys.readouterr()
    before = files_under(repo)

    line = refused(capsys, link, *argv)

    assert "remove it" in line
    assert list(outside.iterdir()) == []
    assert files_under(repo) == before  # the store too: no escalation recorded, nothing queued


@pytest.mark.parametrize("link", LINKS)
def test_no_read_follows_a_link_out_of_the_mail_root(
    repo: Path, outside: Path, capsys: pytest.CaptureFixture[str], link: str
) -> None:
    secret = outside / LINKS[link] / "msg-secret.json"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(json.dumps({"id": "msg-secret", "from": "x", "to": INBOX, "subject": "SECRET"}))
    plant_link(repo, link, outside)
    before = files_under(outside)

    for argv in (["mail", "list", "--agent", INBOX], ["mail", "show", "msg-secret"],
                 ["mail", "ack", "msg-secret", "--agent", INBOX]):
        if argv[1] == "show" and link == f".agent-mail/messages/{INBOX}":  # one inbox of all: not looked in
            code, _, err = run(capsys, *argv)
            assert code == 2 and err.startswith("maf: error: no message 'msg-secret' under .agent-mail (not looked")
            assert f"{link} is a symbolic link to {outside}, outside the mail root" in err and "SECRET" not in err
            continue
        line = refused(capsys, link, *argv)
        assert "SECRET" not in line

    assert files_under(outside) == before


def test_an_inbox_linked_out_of_the_mail_root_keeps_no_other_agent_from_its_mail(
    repo: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["init"])
    capsys.readouterr()
    assert main(["mail", "send", "--from", "alice", "--to", "bob", "--subject", "s", "--body", "b", "--json"]) == 0
    sent = json.loads(capsys.readouterr().out)["id"]
    plant_link(repo, ".agent-mail/messages/mallory", outside)

    # Before: every lookup by id was refused for mallory's inbox, whoever asked and whatever for.
    assert main(["mail", "show", sent]) == 0
    assert sent in capsys.readouterr().out
    assert main(["mail", "show", "msg-none", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"].startswith("no message 'msg-none' under .agent-mail (not looked")


def test_an_outbox_link_is_not_read_either(repo: Path, outside: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (outside / "msg-secret.json").write_text(json.dumps({"id": "msg-secret", "subject": "SECRET"}))
    main(["init"])
    plant_link(repo, ".agent-mail/outbox", outside)
    capsys.readouterr()

    refused(capsys, ".agent-mail/outbox", "mail", "show", "msg-secret")


def test_a_message_file_linked_out_of_the_mail_root_is_not_read(
    repo: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (outside / "passwd").write_text('{"id": "msg-x", "subject": "SECRET"}')
    inbox = repo / ".agent-mail" / "messages" / INBOX
    inbox.mkdir(parents=True)
    (inbox / "msg-x.json").symlink_to(outside / "passwd")
    link = f".agent-mail/messages/{INBOX}/msg-x.json"

    refused(capsys, link, "mail", "list", "--agent", INBOX)
    refused(capsys, link, "mail", "show", "msg-x")
    refused(capsys, link, "mail", "ack", "msg-x", "--agent", INBOX)
    assert (outside / "passwd").read_text() == '{"id": "msg-x", "subject": "SECRET"}'


def test_links_that_stay_inside_are_followed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An inbox linked to another folder of the mail root, and a default mail root linked to a
    folder of the repository, are ordinary places."""
    (repo / "shared-mail").mkdir()
    (repo / ".agent-mail").symlink_to(repo / "shared-mail")
    (repo / "shared-mail" / "messages" / "senior").mkdir(parents=True)
    (repo / "shared-mail" / "messages" / INBOX).symlink_to(repo / "shared-mail" / "messages" / "senior")

    code, message_id, _ = run(capsys, *SEND)

    assert code == 0
    assert (repo / "shared-mail" / "messages" / "senior" / f"{message_id.strip()}.json").is_file()
    code, out, _ = run(capsys, "mail", "list", "--agent", INBOX, "--json")
    assert code == 0 and [m["id"] for m in json.loads(out)] == [message_id.strip()]


def test_a_mail_root_configured_elsewhere_may_be_reached_through_links_but_not_left(
    repo: Path, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "team-mail"
    elsewhere.mkdir()
    (tmp_path / "via").symlink_to(elsewhere)
    monkeypatch.setenv("MAF_AGENT_MAIL_ROOT", str(tmp_path / "via"))

    code, message_id, err = run(capsys, *SEND)

    assert code == 0, err
    assert (elsewhere / "messages" / INBOX / f"{message_id.strip()}.json").is_file()
    (elsewhere / "outbox").rename(tmp_path / "old-outbox")
    (elsewhere / "outbox").symlink_to(outside)
    code, _, err = run(capsys, *SEND)
    assert code == 2 and f"{tmp_path / 'via' / 'outbox'} is a symbolic link to {outside}, outside the mail root" in err
    assert list(outside.iterdir()) == []


@pytest.mark.timeout(60)  # it looped for good
@pytest.mark.parametrize("link", [".agent-mail", f".agent-mail/messages/{INBOX}", ".agent-mail/outbox"])
@pytest.mark.parametrize("argv", [SEND, ESCALATE, ["init"]], ids=["send", "escalate", "init"])
def test_a_dangling_link_inside_the_repository_is_named_not_waited_on(
    repo: Path, capsys: pytest.CaptureFixture[str], link: str, argv: list[str]
) -> None:
    if link != ".agent-mail":
        main(["init"])
        shutil.rmtree(repo / link)
    gone = (repo / link).parent / "gone"  # inside the repository, and inside the mail root
    (repo / link).symlink_to(gone)
    capsys.readouterr()
    before = files_under(repo)

    line = refused(capsys, link, *argv)

    assert line.endswith("gone, which does not exist; make that folder, or remove the link"), line
    assert files_under(repo) == before and not os.path.lexists(gone)
    assert run(capsys, "task", "list")[0] == 0  # no escalation was left queued for every command to deliver
    code, out, _ = run(capsys, "health-check", "--json")
    failing = [check["message"] for check in json.loads(out)["checks"] if not check["ok"]]
    assert code == 1 and any("gone, which does not exist" in message for message in failing), failing


def test_a_default_mail_root_leading_out_of_the_repository_says_how_to_keep_it(
    repo: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / ".agent-mail").symlink_to(outside)

    line = refused(capsys, ".agent-mail", *SEND)

    assert f"to {outside}, outside the repository" in line and "MAF_AGENT_MAIL_ROOT" in line


@pytest.mark.parametrize("message_id", ["*", "?", "msg-[ab]", "msg-*", "[!x]*"])
@pytest.mark.parametrize("action", ["show", "ack"])
def test_a_message_id_is_never_a_glob(
    repo: Path, capsys: pytest.CaptureFixture[str], message_id: str, action: str
) -> None:
    assert main(SEND) == 0
    capsys.readouterr()
    before = files_under(repo)

    argv = ["mail", action, message_id] + (["--agent", INBOX] if action == "ack" else [])
    code, out, err = run(capsys, *argv)

    assert (code, out) == (2, "")
    assert err.startswith(f"maf: error: message id {message_id!r} may not contain '*', '?', '[' or ']'")
    assert files_under(repo) == before


# What a terminal shows is what was stored.

HOSTILE = "\x1b[31mred\x1b[0m\nsecond line\r\x07\u202eevil"
SHOWN = "\\x1b[31mred\\x1b[0m\\nsecond line\\r\\x07\\u202eevil"


def test_stored_text_is_shown_escaped_and_json_stays_exact(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reservation", "acquire", "docs/**", "--agent", "alice", "--reason", HOSTILE]) == 0
    assert main(["mail", "send", "--from", "alice", "--to", "bob", "--subject", HOSTILE, "--body", HOSTILE]) == 0
    assert main([*ESCALATE[:4], HOSTILE, *ESCALATE[5:]]) == 0
    capsys.readouterr()

    outputs = {}
    for name, argv in {
        "reservation list": ["reservation", "list"],
        "reservation status": ["reservation", "status", "--file", "docs/a.md"],
        "reservation check": ["reservation", "check", "docs/a.md", "--agent", "bob"],
        "mail list": ["mail", "list", "--agent", "bob"],
        "escalate list": ["escalate", "list"],
    }.items():
        main(argv)
        outputs[name] = capsys.readouterr().out
    assert main(["mail", "list", "--agent", "bob", "--json"]) == 0
    (message,) = json.loads(capsys.readouterr().out)
    assert main(["mail", "show", message["id"]]) == 0
    shown = capsys.readouterr().out

    for name, out in outputs.items():
        assert SHOWN in out, name
        assert not {"\x1b", "\r", "\x07", "\u202e"} & set(out), name
    assert len(outputs["reservation list"].splitlines()) == 2  # the header and one row
    assert not {"\x1b", "\r", "\x07", "\u202e"} & set(shown)
    assert json.loads(shown) == message and message["subject"] == HOSTILE
    assert main(["reservation", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["reason"] == HOSTILE


def test_a_message_too_large_to_be_read_is_refused_and_nothing_is_written(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "z" * mail.MAX_MESSAGE_BYTES  # a reader would refuse the file: it must never be written
    before = files_under(repo)

    code, out, err = run(capsys, "mail", "send", "--from", "alice", "--to", "bob", "--subject", "big", "--body", body)

    assert code == 2 and out == "" and "a message may be at most" in err and len(err) < 300
    assert files_under(repo) == before
    fits = "z" * (mail.MAX_MESSAGE_BYTES - mail.READ_MARK_BYTES - 1_000)
    assert run(capsys, "mail", "send", "--from", "alice", "--to", "bob", "--subject", "s", "--body", fits)[0] == 0
    (message,) = json.loads(run(capsys, "mail", "list", "--agent", "bob", "--json")[1])
    assert run(capsys, "mail", "ack", message["id"], "--agent", "bob")[0] == 0  # marked read, still readable
    assert run(capsys, "mail", "show", message["id"])[0] == 0


def test_a_folder_named_like_a_message_is_no_message_and_hides_none(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "mail", "send", "--from", "alice", "--to", "bob", "--subject", "s", "--body", "b")[0] == 0
    (repo / ".agent-mail" / "messages" / "bob" / "msg-x.json").mkdir()

    code, out, err = run(capsys, "mail", "list", "--agent", "bob", "--json")

    assert code == 0, err  # before: "maf: error: Is a directory: 3", in `maf status` too
    assert [message["subject"] for message in json.loads(out)] == ["s"]
    assert run(capsys, "status")[0] == 0


# Notices: after the commit, none lost.


def settings_of(repo: Path) -> Settings:
    return load_settings(environ={}, cwd=repo)


def test_a_failing_multi_pattern_force_release_sends_nothing(repo: Path) -> None:
    settings = settings_of(repo)
    with open_store(settings.db_path) as store:
        reservation_ops.acquire(store, ["src/**"], "alice", 60_000)
        reservation_ops.acquire(store, ["docs/**"], "bob", 60_000)

        with pytest.raises(NotFoundError, match="nobody holds a live reservation on 'nothing/\\*\\*'"):
            reservation_ops.force_release(store, ["src/**", "docs/**", "nothing/**"], "lead", "stuck", settings.mail_root)

        assert [r.agent_id for r in reservation_ops.list_reservations(store)] == ["bob", "alice"]
        assert store.read(lambda t: (t.pending_mail(), t.reservation_events("force_release"))) == ([], [])
    assert not [path for path in repo.rglob("*.json") if ".agent-mail" in path.parts]


def test_an_undeliverable_notice_is_queued_reported_and_delivered_by_the_next_command(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reservation", "acquire", "src/**", "--agent", "alice"]) == 0

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "link", disk_full)
        patched.setattr(os, "replace", disk_full)
        code, out, err = run(capsys, "reservation", "release", "src/**", "--force", "--reason", "stuck", "--agent", "lead")
        assert code == 0 and "released src/** held by alice" in out
        (warning,) = [line for line in err.splitlines() if line.startswith("maf: warning:")]
        assert "alice was not told by agent-mail" in warning and "No space left on device" in warning
        # Every later command says it while the disk stays full, and changes nothing.
        code, _, err = run(capsys, "task", "list")
        assert code == 0 and "1 queued agent-mail message(s) could not be delivered" in err

    code, _, err = run(capsys, "task", "list")

    assert (code, err) == (0, "")
    code, out, _ = run(capsys, "mail", "list", "--agent", "alice", "--json")
    (notice,) = json.loads(out)
    assert (notice["type"], notice["reason"]) == ("RESERVATION_FORCE_RELEASED", "stuck")
    with open_store(settings_of(repo).db_path) as store:
        assert store.read(lambda t: t.pending_mail()) == []


def test_mail_list_delivers_what_is_queued(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An agent waiting for an escalation only reads its mail: that is enough."""
    settings = settings_of(repo)
    with open_store(settings.db_path) as store:
        store.write(lambda t: t.enqueue_mail({"id": "msg-queued", "from": "alice", "to": INBOX, "type": "MESSAGE"}))

    code, out, _ = run(capsys, "mail", "list", "--agent", INBOX, "--json")

    assert code == 0 and [m["id"] for m in json.loads(out)] == ["msg-queued"]


def test_a_dry_run_delivers_nothing_queued(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_of(repo)
    with open_store(settings.db_path) as store:
        store.write(lambda t: t.enqueue_mail({"id": "msg-queued", "from": "alice", "to": INBOX, "type": "MESSAGE"}))
    before = files_under(repo)

    code, _, _ = run(capsys, *ESCALATE, "--dry-run")

    assert code == 0 and files_under(repo) == before


# Fault injection: a process killed, or failing, at each file operation.

# Runs `maf ARGS...` in-process, counting the calls of the os functions the
# store and the mail make; the Nth call SIGKILLs the process, or fails (ENOSPC
# at odd N, EIO at even N). The count of calls made is written to COUNT_FILE.
FAULTY_MAF = """
import errno, os, signal, sys
point, mode, count_file, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
from pytest_maf.cli import main
calls = 0
real = {}
def counted(name):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == point:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            code = errno.ENOSPC if point % 2 else errno.EIO
            raise OSError(code, os.strerror(code))
        return real[name](*args, **kwargs)
    return call
for name in ("open", "fsync", "link", "replace", "unlink", "mkdir", "pwrite"):
    real[name] = getattr(os, name)
    setattr(os, name, counted(name))
try:
    code = main(argv)
finally:
    for name, function in real.items():
        setattr(os, name, function)
with open(count_file, "w") as handle:
    handle.write(str(calls))
sys.exit(code)
"""

DEADLINE_S = 240  # for the whole fault-injection test


def faulty_maf(repo: Path, point: int, mode: str, argv: list[str], deadline: float) -> int:
    completed = subprocess.run(
        [sys.executable, "-c", FAULTY_MAF, str(point), mode, str(repo / "calls"), *argv],
        cwd=repo, env=isolated_env(repo.parent / "home"), capture_output=True, text=True,
        timeout=max(1.0, deadline - time.monotonic()),
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed.returncode


def mail_of_type(mail_root: Path, kind: str) -> tuple[Counter[tuple[str, ...]], Counter[tuple[str, ...]]]:
    """(inbox copies, outbox copies) of the messages of type ``kind``, by id, recipient and pattern."""
    def read(paths: Iterator[Path]) -> Counter[tuple[str, ...]]:
        found: Counter[tuple[str, ...]] = Counter()
        for path in paths:
            message = json.loads(path.read_text())
            if message["type"] == kind:
                found[(message["id"], message["to"], message.get("pattern", ""))] += 1
        return found

    return read(mail_root.glob("messages/*/msg-*.json")), read(mail_root.glob("outbox/msg-*.json"))


def escalation_rows(store: Store) -> Counter[tuple[str, ...]]:
    def read(t: Any) -> Counter[tuple[str, ...]]:
        found: Counter[tuple[str, ...]] = Counter()
        for row in t.escalations():
            for event in t.escalation_events(row.id):
                found[(event["data"]["message_id"], event["data"]["target"], "")] += 1
        return found

    return store.read(read)


def force_release_rows(store: Store) -> Counter[tuple[str, ...]]:
    events = store.read(lambda t: t.reservation_events("force_release"))
    return Counter((e.data["holder"], e.data["pattern"]) for e in events)


@pytest.mark.slow
def test_no_notice_without_its_row_and_no_row_without_its_notice_whatever_the_fault(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    deadline = time.monotonic() + DEADLINE_S
    (repo.parent / "home").mkdir()
    settings = settings_of(repo)
    outcomes: Counter[str] = Counter()
    points = 0

    def escalate(n: int) -> list[str]:
        return ["escalate", "--agent", "alice", "--error-context", "stuck", "--bead-id", f"bd-{n}", "--target", INBOX]

    def force_release(n: int) -> list[str]:
        with open_store(settings.db_path) as store:
            reservation_ops.acquire(store, [f"a{n}/**"], "alice", 600_000)
            reservation_ops.acquire(store, [f"b{n}/**"], "bob", 600_000)
        return ["reservation", "release", f"a{n}/**", f"b{n}/**", "--force", "--reason", "stuck", "--agent", "lead"]

    def rows_of(operation: Any) -> Counter[tuple[str, ...]]:
        with open_store(settings.db_path) as store:
            return escalation_rows(store) if operation is escalate else force_release_rows(store)

    for operation in (escalate, force_release):
        assert faulty_maf(repo, 0, "none", operation(0), deadline) == 0
        calls = int((repo / "calls").read_text())
        assert calls >= 8, calls  # the store's lock, the temporary files, links and fsyncs
        for mode in ("kill", "fail"):
            for point in range(1, calls + 1):
                n = points = points + 1
                rows_before = rows_of(operation)
                code = faulty_maf(repo, point, mode, operation(n), deadline)
                committed = rows_of(operation) != rows_before
                with open_store(settings.db_path) as store:
                    queued = bool(store.read(lambda t: t.pending_mail()))
                exit = "killed" if code == -signal.SIGKILL else f"exit {code}"
                outcomes[f"{operation.__name__}: {exit}, committed {committed}, queued {queued}"] += 1
                if committed:  # a fault after the commit is a warning at most
                    assert exit in ("killed", "exit 0"), (mode, point, code)
                else:
                    assert not queued, (mode, point)

                assert main(["task", "list"]) == 0  # the next ordinary command
                capsys.readouterr()

                with open_store(settings.db_path) as store:
                    assert store.read(lambda t: t.pending_mail()) == []
                    if operation is escalate:
                        inbox, outbox = mail_of_type(settings.mail_root, "ESCALATION_REQUEST")
                        assert inbox == outbox == escalation_rows(store), (mode, point)
                    else:
                        inbox, outbox = mail_of_type(settings.mail_root, "RESERVATION_FORCE_RELEASED")
                        assert inbox == outbox, (mode, point)
                        assert Counter((to, pattern) for _, to, pattern in inbox) == force_release_rows(store), (mode, point)
    # Faults fell before the commit (nothing recorded, nothing queued), between the commit and
    # the delivery (queued, then delivered by the next command), and after the delivery.
    print(points, "fault points:", dict(sorted(outcomes.items())))
    for name in ("escalate", "force_release"):
        assert outcomes[f"{name}: killed, committed False, queued False"] > 0
        assert outcomes[f"{name}: killed, committed True, queued True"] > 0
        assert outcomes[f"{name}: exit 0, committed True, queued True"] > 0
        assert outcomes[f"{name}: exit 0, committed True, queued False"] > 0


def test_a_folder_the_system_will_not_make_is_named_as_the_user_knows_it_and_is_no_bad_input(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from pytest_maf import mail
    from pytest_maf.agent_tools import error_kind
    from pytest_maf.errors import refused_by_the_system

    main(["init"])
    capsys.readouterr()
    real_mkdir = os.mkdir

    def refusing(path: str, *args: object, **kwargs: object) -> None:
        if str(path).endswith("zz-new"):  # an inbox folder made read-only (root ignores permissions: faked)
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mail.os, "mkdir", refusing)
    with pytest.raises(OSError) as refused_write:
        mail.send(repo / ".agent-mail", "alice", "zz-new", "s", "b", 0)
    refusal = refused_by_the_system(refused_write.value)

    # Before: "Operation not permitted: zz-new", of kind bad_input: an agent would change its arguments.
    assert str(refusal) == "Operation not permitted: .agent-mail/messages/zz-new"
    assert error_kind(refusal) == "system" and refusal.exit_code == 2
    assert main(["mail", "send", "--from", "alice", "--to", "zz-new", "--subject", "s", "--body", "b"]) == 2
    assert capsys.readouterr().err == "maf: error: Operation not permitted: .agent-mail/messages/zz-new\n"


@pytest.mark.parametrize(("name", "content", "why"), [
    ("msg-bin.json", b"\x89\xff\x00binary" * 10, "(it is not UTF-8 text)"),
    ("msg-text.json", b"not json at all", "(it is not JSON)"),
    ("msg-list.json", b"[1, 2]", "(it is JSON but not an object)"),
    ("msg-x.json", b'{"id": "other"}', "(its id 'other' is not its file name's 'msg-x')"),
    ("msg-huge.json", None, f"more than a message may be ({mail.MAX_MESSAGE_BYTES})"),
], ids=["binary", "not-json", "not-an-object", "id-not-its-name", "oversized"])
def test_one_unreadable_file_in_an_inbox_hides_none_of_the_good_messages(
    repo: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes | None, why: str
) -> None:
    assert run(capsys, "mail", "send", "--from", "alice", "--to", "bob", "--subject", "first", "--body", "b")[0] == 0
    assert run(capsys, "mail", "send", "--from", "carol", "--to", "bob", "--subject", "second", "--body", "b")[0] == 0
    bad = repo / ".agent-mail" / "messages" / "bob" / name
    if content is None:
        with open(bad, "wb") as handle:  # sparse: larger than a message may be, without the disk
            handle.truncate(mail.MAX_MESSAGE_BYTES + 1)
    else:
        bad.write_bytes(content)
    warning = f"maf: warning: {os.path.join('.agent-mail', 'messages', 'bob', name)} "

    for unread in ([], ["--unread"]):
        code, out, err = run(capsys, "mail", "list", "--agent", "bob", *unread)
        assert code == 0, err  # before: exit 2, and not one message listed
        assert [line.split(": ", 1)[1] for line in out.splitlines()] == ["second", "first"]
        (line,) = err.splitlines()  # once for the one bad file
        assert line.startswith(warning) and why in line and line.endswith("move it out of the mail root")
    code, out, err = run(capsys, "mail", "list", "--agent", "bob", "--json")
    assert code == 0 and [message["subject"] for message in json.loads(out)] == ["second", "first"]
    assert err.startswith(warning) and len(err.splitlines()) == 1
    for argv in (["mail", "show", Path(name).stem], ["mail", "ack", Path(name).stem, "--agent", "bob"]):
        code, out, err = run(capsys, *argv)  # that very message, asked for by its id: refused
        (line,) = err.splitlines()
        assert (code, out) == (2, "") and line.startswith(f"maf: error: {warning[len('maf: warning: '):]}") and why in line


def test_the_agent_tools_inbox_names_a_file_that_is_no_message_and_lists_the_rest(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_maf.agent_tools import AgentTools

    assert run(capsys, "mail", "send", "--from", "alice", "--to", "bob", "--subject", "kept", "--body", "b")[0] == 0
    (repo / ".agent-mail" / "messages" / "bob" / "msg-stray.json").write_bytes(b"\x00\xff")

    listed = AgentTools(settings_of(repo), "bob", repo).mail_list()

    assert [message["subject"] for message in listed["messages"]] == ["kept"] and listed["unread"] == 1
    (problem,) = listed["unreadable"]
    assert "msg-stray.json is not an agent-mail message (it is not UTF-8 text)" in problem
