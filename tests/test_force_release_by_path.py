"""`maf reservation release --force PATH`: a file releases every reservation that covers it, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends import store_of_env, store_rows
from pytest_maf.store import Store
from workspace import Workspace


def opened(workspace: Workspace, env: dict[str, str]) -> Store:
    return store_of_env(env, workspace.main)


def held(workspace: Workspace, env: dict[str, str]) -> set[tuple[str, str]]:
    listed = workspace.maf(workspace.main, "reservation", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    return {(row["pattern"], row["agent_id"]) for row in json.loads(listed.stdout)}


def inbox(workspace: Workspace, agent: str) -> list[dict[str, str]]:
    folder = workspace.main / ".agent-mail" / "messages" / agent
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def reserve(workspace: Workspace, env: dict[str, str], agent: str, pattern: str) -> None:
    acquired = workspace.maf(workspace.main, "reservation", "acquire", pattern, "--shared", agent=agent, **env)
    assert acquired.returncode == 0, acquired.stderr


def test_a_file_releases_exactly_the_reservations_covering_it_and_tells_each_holder(
    workspace: Workspace, store_env: dict[str, str]
) -> None:
    reserve(workspace, store_env, "alice", "src/**")
    reserve(workspace, store_env, "bob", "src/app/models.py")
    reserve(workspace, store_env, "carol", "*.py")
    reserve(workspace, store_env, "dave", "src/app/views.py")  # beside the file, not over it
    reserve(workspace, store_env, "erin", "docs/**")

    released = workspace.maf(
        workspace.main / "src", "reservation", "release", "--force", "app/models.py", "--reason", "stuck for hours",
        agent="lead", **store_env,
    )

    assert released.returncode == 0, released.stderr
    assert sorted(released.stdout.splitlines()) == [
        "released *.py held by carol (carol was told by agent-mail)",
        "released src/** held by alice (alice was told by agent-mail)",
        "released src/app/models.py held by bob (bob was told by agent-mail)",
    ]
    assert held(workspace, store_env) == {("src/app/views.py", "dave"), ("docs/**", "erin")}
    for holder, pattern in (("alice", "src/**"), ("bob", "src/app/models.py"), ("carol", "*.py")):
        (notice,) = inbox(workspace, holder)
        assert (notice["type"], notice["from"], notice["pattern"], notice["reason"]) == (
            "RESERVATION_FORCE_RELEASED", "lead", pattern, "stuck for hours"
        )
        assert notice.get("path") == (None if pattern == "src/app/models.py" else "src/app/models.py")
    assert inbox(workspace, "dave") == [] and inbox(workspace, "erin") == []
    with opened(workspace, store_env) as store:
        events = store.read(lambda t: t.reservation_events("force_release"))
    assert sorted((event.agent_id, event.data["holder"], event.data["pattern"]) for event in events) == [
        ("lead", "alice", "src/**"), ("lead", "bob", "src/app/models.py"), ("lead", "carol", "*.py"),
    ]


def test_json_names_each_released_reservation(workspace: Workspace, store_env: dict[str, str]) -> None:
    reserve(workspace, store_env, "alice", "docs/")
    reserve(workspace, store_env, "bob", "docs/api.md")

    released = workspace.maf(
        workspace.main, "reservation", "release", "--force", "docs/api.md", "--reason", "urgent", "--json",
        agent="lead", **store_env,
    )

    assert released.returncode == 0, released.stderr
    assert sorted((row["pattern"], row["agent_id"]) for row in json.loads(released.stdout)) == [
        ("docs/", "alice"), ("docs/api.md", "bob")
    ]
    assert held(workspace, store_env) == set()


def test_a_glob_is_still_released_by_its_exact_pattern_only(workspace: Workspace, store_env: dict[str, str]) -> None:
    reserve(workspace, store_env, "alice", "src/**")
    reserve(workspace, store_env, "bob", "src/app/*.py")

    released = workspace.maf(
        workspace.main, "reservation", "release", "--force", "src/app/*.py", "--reason", "stuck", agent="lead",
        **store_env,
    )

    assert released.returncode == 0, released.stderr
    assert released.stdout.splitlines() == ["released src/app/*.py held by bob (bob was told by agent-mail)"]
    assert held(workspace, store_env) == {("src/**", "alice")}


@pytest.mark.parametrize(
    "name, said",
    [
        ("/etc/hosts", "is outside the work tree"),
        ("../elsewhere/app.py", "leads out of the repository"),
        ("README.md", "nobody holds a live reservation on 'README.md'"),
    ],
    ids=["absolute-outside", "climbing-out", "covered-by-nothing"],
)
def test_a_path_outside_or_covered_by_nothing_is_refused_and_nothing_changes(
    workspace: Workspace, store_env: dict[str, str], name: str, said: str
) -> None:
    reserve(workspace, store_env, "alice", "src/**")
    with opened(workspace, store_env) as store:
        before = store_rows(store)

    # the covered src/app/models.py comes first: the whole request is refused, not half done
    refused = workspace.maf(
        workspace.main, "reservation", "release", "--force", "src/app/models.py", name, "--reason", "stuck",
        agent="lead", **store_env,
    )

    assert refused.returncode == 2
    assert refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("maf: error: ") and said in line
    with opened(workspace, store_env) as store:
        assert store_rows(store) == before
    assert inbox(workspace, "alice") == []
    assert not Path(workspace.main / ".agent-mail" / "messages").exists() or not any(
        (workspace.main / ".agent-mail" / "messages").rglob("*.json")
    )
