"""Agent-mail and escalation: atomic messages, raised levels, dry runs, safe names."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from backends import store_rows
from pytest_maf import escalation, mail
from pytest_maf.cli import main
from pytest_maf.config import Settings, load_settings
from pytest_maf.errors import UsageError
from pytest_maf.store import Store


@pytest.fixture
def settings(tmp_path: Path, db_path: Path) -> Settings:
    (tmp_path / ".git").mkdir()
    return load_settings(environ={"MAF_DB_PATH": str(db_path)}, cwd=tmp_path)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*")) if path.is_file() and "-wal" not in path.name and "-shm" not in path.name
    }


def escalate(store: Store, settings: Settings, **overrides: object) -> escalation.EscalationOutcome:
    arguments: dict[str, object] = {
        "agent_id": "claude-1", "bead_id": "bd-42", "error_context": "tests hang", "target": "minimax-debug-1",
    }
    arguments.update(overrides)
    return escalation.escalate(store, settings, **arguments)  # type: ignore[arg-type]


def test_an_escalation_is_one_message_in_inbox_and_outbox_and_a_row(store: Store, settings: Settings) -> None:
    outcome = escalate(store, settings)

    inbox = settings.mail_root / "messages" / "minimax-debug-1" / f"{outcome.message['id']}.json"
    message = json.loads(inbox.read_text())
    assert message == json.loads((settings.mail_root / "outbox" / inbox.name).read_text())
    assert set(message) == {"id", "type", "from", "to", "bead_id", "error_context", "level", "created_at", "escalation_id"}
    assert (message["type"], message["from"], message["level"]) == ("ESCALATION_REQUEST", "claude-1", 1)
    (row,) = escalation.list_escalations(store, "active")
    assert (row.id, row.level, row.target, row.context) == (message["escalation_id"], 1, "minimax-debug-1", "tests hang")
    events = store.read(lambda t: t.escalation_events(row.id))
    assert [event["kind"] for event in events] == ["open"]


def test_a_repeat_raises_the_level_and_moves_along_the_chain(store: Store, settings: Settings) -> None:
    levels = [escalate(store, settings, error_context=f"try {n}") for n in range(1, 5)]

    assert [o.escalation.level for o in levels] == [1, 2, 3, 4]
    assert [o.escalation.target for o in levels] == ["minimax-debug-1", "minimax-debug-1", "codex-senior", "codex-senior"]
    assert [o.raised for o in levels] == [False, True, True, True]
    assert len(escalation.list_escalations(store)) == 1  # no duplicate escalation
    assert len({o.escalation.id for o in levels}) == 1
    assert len(mail.list_messages(settings.mail_root, "codex-senior")) == 2


def test_a_resolved_escalation_lets_a_new_one_open(store: Store, settings: Settings) -> None:
    first = escalate(store, settings)
    escalation.close_escalation(store, first.escalation.id, by="claude-1")
    second = escalate(store, settings)

    assert second.escalation.id != first.escalation.id and second.escalation.level == 1
    with pytest.raises(UsageError, match="already resolved"):
        escalation.close_escalation(store, first.escalation.id, by="claude-1")


def test_a_dry_run_writes_nothing(store: Store, settings: Settings, tmp_path: Path) -> None:
    escalate(store, settings)  # an active one, so the dry run plans a raise
    files_before, rows_before = tree(tmp_path), store_rows(store)

    outcome = escalate(store, settings, dry_run=True, error_context="again")

    assert outcome.dry_run and outcome.raised and outcome.message["level"] == 2
    assert tree(tmp_path) == files_before
    assert store_rows(store) == rows_before


def test_unknown_target_lists_the_configured_ones(store: Store, settings: Settings) -> None:
    with pytest.raises(UsageError, match="configured targets: minimax-debug-1, codex-senior"):
        escalate(store, settings, target="nobody")


@pytest.mark.parametrize("name", ["../x", "a/b", "", "nul\0byte", "x" * 129, "..", "back\\slash"])
def test_names_that_would_escape_the_mail_root_are_refused(store: Store, settings: Settings, tmp_path: Path, name: str) -> None:
    before = tree(tmp_path)
    for call in (
        lambda: escalate(store, settings, agent_id=name),
        lambda: mail.send(settings.mail_root, "lead", name, "s", "b", 0),
        lambda: mail.send(settings.mail_root, name, "lead", "s", "b", 0),
        lambda: mail.find_message(settings.mail_root, name),
        lambda: mail.list_messages(settings.mail_root, name),
    ):
        with pytest.raises(UsageError):
            call()
    assert tree(tmp_path) == before


def test_a_crash_before_the_rename_leaves_no_message_visible(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    mail.initialise(settings.mail_root)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(os, "link", crash)
    with pytest.raises(OSError):
        mail.send(settings.mail_root, "lead", "claude-1", "hello", "body", 0)
    monkeypatch.undo()
    # A temporary file left by a process killed mid-write is never read as a message.
    inbox = settings.mail_root / "messages" / "claude-1"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / ".msg-half.json.x1.tmp").write_text('{"id": "msg-half", "bo')

    assert mail.list_messages(settings.mail_root, "claude-1") == []
    assert not list(inbox.glob("*.json"))


def test_a_failed_delivery_keeps_the_escalation_and_queues_its_message(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", disk_full)
    monkeypatch.setattr(os, "replace", disk_full)
    outcome = escalate(store, settings)
    monkeypatch.undo()

    (recorded,) = escalation.list_escalations(store)
    assert recorded.id == outcome.escalation.id
    (warning,) = outcome.undelivered
    assert f"minimax-debug-1 was not told by agent-mail (message {outcome.message['id']})" in warning
    assert "No space left on device" in warning and "stays queued" in warning
    assert mail.list_messages(settings.mail_root, "minimax-debug-1") == []
    assert [queued_id for queued_id, _ in store.read(lambda t: t.pending_mail())] == [outcome.message["id"]]

    delivery = mail.deliver_pending(store, settings.mail_root)  # what the next command does

    assert delivery.delivered == [outcome.message["id"]] and not delivery.failed
    assert mail.list_messages(settings.mail_root, "minimax-debug-1") == [outcome.message]
    assert store.read(lambda t: t.pending_mail()) == []


def test_delivering_twice_keeps_the_first_copy(store: Store, settings: Settings) -> None:
    """A process that died after writing the files but before marking them delivered: the next
    delivery writes nothing over them (the recipient may have read the message since)."""
    outcome = escalate(store, settings)
    mail.acknowledge(settings.mail_root, outcome.message["id"], "minimax-debug-1", 1)
    files_before = tree(settings.mail_root)

    mail.deliver(settings.mail_root, outcome.message)

    assert tree(settings.mail_root) == files_before
    (message,) = mail.list_messages(settings.mail_root, "minimax-debug-1")
    assert message["read_at"] == 1


def test_an_escalation_to_an_inbox_that_leads_out_of_the_mail_root_records_nothing(
    store: Store, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (settings.mail_root / "messages").mkdir(parents=True)
    (settings.mail_root / "messages" / "minimax-debug-1").symlink_to(outside)
    rows_before = store_rows(store)

    for dry_run in (True, False):
        with pytest.raises(mail.MailRootError, match="messages/minimax-debug-1 is a symbolic link to .*outside the mail root"):
            escalate(store, settings, dry_run=dry_run)

    assert store_rows(store) == rows_before
    assert list(outside.iterdir()) == []


def test_mail_from_the_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAF_AGENT_MAIL_ROOT", raising=False)
    assert main(["mail", "send", "--from", "lead", "--to", "claude-1", "--subject", "rebase", "--body", "please"]) == 0
    message_id = capsys.readouterr().out.strip()

    assert main(["mail", "list", "--agent", "claude-1", "--unread", "--json"]) == 0
    (unread,) = json.loads(capsys.readouterr().out)
    assert main(["mail", "ack", message_id, "--agent", "claude-1"]) == 0
    assert main(["mail", "list", "--agent", "claude-1", "--unread", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1]) == []
    assert main(["mail", "show", message_id]) == 0
    shown = json.loads(capsys.readouterr().out)

    assert unread["subject"] == "rebase" and shown["read_at"] > 0
    assert (tmp_path / ".agent-mail" / "messages" / "claude-1" / f"{message_id}.json").is_file()
    assert main(["mail", "show", "msg-missing"]) == 2
    assert main(["mail", "ack", message_id, "--agent", "../etc"]) == 2


def test_escalate_from_the_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MAF_DB_PATH", "MAF_AGENT_MAIL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    main(["setup"])
    base = ["escalate", "--agent", "claude-1", "--error-context", "hang", "--bead-id", "bd-1"]
    capsys.readouterr()

    assert main([*base, "--target", "codex-senior", "--json"]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert main([*base, "--target", "unknown"]) == 2
    assert "configured targets" in capsys.readouterr().err
    assert main(["escalate", "--agent", "x"]) == 2
    assert main(["escalate", "list", "--status", "active", "--json"]) == 0
    (active,) = json.loads(capsys.readouterr().out)
    assert main(["escalate", "resolve", opened["escalation_id"], "--agent", "codex-senior"]) == 0

    assert active["id"] == opened["escalation_id"] and opened["message"]["to"] == "codex-senior"


@pytest.fixture
def shell_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A set-up git repository as the current directory, with no MAF_* variable of the machine's."""
    import subprocess

    from pytest_maf import agents

    monkeypatch.setattr(agents, "_client", agents.current_client())  # main() sets it: put back after the test
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
    for name in [name for name in os.environ if name.startswith("MAF_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert main(["setup"]) == 0
    capsys.readouterr()
    return tmp_path


def shell(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def opened_by_a1(capsys: pytest.CaptureFixture[str], bead: str = "bd-1", target: str = "codex-senior") -> str:
    code, out, err = shell(capsys, "escalate", "--agent", "a1", "--error-context", "tests hang", "--bead-id", bead,
                           "--target", target, "--json")
    assert code == 0, err
    return str(json.loads(out)["escalation_id"])


def inbox_types(capsys: pytest.CaptureFixture[str], agent: str) -> list[tuple[str, str]]:
    code, out, err = shell(capsys, "mail", "list", "--agent", agent, "--json")
    assert code == 0, err
    return [(message["type"], message["from"]) for message in json.loads(out)]


def test_who_closes_an_escalation_is_recorded_shown_and_told_to_the_others(
    shell_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved, cancelled = opened_by_a1(capsys, "bd-1"), opened_by_a1(capsys, "bd-2")
    monkeypatch.setenv("MAF_AGENT_ID", "a2")

    assert shell(capsys, "escalate", "resolve", resolved) == (
        0, f"{resolved} is resolved by a2; told a1, codex-senior by agent-mail\n", "")
    code, out, err = shell(capsys, "escalate", "resolve", cancelled, "--cancel", "--agent", "codex-senior")
    assert (code, out, err) == (0, f"{cancelled} is cancelled by codex-senior; told a1 by agent-mail\n", "")

    code, out, _ = shell(capsys, "escalate", "list", "--json")
    assert {row["id"]: (row["status"], row["closed_by"]) for row in json.loads(out)} == {
        resolved: ("resolved", "a2"), cancelled: ("cancelled", "codex-senior")}
    code, out, _ = shell(capsys, "escalate", "list")
    header, *rows = out.splitlines()
    assert "CLOSED BY" in header and [row.split()[7] for row in rows] == ["a2", "codex-senior"]
    code, out, _ = shell(capsys, "history", "--agent", "a2", "--json")
    (closing,) = [entry for entry in json.loads(out) if entry["kind"] == "resolved"]
    assert closing["agent"] == "a2" and closing["summary"] == f"a2 resolved a1's escalation {resolved} of bd-1 at level 1"
    assert sorted(inbox_types(capsys, "a1")) == [("ESCALATION_CANCELLED", "codex-senior"), ("ESCALATION_RESOLVED", "a2")]
    assert ("ESCALATION_RESOLVED", "a2") in inbox_types(capsys, "codex-senior")  # its request is answered
    assert ("ESCALATION_CANCELLED", "codex-senior") not in inbox_types(capsys, "codex-senior")  # it closed it


def test_closing_an_escalation_needs_an_acting_agent(shell_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opened = opened_by_a1(capsys)

    assert shell(capsys, "escalate", "resolve", opened) == (2, "", "maf: error: give --agent or set MAF_AGENT_ID\n")
    code, out, _ = shell(capsys, "escalate", "list", "--status", "active", "--json")
    assert [row["id"] for row in json.loads(out)] == [opened]


def test_escalate_list_shows_a_long_error_context_on_one_short_line(
    shell_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = "a" * 120_000 + "\nthe end"
    code, _, err = shell(capsys, "escalate", "--agent", "a1", "--error-context", context, "--bead-id", "bd-21",
                         "--target", "codex-senior")
    assert code == 0, err

    code, out, _ = shell(capsys, "escalate", "list", "--status", "active")
    _, row = out.splitlines()
    assert code == 0 and len(row) < 400  # before: one row of 120 KB
    assert row.endswith(f"{'a' * 150}... ({len(context) - 200} more characters; --json shows all)")
    code, out, _ = shell(capsys, "escalate", "list", "--status", "active", "--json")
    assert json.loads(out)[0]["context"] == context


def test_a_raise_asked_for_another_target_says_where_it_went(shell_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opened = opened_by_a1(capsys, "bd-30", "codex-senior")
    raise_to = ["escalate", "--agent", "a1", "--error-context", "still", "--bead-id", "bd-30", "--target"]

    code, out, err = shell(capsys, *raise_to, "minimax-debug-1")
    assert code == 0 and out.startswith(f"raised {opened} at level 2 to codex-senior")
    (note,) = err.splitlines()  # before: nothing said, the target given silently dropped
    assert note.startswith(f"maf: note: a1's escalation {opened} of bd-30 is already active, so it was raised at"
                           " level 2 to codex-senior, not to minimax-debug-1")
    assert inbox_types(capsys, "minimax-debug-1") == []
    code, out, err = shell(capsys, *raise_to, "codex-senior", "--json")
    assert (code, err, json.loads(out)["note"]) == (0, "", None)  # the target the chain keeps: nothing to say
