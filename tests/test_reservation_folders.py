"""A folder given to `check`, `status --file` and `release --force` (a directory of the work tree,
or a name with a trailing '/'): covered by the reservations over what lies beneath it, on both
backends. The guard, which sees staged files, reads files as before."""

from __future__ import annotations

import json

from workspace import Workspace


def maf_ok(workspace: Workspace, env: dict[str, str], agent: str, *args: str) -> str:
    completed = workspace.maf(workspace.main, *args, agent=agent, **env)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def reserve(workspace: Workspace, env: dict[str, str], agent: str, *patterns: str) -> None:
    maf_ok(workspace, env, agent, "reservation", "acquire", *patterns, "--shared")


def held(workspace: Workspace, env: dict[str, str]) -> set[tuple[str, str]]:
    listed = json.loads(maf_ok(workspace, env, "lead", "reservation", "list", "--json"))
    return {(row["pattern"], row["agent_id"]) for row in listed}


def test_check_finds_a_folder_blocked_by_a_reservation_beneath_it(workspace: Workspace, store_env: dict[str, str]) -> None:
    maf_ok(workspace, store_env, "a2", "reservation", "acquire", "src/", "docs/**")

    checked = workspace.maf(workspace.main, "reservation", "check", "src", "docs", "src/app", "--agent", "a1", **store_env)

    assert checked.returncode == 1, checked.stdout  # before: "src: free", exit 0
    lines = checked.stdout.splitlines()
    assert any(line.startswith("src/: blocked, a2 holds src/ (exclusive) until ") for line in lines), lines
    assert any(line.startswith("docs/: blocked, a2 holds docs/** (exclusive)") for line in lines), lines
    assert any(line.startswith("src/app/: blocked, a2 holds src/ (exclusive)") for line in lines), lines
    from_inside = workspace.maf(workspace.second / "src", "reservation", "check", ".", "--agent", "a1", **store_env)
    assert from_inside.returncode == 1 and "src/: blocked, a2 holds src/" in from_inside.stdout


def test_a_trailing_slash_reads_a_folder_that_is_not_there_yet_and_json_names_a_path_beneath(
    workspace: Workspace, store_env: dict[str, str]
) -> None:
    maf_ok(workspace, store_env, "a2", "reservation", "acquire", "lib/new/x.py")

    checked = workspace.maf(workspace.main, "reservation", "check", "lib/", "lib", "--agent", "a1", "--json", **store_env)

    assert checked.returncode == 1
    (block,) = json.loads(checked.stdout)["blocked"]  # 'lib' with no '/' and no folder there is a file, as before
    assert (block["path"], block["holder"], block["pattern"], block["example_path"]) == (
        "lib/", "a2", "lib/new/x.py", "lib/new/x.py"
    )


def test_a_folder_nothing_reaches_into_is_free(workspace: Workspace, store_env: dict[str, str]) -> None:
    maf_ok(workspace, store_env, "a2", "reservation", "acquire", "/src/")  # the root src only

    checked = workspace.maf(workspace.main, "reservation", "check", "docs", "--agent", "a1", **store_env)

    assert checked.returncode == 0 and checked.stdout == "docs/: free\n"


def test_status_of_a_folder_lists_each_reservation_beneath_it(workspace: Workspace, store_env: dict[str, str]) -> None:
    reserve(workspace, store_env, "a2", "docs/**")
    reserve(workspace, store_env, "a3", "docs/api.md")

    shown = maf_ok(workspace, store_env, "lead", "reservation", "status", "--file", "docs")

    assert "no live reservation" not in shown  # before: "docs: no live reservation"
    assert sorted(line.split(" (")[0] for line in shown.splitlines()) == [
        "docs/: a2 holds docs/**", "docs/: a3 holds docs/api.md"
    ]


def test_force_release_of_a_folder_releases_every_reservation_over_or_inside_it(
    workspace: Workspace, store_env: dict[str, str]
) -> None:
    reserve(workspace, store_env, "a2", "src/")
    reserve(workspace, store_env, "a3", "src/**")
    reserve(workspace, store_env, "a4", "src/app/models.py")
    reserve(workspace, store_env, "a5", "*.md")  # reaches into src (src/a.md) from elsewhere: kept
    reserve(workspace, store_env, "a6", "docs/**")

    released = maf_ok(workspace, store_env, "lead", "reservation", "release", "src", "--force", "--reason", "stuck")

    assert sorted(released.splitlines()) == [  # before: "nobody holds a live reservation on 'src'", exit 2
        "released src/ held by a2 (a2 was told by agent-mail)",
        "released src/** held by a3 (a3 was told by agent-mail)",
        "released src/app/models.py held by a4 (a4 was told by agent-mail)",
    ]
    assert held(workspace, store_env) == {("*.md", "a5"), ("docs/**", "a6")}
    notice = json.loads(next((workspace.main / ".agent-mail" / "messages" / "a4").glob("*.json")).read_text())
    assert (notice["pattern"], notice["path"]) == ("src/app/models.py", "src/")


def test_the_guard_still_reads_staged_files_as_files(workspace: Workspace, store_env: dict[str, str]) -> None:
    maf_ok(workspace, store_env, "a2", "reservation", "acquire", "/src/app/models.py")
    workspace.stage(workspace.main, "src/app/views.py")  # beside the reserved file, in the same folder

    assert workspace.maf(workspace.main, "guard", "--agent", "a1", agent="a1", **store_env).returncode == 0
    workspace.stage(workspace.main, "src/app/models.py")
    blocked = workspace.maf(workspace.main, "guard", "--agent", "a1", agent="a1", **store_env)
    assert blocked.returncode == 1 and "src/app/models.py" in blocked.stdout
