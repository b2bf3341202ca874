"""Who an agent is (--agent, else MAF_AGENT_ID; one id rule), the guard's one policy
(override with a reason, recorded once, holders told), force-release notices
delivered after the release commits, and runtime files kept out of git.

Each test drives the installed ``maf``, ``pytest`` and ``git`` in a scratch
repository with a linked worktree (the ``workspace`` fixture).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_maf.store import open_store

if TYPE_CHECKING:
    from workspace import Workspace

OVERRIDE = {"MAF_RESERVATION_OVERRIDE": "true", "MAF_OVERRIDE_REASON": "docs release today"}
TEAM_ALICE_REFUSED = "maf: error: agent id 'team/alice' may not contain '/', '\\', NUL or control characters\n"
NO_AGENT = "maf: error: give --agent or set MAF_AGENT_ID\n"


def override_events(workspace: Workspace) -> list[Any]:
    with open_store(workspace.main / ".maf" / "runtime.db") as store:
        return store.read(lambda t: t.reservation_events("override"))


def inbox(workspace: Workspace, agent: str) -> list[dict[str, Any]]:
    listed = workspace.maf(workspace.main, "mail", "list", "--json", agent=agent)
    assert listed.returncode == 0, listed.stderr
    messages: list[dict[str, Any]] = json.loads(listed.stdout)
    return messages


def reservations(workspace: Workspace) -> list[dict[str, Any]]:
    listed = workspace.maf(workspace.main, "reservation", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def preflight_staged_check(workspace: Workspace, cwd: Path, agent: str, **env: str) -> subprocess.CompletedProcess[str]:
    return workspace.pytest(
        cwd, "--maf-preflight", "-k", "test_no_staged_path_is_reserved_by_another_agent", agent=agent, **env
    )


def test_the_override_needs_a_reason_then_lets_guard_and_preflight_pass_recorded_once(workspace: Workspace) -> None:
    acquired = workspace.maf(workspace.main, "reservation", "acquire", "docs/api.md", "--reason", "rewrite", agent="alice")
    assert acquired.returncode == 0, acquired.stderr
    workspace.stage(workspace.second, "docs/api.md")

    blocked = workspace.maf(workspace.second, "guard", agent="bob")
    assert blocked.returncode == 1
    assert "docs/api.md: alice holds docs/api.md (exclusive)" in blocked.stdout
    assert preflight_staged_check(workspace, workspace.second, "bob").returncode == 1
    assert workspace.maf(workspace.second, "reservation", "check", "docs/api.md", agent="bob").returncode == 1
    assert workspace.maf(workspace.second, "reservation", "check", "docs/api.md", agent="alice").returncode == 0

    for reason in (None, "", "   "):
        env = {"MAF_RESERVATION_OVERRIDE": "true", **({} if reason is None else {"MAF_OVERRIDE_REASON": reason})}
        refused = workspace.maf(workspace.second, "guard", agent="bob", **env)
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1 and 'MAF_OVERRIDE_REASON="why" git commit' in refused.stderr
        assert preflight_staged_check(workspace, workspace.second, "bob", **env).returncode == 1
    assert override_events(workspace) == []
    assert inbox(workspace, "alice") == []

    guarded = workspace.maf(workspace.second, "guard", agent="bob", **OVERRIDE)
    assert guarded.returncode == 0, guarded.stdout + guarded.stderr
    assert "warning" in guarded.stderr and "docs release today" in guarded.stderr
    preflight = preflight_staged_check(workspace, workspace.second, "bob", **OVERRIDE)
    assert preflight.returncode == 0, preflight.stdout + preflight.stderr

    # One override of one commit: the guard and the preflight's check record it once.
    (event,) = override_events(workspace)
    assert event.agent_id == "bob"
    assert (event.data["paths"], event.data["holders"], event.data["reason"]) == (
        ["docs/api.md"], [["alice", "docs/api.md"]], "docs release today",
    )
    (notice,) = inbox(workspace, "alice")
    assert notice["type"] == "RESERVATION_OVERRIDDEN"
    assert (notice["from"], notice["paths"], notice["reason"]) == ("bob", ["docs/api.md"], "docs release today")
    assert "RESERVATION_OVERRIDDEN  from bob" in workspace.maf(workspace.main, "mail", "list", agent="alice").stdout


def test_a_real_commit_through_installed_hooks_needs_the_override(workspace: Workspace) -> None:
    assert workspace.maf(workspace.second, "install-hooks").returncode == 0
    assert workspace.maf(workspace.main, "reservation", "acquire", "docs/api.md", agent="alice").returncode == 0
    workspace.stage(workspace.second, "docs/api.md")

    def commit(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "commit", "-q", "-m", "api docs"], cwd=workspace.second, capture_output=True, text=True,
            env=workspace.env("bob", **env),
        )

    blocked = commit()
    assert blocked.returncode != 0 and "docs/api.md: alice" in blocked.stdout + blocked.stderr
    assert commit(MAF_RESERVATION_OVERRIDE="true").returncode != 0  # no reason
    assert override_events(workspace) == []

    committed = commit(**OVERRIDE)

    assert committed.returncode == 0, committed.stdout + committed.stderr
    assert workspace.git(workspace.second, "log", "-1", "--format=%s").strip() == "api docs"
    assert len(override_events(workspace)) == 1
    assert [m["type"] for m in inbox(workspace, "alice")] == ["RESERVATION_OVERRIDDEN"]


def test_a_store_named_but_missing_fails_closed(workspace: Workspace, tmp_path: Path) -> None:
    workspace.stage(workspace.second, "README.md")

    result = workspace.maf(workspace.second, "guard", agent="bob", MAF_DB_PATH=str(tmp_path / "nowhere.db"))

    assert result.returncode == 2 and "fails closed" in result.stderr


def test_maf_agent_id_is_enough_and_neither_is_one_line_exit_2(workspace: Workspace) -> None:
    root = workspace.main
    reserved = workspace.maf(root, "reservation", "acquire", "README.md", agent="alice")
    assert reserved.returncode == 0 and "for alice" in reserved.stdout
    assert workspace.maf(root, "reservation", "renew", "README.md", agent="alice").returncode == 0
    escalated = workspace.maf(
        root, "escalate", "--error-context", "stuck", "--bead-id", "bd-1", "--target", "codex-senior", "--json",
        agent="alice",
    )
    assert escalated.returncode == 0, escalated.stderr
    assert json.loads(escalated.stdout)["message"]["from"] == "alice"
    sent = workspace.maf(root, "mail", "send", "--to", "bob", "--subject", "hi", "--body", "rebase", agent="alice")
    assert sent.returncode == 0, sent.stderr
    (message,) = inbox(workspace, "bob")
    assert message["from"] == "alice"
    assert workspace.maf(root, "mail", "ack", message["id"], agent="bob").returncode == 0
    assert workspace.maf(root, "reservation", "release", "README.md", agent="alice").returncode == 0
    # The old spelling still works, unadvertised.
    deprecated = workspace.maf(
        root, "escalate", "--agent-id", "carol", "--error-context", "x", "--bead-id", "bd-2", "--target",
        "codex-senior", "--json",
    )
    assert deprecated.returncode == 0 and json.loads(deprecated.stdout)["message"]["from"] == "carol"
    assert "--agent-id" not in workspace.maf(root, "escalate", "--help").stdout

    for argv in (
        ["reservation", "acquire", "README.md"],
        ["reservation", "renew", "README.md"],
        ["reservation", "release", "README.md"],
        ["mail", "list"],
        ["mail", "ack", message["id"]],
        ["mail", "send", "--to", "bob", "--subject", "s", "--body", "b"],
        ["escalate", "--error-context", "x", "--bead-id", "bd-1", "--target", "codex-senior"],
    ):
        result = workspace.maf(root, *argv)
        assert (result.returncode, result.stderr, result.stdout) == (2, NO_AGENT, ""), argv
    assert reservations(workspace) == []


def test_an_id_that_cannot_receive_mail_is_refused_by_every_command_alike(workspace: Workspace) -> None:
    root = workspace.main
    workspace.stage(root, "README.md")
    commands = [
        ["reservation", "acquire", "README.md", "--agent", "team/alice"],
        ["reservation", "check", "README.md", "--agent", "team/alice"],
        ["mail", "list", "--agent", "team/alice"],
        ["mail", "send", "--from", "team/alice", "--to", "bob", "--subject", "s", "--body", "b"],
        ["escalate", "--agent", "team/alice", "--error-context", "x", "--bead-id", "bd-1", "--target", "codex-senior"],
        ["task", "claim", "--agent", "team/alice"],
        ["guard"],
    ]
    for argv in commands:
        result = workspace.maf(root, *argv, agent="team/alice")
        assert (result.returncode, result.stderr) == (2, TEAM_ALICE_REFUSED), argv
    to_team = workspace.maf(root, "mail", "send", "--to", "team/alice", "--subject", "s", "--body", "b", agent="bob")
    assert to_team.returncode == 2 and "recipient id 'team/alice' may not contain '/'" in to_team.stderr
    assert reservations(workspace) == []
    assert not (root / ".agent-mail").exists()


def test_any_id_the_store_accepts_can_be_force_released_and_told(workspace: Workspace) -> None:
    holder = "équipe alice (docs)"
    assert workspace.maf(workspace.main, "reservation", "acquire", "docs/api.md", agent=holder).returncode == 0

    released = workspace.maf(
        workspace.main, "reservation", "release", "docs/api.md", "--force", "--reason", "stuck for hours", agent="lead"
    )

    assert released.returncode == 0, released.stderr
    assert f"({holder} was told by agent-mail)" in released.stdout
    assert reservations(workspace) == []
    (notice,) = inbox(workspace, holder)
    assert (notice["type"], notice["from"], notice["reason"]) == ("RESERVATION_FORCE_RELEASED", "lead", "stuck for hours")


def test_a_force_release_stands_when_its_notice_cannot_be_delivered(workspace: Workspace) -> None:
    assert workspace.maf(workspace.main, "reservation", "acquire", "docs/api.md", agent="alice").returncode == 0
    (workspace.main / ".agent-mail").write_text("a file where the mail root should be\n")

    released = workspace.maf(
        workspace.main, "reservation", "release", "docs/api.md", "--force", "--reason", "stuck", agent="lead"
    )

    assert released.returncode == 0, released.stderr
    assert reservations(workspace) == []
    (warning,) = [line for line in released.stderr.splitlines() if line.startswith("maf: warning:")]
    assert "alice was not told by agent-mail (notice msg-" in warning
    assert "was told" not in released.stdout
    with open_store(workspace.main / ".maf" / "runtime.db") as store:
        (event,) = store.read(lambda t: t.reservation_events("force_release"))
    assert (event.agent_id, event.data["holder"]) == ("lead", "alice")


def test_an_override_whose_notice_cannot_be_delivered_still_passes_and_says_so(workspace: Workspace) -> None:
    assert workspace.maf(workspace.main, "reservation", "acquire", "docs/api.md", agent="alice").returncode == 0
    (workspace.main / ".agent-mail").write_text("not a directory\n")
    workspace.stage(workspace.second, "docs/api.md")

    guarded = workspace.maf(workspace.second, "guard", agent="bob", **OVERRIDE)

    assert guarded.returncode == 0
    assert "the override is recorded, but alice was not told by agent-mail" in guarded.stderr
    assert len(override_events(workspace)) == 1


@pytest.mark.parametrize("where", ["main", "second"])
def test_setup_and_init_keep_runtime_files_out_of_git(workspace: Workspace, where: str) -> None:
    cwd = workspace.main if where == "main" else workspace.second
    exclude = workspace.main / ".git" / "info" / "exclude"
    exclude.unlink()
    exclude.parent.rmdir()  # info/ is created when missing

    first = workspace.maf(cwd, "setup")
    again = workspace.maf(cwd, "setup", "--json")
    initialised = workspace.maf(cwd, "init", "--json")
    sent = workspace.maf(cwd, "mail", "send", "--to", "bob", "--subject", "s", "--body", "b", agent="alice")

    assert first.returncode == again.returncode == initialised.returncode == sent.returncode == 0
    assert "kept .maf/ and .agent-mail/ out of git (.git/info/exclude)" in first.stdout
    for report in (json.loads(again.stdout), json.loads(initialised.stdout)):
        assert report["excluded"]["entries"] == [".maf/", ".agent-mail/"]
        assert report["excluded"]["added"] == []
    lines = exclude.read_text().splitlines()
    assert lines.count("/.maf/") == 1 and lines.count("/.agent-mail/") == 1
    status = workspace.git(workspace.main, "status", "--porcelain", "--untracked-files=all")
    assert ".maf/" not in status and ".agent-mail/" not in status
    assert "maf-config/default.yaml" in status  # configuration is meant to be committed
    workspace.git(workspace.main, "add", "-A")
    staged = workspace.git(workspace.main, "diff", "--cached", "--name-only")
    assert staged.split() == ["maf-config/default.yaml"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("v\x00\n", "may not contain '/', '\\', NUL or control characters"),
        ("alice\n", "may not contain '/', '\\', NUL or control characters"),  # a newline is no space
        (" alice", "may not start or end with a space"),
    ],
)
def test_an_id_is_refused_for_what_is_wrong_with_it(value: str, problem: str) -> None:
    from pytest_maf.ids import id_problem

    assert id_problem(value) == problem
