"""Reservation paths and patterns on the command line, read as git reads them:
relative to the current directory in either worktree, absolute paths inside
the repository, gitignore's anchoring and its directory rule, through the
installed `maf` command in a scratch repository with two worktrees."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import hypothesis.strategies as st
import pathspec
import pytest
from hypothesis import given, settings

from pytest_maf.errors import UsageError
from pytest_maf.paths import WorkingDirectory, repository_path, repository_pattern
from pytest_maf.patterns import matches
from workspace import Workspace


def ok(completed: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert completed.returncode == 0, (completed.stdout, completed.stderr)
    return completed


def acquire(workspace: Workspace, cwd: Path, agent: str, *patterns: str) -> subprocess.CompletedProcess[str]:
    return workspace.maf(cwd, "reservation", "acquire", *patterns, "--agent", agent, "--json", agent=agent)


def granted(completed: subprocess.CompletedProcess[str]) -> list[str]:
    ok(completed)
    return [reservation["pattern"] for reservation in json.loads(completed.stdout)["granted"]]


def check(workspace: Workspace, cwd: Path, agent: str, *paths: str) -> subprocess.CompletedProcess[str]:
    return workspace.maf(cwd, "reservation", "check", *paths, "--agent", agent, agent=agent)


def test_a_name_given_in_a_subdirectory_of_the_other_worktree_is_reserved_there(workspace: Workspace) -> None:
    app = workspace.second / "src" / "app"

    # No '/': any depth below src/app, as in a .gitignore there.
    assert granted(acquire(workspace, app, "alice", "models.py")) == ["src/app/**/models.py"]

    from_root = check(workspace, workspace.main, "bob", "src/app/models.py")
    assert from_root.returncode == 1, from_root.stdout
    assert "src/app/models.py: blocked, alice holds src/app/**/models.py" in from_root.stdout
    from_app = check(workspace, workspace.main / "src" / "app", "bob", "models.py")
    assert from_app.returncode == 1 and "src/app/models.py: blocked, alice" in from_app.stdout
    assert check(workspace, workspace.main, "bob", "models.py").returncode == 0  # the root has none
    assert check(workspace, workspace.main, "bob", "README.md").returncode == 0


def test_a_path_with_a_slash_is_anchored_in_the_current_directory(workspace: Workspace) -> None:
    src = workspace.main / "src"

    assert granted(acquire(workspace, src, "alice", "./app/models.py", "../docs/api.md")) == [
        "src/app/models.py", "docs/api.md",
    ]

    blocked = check(workspace, workspace.second, "bob", "src/app/models.py", "docs/api.md", "README.md")
    assert blocked.returncode == 1
    assert "src/app/models.py: blocked" in blocked.stdout and "docs/api.md: blocked" in blocked.stdout
    assert "README.md: free" in blocked.stdout
    status = ok(workspace.maf(src / "app", "reservation", "status", "--file", "models.py", "--json"))
    assert [r["agent_id"] for r in json.loads(status.stdout)["reservations"]] == ["alice"]


def test_an_absolute_path_inside_the_work_tree_is_that_exact_path(workspace: Workspace, tmp_path: Path) -> None:
    # Through a symlinked directory, as a temporary directory often is.
    link = tmp_path / "linked"
    link.symlink_to(workspace.second, target_is_directory=True)

    assert granted(acquire(workspace, workspace.second / "docs", "alice", str(link / "src" / "app" / "models.py"))) == [
        "src/app/models.py",
    ]
    assert granted(acquire(workspace, workspace.main / "docs", "alice", f"{workspace.main}/README.md")) == [
        "/README.md",
    ]

    assert check(workspace, workspace.main, "bob", str(workspace.main / "src" / "app" / "models.py")).returncode == 1
    assert check(workspace, workspace.main, "bob", "docs/README.md").returncode == 0
    # As in git, another worktree's absolute path is outside this one.
    elsewhere = check(workspace, workspace.main, "bob", str(workspace.second / "README.md"))
    assert elsewhere.returncode == 2 and "outside the work tree" in elsewhere.stderr


@pytest.mark.parametrize(
    ("where", "pattern"),
    [("", "../x"), ("src", "../../x"), ("", "/etc/hosts"), ("src/app", "../../..")],
    ids=["dot-dot-from-the-root", "dot-dot-from-src", "absolute-outside", "the-parent-of-the-root"],
)
def test_a_pattern_escaping_the_repository_exits_2_and_writes_nothing(
    workspace: Workspace, where: str, pattern: str
) -> None:
    database = workspace.main / ".maf"
    before = {path.name: path.read_bytes() for path in database.iterdir()}

    refused = acquire(workspace, workspace.main / where, "alice", pattern)

    assert refused.returncode == 2, refused.stdout
    assert len(refused.stderr.splitlines()) == 1 and refused.stderr.startswith("maf: error: "), refused.stderr
    assert json.loads(refused.stdout) == {"error": refused.stderr.removeprefix("maf: error: ").strip(), "exit_code": 2}
    assert {path.name: path.read_bytes() for path in database.iterdir()} == before


def test_a_path_beyond_a_symbolic_link_is_refused_as_git_add_refuses_it(workspace: Workspace, tmp_path: Path) -> None:
    main = workspace.main
    (main / "appl").symlink_to("src/app")  # a link inside the repository
    (main / "ext").symlink_to(tmp_path)  # and one out of it
    database = main / ".maf"
    before = {path.name: path.read_bytes() for path in database.iterdir()}

    for where, pattern, instead in (
        (main, "appl/models.py", "give appl, or the path it leads to, src/app/models.py"),
        (main / "src", "../appl/", "give appl, or the path it leads to, src/app/**"),
        (main, str(main / "appl" / "models.py"), "src/app/models.py"),
        (main, "ext/x", "give ext\n"),
        (main, "ext/*", "give ext\n"),
    ):
        refused = acquire(workspace, where, "alice", pattern)
        assert refused.returncode == 2, refused.stdout
        assert "is beyond a symbolic link" in refused.stderr and instead in refused.stderr, refused.stderr
        # git agrees: it never stages a path through a link, so a reservation there would protect nothing
        added = subprocess.run(["git", "add", "--", pattern], cwd=where, capture_output=True, text=True)
        assert added.returncode != 0 and "beyond a symbolic link" in added.stderr, added.stderr
    asked = check(workspace, main, "bob", "appl/models.py")
    assert asked.returncode == 2 and "src/app/models.py" in asked.stderr, asked.stderr
    as_folder = check(workspace, main, "bob", "appl/")  # to git a link is a file: no folder of its own
    assert as_folder.returncode == 2 and "give appl, or the path it leads to, src/app/" in as_folder.stderr
    assert {path.name: path.read_bytes() for path in database.iterdir()} == before

    assert granted(acquire(workspace, main, "alice", "appl", "src/app/models.py")) == ["appl", "src/app/models.py"]
    assert "blocked, alice holds src/app/models.py" in check(workspace, main, "bob", "src/app/models.py").stdout


def test_a_reservation_made_before_its_directory_became_a_link_can_still_be_released(workspace: Workspace) -> None:
    main = workspace.main
    assert granted(acquire(workspace, main, "alice", "vendor/lib.py")) == ["vendor/lib.py"]
    (main / "vendor").symlink_to("src")

    released = workspace.maf(main, "reservation", "release", "vendor/lib.py", "--agent", "alice", "--json", agent="alice")

    assert [r["pattern"] for r in json.loads(ok(released).stdout)] == ["vendor/lib.py"]


@pytest.mark.parametrize(
    ("where", "pattern", "stored", "covered"),
    [
        ("", "docs", "docs", "docs/api.md"),
        ("", "docs/", "docs/", "docs/guide/index.md"),
        ("src", "app/*", "src/app/*", "src/app/models/user.py"),
        ("src/app", ".", "src/app", "src/app/models.py"),
    ],
    ids=["directory-name", "trailing-slash", "glob-above-the-file", "dot"],
)
def test_a_pattern_covers_everything_beneath_what_it_matches(
    workspace: Workspace, where: str, pattern: str, stored: str, covered: str
) -> None:
    assert granted(acquire(workspace, workspace.main / where, "alice", pattern)) == [stored]

    blocked = check(workspace, workspace.second, "bob", covered)
    assert blocked.returncode == 1 and f"{covered}: blocked, alice holds {stored}" in blocked.stdout
    assert acquire(workspace, workspace.second, "bob", covered).returncode == 1


def test_a_leading_slash_anchors_at_the_root_and_a_plain_name_matches_at_any_depth(workspace: Workspace) -> None:
    app = workspace.second / "src" / "app"

    assert granted(acquire(workspace, app, "alice", "/README.md")) == ["/README.md"]
    assert granted(acquire(workspace, workspace.main, "bob", "docs/README.md")) == ["docs/README.md"]
    assert check(workspace, workspace.main, "bob", "README.md").returncode == 1
    assert check(workspace, workspace.main, "alice", "docs/README.md").returncode == 1
    assert check(workspace, workspace.main, "carol", "src/README.md").returncode == 0

    conflict = acquire(workspace, workspace.main, "carol", "README.md")
    assert conflict.returncode == 1
    holders = {(c["holder"], c["example_path"]) for c in json.loads(conflict.stdout)["conflicts"]}
    assert holders == {("alice", "README.md"), ("bob", "docs/README.md")}


def test_the_guard_blocks_a_commit_beneath_a_reserved_directory_in_the_other_worktree(workspace: Workspace) -> None:
    assert granted(acquire(workspace, workspace.main, "alice", "docs")) == ["docs"]

    workspace.stage(workspace.second, "docs/api.md")
    blocked = workspace.maf(workspace.second / "src", "guard", "--agent", "bob", agent="bob")

    assert blocked.returncode == 1, (blocked.stdout, blocked.stderr)
    assert "docs/api.md" in blocked.stdout and "alice" in blocked.stdout
    assert workspace.maf(workspace.second, "guard", "--agent", "alice", agent="alice").returncode == 0


# The rule itself, without git: a pattern given in a subdirectory reads as a
# line of a .gitignore there (pathspec is the oracle). Left out on purpose:
# '.' and '..', which a .gitignore does not resolve and a command line does
# (as git's own pathspecs do), and a leading '/', which on the command line
# means the repository root from any directory.

relative_patterns = st.builds(
    lambda segments, trail, spaces: "/".join(segments) + trail + spaces,
    st.lists(st.sampled_from(["a", "b", "*", "?", "a*", "[ab]", "**", "x.py", "*.py"]), min_size=1, max_size=3),
    st.sampled_from(["", "/"]),
    st.sampled_from(["", " ", "  "]),  # trailing spaces, which git drops before it reads the line
)
relative_paths = st.lists(st.sampled_from(["a", "b", "ab", "x.py", "a.py"]), min_size=1, max_size=4).map("/".join)


@settings(max_examples=500, deadline=None)
@given(pattern=relative_patterns, path=relative_paths, directory=st.sampled_from(["", "src", "src/app"]))
def test_a_pattern_given_in_a_directory_reads_as_a_gitignore_line_there(pattern: str, path: str, directory: str) -> None:
    stored = repository_pattern(pattern, directory)
    expected = pathspec.GitIgnoreSpec.from_lines([pattern]).match_file(path)

    assert matches(stored, f"{directory}/{path}".lstrip("/")) == expected, (pattern, directory, stored)
    if directory:
        assert not matches(stored, path), (pattern, directory, stored)  # nothing outside the directory


@pytest.mark.parametrize(
    ("text", "directory", "stored"),
    [
        ("models.py", "src/app", "src/app/**/models.py"),
        ("./models.py", "src/app", "src/app/models.py"),
        ("app/*", "src", "src/app/*"),
        ("docs/", "src", "src/**/docs/**"),
        ("../x", "src", "/x"),
        ("../docs/", "src", "docs/**"),
        ("/README.md", "src/app", "/README.md"),  # a leading '/' is the repository root, from anywhere
        ("README.md", "", "README.md"),
        ("..", "src/app", "/src"),
    ],
)
def test_command_line_patterns_become_repository_patterns(text: str, directory: str, stored: str) -> None:
    assert repository_pattern(text, directory) == stored


@pytest.mark.parametrize(
    ("text", "directory"),
    [("../x", ""), ("../../x", "src"), ("a/**/../b", "src"), ("", "src"), (".", ""), ("/", "src")],
)
def test_patterns_that_leave_the_repository_or_name_nothing_are_refused(text: str, directory: str) -> None:
    with pytest.raises(UsageError) as refused:
        repository_pattern(text, directory)
    assert repr(text) in str(refused.value) or not text  # what was typed, not what it was read as


def test_paths_are_concrete() -> None:
    assert repository_path("models.py", "src/app") == "src/app/models.py"
    assert repository_path("../../README.md", "src/app") == "README.md"
    assert repository_path("/docs/api.md", "src") == "docs/api.md"
    with pytest.raises(UsageError):
        repository_path("../x", "")


def test_a_leading_slash_is_an_anchor_unless_it_is_a_path_on_this_machine(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    here = WorkingDirectory.of(tmp_path / "src")  # no git: the directory given is the top

    assert here.inside == "" and here.pattern("/README.md") == "/README.md"
    assert here.pattern("/lib/") == "lib/**"  # one name: gitignore's root anchor, though /lib may exist
    assert here.pattern(str(tmp_path / "src" / "app" / "x.py")) == "app/x.py"
    with pytest.raises(UsageError, match="outside the work tree"):
        here.pattern("/etc/hosts")
    with pytest.raises(UsageError, match="outside the work tree"):
        here.path(str(tmp_path / "elsewhere" / "x.py"))


def test_a_glob_covers_the_path_spelled_as_written_in_every_worktree_as_git_reads_a_pathspec(
    workspace: Workspace,
) -> None:
    assert granted(acquire(workspace, workspace.main, "alice", "app/[slug]/page.tsx")) == ["app/[slug]/page.tsx"]
    route = workspace.second / "app" / "[slug]"  # made in the other worktree, after the reservation
    route.mkdir(parents=True)
    (route / "page.tsx").write_text("export default 1\n")

    taken = check(workspace, workspace.second, "bob", "app/[slug]/page.tsx")
    assert taken.returncode == 1 and "blocked, alice" in taken.stdout  # before: free; only app/s/page.tsx was
    assert check(workspace, workspace.second, "bob", "app/s/page.tsx").returncode == 1  # the glob, as git reads it
    refused = acquire(workspace, workspace.second, "carol", "app/\\[slug]/page.tsx")  # that file alone
    assert refused.returncode == 1 and "app/[slug]/page.tsx" in refused.stderr
    # the same spelling is the same reservation from either worktree: alice lets go of it from the other one
    released = workspace.maf(workspace.second, "reservation", "release", "app/[slug]/page.tsx", agent="alice")
    assert released.returncode == 0, released.stderr
    assert check(workspace, workspace.second, "bob", "app/[slug]/page.tsx").returncode == 0


def test_trailing_spaces_are_dropped_as_in_a_gitignore_so_the_reservation_protects_the_file(workspace: Workspace) -> None:
    assert granted(acquire(workspace, workspace.main, "alice", "README.md ")) == ["README.md"]  # before: 'README.md '

    taken = check(workspace, workspace.second, "bob", "README.md")
    assert taken.returncode == 1 and "blocked, alice" in taken.stdout  # before: free
    spaces = acquire(workspace, workspace.main, "bob", "   ")
    assert spaces.returncode == 2 and "an empty pattern reserves nothing" in spaces.stderr


def test_a_trailing_space_after_a_folder_leaves_it_floating_as_the_folder_without_it(workspace: Workspace) -> None:
    # 'build/ ' is 'build/': a build folder at any depth (before: build/**, the root one only)
    assert granted(acquire(workspace, workspace.main, "alice", "build/ ", "tmp/  ")) == ["build/", "tmp/"]
    assert granted(acquire(workspace, workspace.main / "src", "alice", "cache/ ")) == ["src/**/cache/**"]

    taken = check(workspace, workspace.second, "bob", "src/app/build/x.o")
    assert taken.returncode == 1 and "blocked, alice holds build/" in taken.stdout


def test_an_escaped_trailing_space_stays_part_of_the_name(workspace: Workspace) -> None:
    # as in a .gitignore: 'notes\\ ' is the name 'notes ', while an escaped backslash leaves the space unescaped
    assert granted(acquire(workspace, workspace.main, "alice", "notes\\ ", "raw\\\\ ")) == ["notes\\ ", "raw\\\\"]


@pytest.mark.parametrize("pattern", ["app/[slug]/page.tsx", "[ab]/x.py", "docs/v?.md"])
def test_a_glob_covers_what_git_lists_for_it_as_a_pathspec(workspace: Workspace, pattern: str) -> None:
    from pytest_maf.patterns import matches

    files = ["app/[slug]/page.tsx", "app/s/page.tsx", "app/x/page.tsx", "[ab]/x.py", "a/x.py", "c/x.py",
             "docs/v?.md", "docs/v1.md", "docs/v12.md"]
    for name in files:
        (workspace.main / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace.main / name).write_text("x\n")
    workspace.git(workspace.main, "add", "--", *(f":(literal){name}" for name in files))

    listed = set(workspace.git(workspace.main, "ls-files", "--", pattern).splitlines())  # git, the oracle

    assert listed >= {pattern}  # git takes the path spelled as written, and the glob's matches
    assert {name for name in files if matches(pattern, name)} == listed
