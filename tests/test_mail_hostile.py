"""Agent-mail against another agent that races it, and messages a reader could not open."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from pytest_maf import escalation, history, ids, mail, reservations
from pytest_maf.cli import main
from pytest_maf.config import Settings, load_settings
from pytest_maf.errors import UsageError
from pytest_maf.store import Store


@pytest.fixture
def settings(tmp_path: Path, db_path: Path) -> Settings:
    (tmp_path / ".git").mkdir()
    return load_settings(environ={"MAF_DB_PATH": str(db_path)}, cwd=tmp_path)


def message(recipient: str = "bob") -> dict[str, object]:
    return {"id": mail.new_message_id(), "type": "MESSAGE", "from": "alice", "to": recipient, "subject": "s", "body": "b"}


@pytest.mark.parametrize("swapped", ["messages/bob", "messages", "."])  # the inbox, a folder above it, the root
def test_an_inbox_swapped_for_a_link_after_its_check_receives_nothing_outside_the_root(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: str
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    (outside / "messages" / "bob").mkdir(parents=True)
    (outside / "bob").mkdir()
    mail.initialise(settings.mail_root, ["bob"])
    folder = (settings.mail_root / swapped) if swapped != "." else settings.mail_root
    target = {"messages/bob": outside / "bob", "messages": outside, ".": outside}[swapped]
    checked = mail._folder

    def checked_then_swapped(mail_root: Path, *parts: str, **options: object) -> object:
        found = checked(mail_root, *parts, **options)  # type: ignore[arg-type]
        if parts == ("messages", "bob") and options.get("create"):  # another agent, between check and write
            folder.rename(folder.with_name(folder.name + "-moved"))
            folder.symlink_to(target)
        return found

    monkeypatch.setattr(mail, "_folder", checked_then_swapped)

    with pytest.raises(mail.MailRootError, match="was replaced while it was used|is a symbolic link"):
        mail.deliver(settings.mail_root, message())

    assert [path for path in outside.rglob("*") if path.is_file()] == []


def test_a_send_whose_second_copy_fails_leaves_no_first_copy(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    mail.initialise(settings.mail_root, ["bob"])
    synced = os.fsync
    calls = []

    def full_at_the_outbox(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == 3:  # the inbox copy and its folder are synced; the outbox copy's disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        synced(descriptor)

    monkeypatch.setattr(os, "fsync", full_at_the_outbox)

    with pytest.raises(OSError, match="No space left"):
        mail.send(settings.mail_root, "alice", "bob", "rebase", "main moved", 0)

    monkeypatch.undo()
    assert mail.list_messages(settings.mail_root, "bob") == []  # a retry delivers it once
    sent = mail.send(settings.mail_root, "alice", "bob", "rebase", "main moved", 0)
    assert [found["id"] for found in mail.list_messages(settings.mail_root, "bob")] == [sent["id"]]


def test_an_escalation_too_long_to_read_is_refused_and_records_nothing(store: Store, settings: Settings) -> None:
    with pytest.raises(UsageError, match="the error context is too long: the message would be"):
        escalation.escalate(
            store, settings, agent_id="claude-1", bead_id="bd-42", error_context="x" * (mail.MAX_MESSAGE_BYTES + 1),
            target="codex-senior",
        )

    assert escalation.list_escalations(store) == []
    assert store.read(lambda transaction: transaction.pending_mail()) == []
    mail.send(settings.mail_root, "lead", "codex-senior", "still", "readable", 0)
    assert len(mail.list_messages(settings.mail_root, "codex-senior")) == 1


def test_a_force_release_whose_notice_would_be_unreadable_is_refused_and_releases_nothing(
    store: Store, settings: Settings
) -> None:
    reservations.acquire(store, ["src/**"], "alice", 60_000)

    with pytest.raises(UsageError, match="the reason is 1,048,576 characters long, more than 2,000"):
        reservations.force_release(store, ["src/**"], "lead", "x" * mail.MAX_MESSAGE_BYTES, settings.mail_root)

    assert [held.agent_id for held in reservations.list_reservations(store)] == ["alice"]
    assert store.read(lambda transaction: transaction.pending_mail()) == []


def test_an_override_notice_for_many_paths_keeps_the_first_and_counts_the_rest() -> None:
    from pytest_maf.guard import override_notices
    from pytest_maf.records import Reservation
    from pytest_maf.reservations import Block

    holder = Reservation("alice", "src/**", True, "", 0, 1, None)
    blocks = [Block(f"src/{'d' * 200}/{number:06}.py", holder) for number in range(20_000)]

    (notice,) = override_notices("bob", blocks, "release day", 0)

    assert mail.fits(notice)
    assert notice["paths"][0] == blocks[0].path and notice["more_paths"] == 20_000 - len(notice["paths"])
    assert notice["subject"] == "bob overrode your reservation: 20000 path(s) you reserved let through the guard"


def test_an_id_whose_inbox_name_would_be_too_long_is_refused_everywhere() -> None:
    ids.validate_id("agent", "名" * 85)  # 255 bytes: a file name's limit

    with pytest.raises(UsageError, match="is 270 bytes long in UTF-8; the limit is 255"):
        ids.validate_id("agent", "名" * 90)  # 90 characters
    ids.validate_id("verifier", "名" * 90)  # a label, never a path


def test_history_of_an_agent_holds_each_escalation_request_sent_to_it(store: Store, settings: Settings) -> None:
    for attempt in range(3):  # two levels per target: minimax-debug-1 twice, then codex-senior
        escalation.escalate(
            store, settings, agent_id="claude-1", bead_id="bd-42", error_context=f"hang {attempt}",
            target="minimax-debug-1",
        )

    first = history.history(store, agent="minimax-debug-1")
    second = history.history(store, agent="codex-senior")

    assert [(entry.kind, entry.data["level"]) for entry in first] == [("raise", 2), ("open", 1)]
    assert [(entry.kind, entry.data["level"]) for entry in second] == [("raise", 3)]
    (active,) = escalation.list_escalations(store, "active")
    escalation.close_escalation(store, active.id, "resolved", by="codex-senior")
    assert [entry.kind for entry in history.history(store, agent="codex-senior")][0] == "resolved"


def test_escalate_json_before_the_action_is_kept_and_opening_options_there_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAF_AGENT_ID", raising=False)
    assert main(["setup"]) == 0
    assert main(["escalate", "--agent", "claude-1", "--error-context", "x", "--bead-id", "b", "--target", "codex-senior"]) == 0
    capsys.readouterr()

    assert main(["escalate", "--json", "list"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert main(["escalate", "--json", "resolve", listed["id"], "--agent", "codex-senior"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "resolved"
    assert main(["escalate", "--agent", "claude-1", "--error-context", "y", "--bead-id", "b", "list"]) == 2
    assert "escalate list takes no --agent, --error-context, --bead-id" in capsys.readouterr().err
    assert [row["status"] for row in json.loads(_json_list(capsys))] == ["resolved"]


def _json_list(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["escalate", "list", "--json"]) == 0
    return capsys.readouterr().out


def test_a_first_message_in_a_new_repository_keeps_the_mail_root_out_of_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)

    assert main(["mail", "send", "--from", "a", "--to", "b", "--subject", "s", "--body", "b"]) == 0

    status = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert status.stdout == ""
    assert "/.agent-mail/" in (tmp_path / ".git" / "info" / "exclude").read_text().splitlines()


def test_a_mail_tool_refused_by_the_system_says_why_as_the_command_does() -> None:
    from pytest_maf.mcp_server import _refusals_as_tool_errors

    def mail_send(to: str, subject: str, body: str) -> dict[str, object]:
        raise OSError(errno.EACCES, "Permission denied", "/repo/.agent-mail/outbox/msg-1.json")

    result = _refusals_as_tool_errors(mail_send)("bob", "s", "b")

    assert result.is_error
    assert result.content[0].text == "system: Permission denied: /repo/.agent-mail/outbox/msg-1.json"


def test_mail_list_says_what_a_force_release_notice_is_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    assert main(["setup"]) == 0
    assert main(["reservation", "acquire", "src/**", "--agent", "alice"]) == 0
    assert main(["reservation", "release", "src/**", "--agent", "lead", "--force", "--reason", "alice went quiet"]) == 0
    capsys.readouterr()

    assert main(["mail", "list", "--agent", "alice"]) == 0

    (line,) = capsys.readouterr().out.splitlines()
    assert "RESERVATION_FORCE_RELEASED  from lead: released src/**: alice went quiet" in line
