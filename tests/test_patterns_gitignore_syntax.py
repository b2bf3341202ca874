"""Gitignore syntax that means something other than a name (a negation, a comment, a trailing
backslash, a '/' inside [...]) is refused with the spelling to use instead, never stored as a
literal name; pathspec, which reads .gitignore lines as git does, is the oracle."""

from __future__ import annotations

import json
import re

import pathspec
import pytest

from pytest_maf import reservations as r
from pytest_maf.errors import UsageError
from pytest_maf.patterns import matches, normalize_pattern
from pytest_maf.store import Store
from workspace import Workspace

# Each refused text, the literal name a user may have meant, and what the message says to write.
REFUSED = [
    ("!src/a.py", "!src/a.py", "'\\!src/a.py'"),
    ("#x", "#x", "'\\#x'"),
    ("src\\", "src\\", "'src\\\\'"),
    ("[/]", "[/]", "'?' is any one character"),
    ("src/[!/]", "src/[!/]", "'?' is any one character"),
]


def read_by_git(line: str, path: str) -> bool | None:
    """Whether pathspec's .gitignore reading of ``line`` matches ``path``; None when it refuses the line."""
    try:
        return pathspec.GitIgnoreSpec.from_lines([line]).match_file(path)
    except pathspec.patterns.gitwildmatch.GitWildMatchPatternError:
        return None


@pytest.mark.parametrize(("text", "name", "advice"), REFUSED, ids=[text for text, _, _ in REFUSED])
def test_git_never_reads_the_refused_text_as_the_name(text: str, name: str, advice: str) -> None:
    assert not read_by_git(text, name)


@pytest.mark.parametrize(("text", "name", "advice"), REFUSED, ids=[text for text, _, _ in REFUSED])
def test_acquire_refuses_it_saying_what_to_write_and_reserves_nothing(
    workspace: Workspace, text: str, name: str, advice: str
) -> None:
    for cwd in (workspace.main, workspace.main / "src"):  # from a subdirectory too: anchoring hides no '!'
        refused = workspace.maf(cwd, "reservation", "acquire", text, "--agent", "alice", agent="alice")

        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert refused.stderr.startswith(f"maf: error: pattern '{text}' ") and advice in refused.stderr
        assert "Traceback" not in refused.stderr and refused.stdout == ""
    listed = workspace.maf(workspace.main, "reservation", "list", "--all", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


@pytest.mark.parametrize(("escaped", "name"), [("\\!src/a.py", "!src/a.py"), ("\\#x", "#x"), ("src\\\\", "src\\")])
def test_the_advised_spelling_reserves_the_name_as_git_reads_it(workspace: Workspace, escaped: str, name: str) -> None:
    assert read_by_git(escaped, name)
    acquired = workspace.maf(workspace.main, "reservation", "acquire", escaped, "--agent", "alice", agent="alice")
    assert acquired.returncode == 0, acquired.stderr

    taken = workspace.maf(workspace.main, "reservation", "check", name, "--agent", "bob", agent="bob")
    assert taken.returncode == 1 and "blocked, alice" in taken.stdout


@pytest.mark.parametrize(
    ("text", "covered"),
    [("**/!x", "src/!x"), ("**/#x/", "src/#x/a"), ("/!x/y", "!x/y/z"), ("docs/!x", "docs/!x")],
)
def test_a_name_starting_with_bang_or_hash_after_a_slash_is_no_syntax_and_reads_back_as_given(
    text: str, covered: str
) -> None:
    # Names to git; their canonical forms must not start with '!' or '#', which a .gitignore (and
    # the next acquire of the listed pattern) would read as a negation or a comment.
    stored = normalize_pattern(text)

    assert stored == text == normalize_pattern(stored)
    assert matches(stored, covered) and read_by_git(stored, covered)


def test_the_library_refuses_it_as_the_command_line_does(store: Store) -> None:
    for text, _, advice in REFUSED:
        with pytest.raises(UsageError, match=re.escape(advice)):
            r.acquire(store, [text], "alice", 60_000)
    assert r.list_reservations(store, include_expired=True) == []
