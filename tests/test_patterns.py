"""Reservation patterns: normalisation, matching, and exact overlap with a witness."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import pathspec
import pytest
from hypothesis import example, given, settings

from pytest_maf.errors import UsageError
from pytest_maf.patterns import (
    _readings,
    compile_pattern,
    literal_prefix,
    matches,
    normalize_pattern,
    overlap_witness,
)

SEGMENT_GLOBS = ["a", "b", "ab", "*", "?", "a*", "*b", "[ab]", "[!a]", "[^a]", "[a-b]", "**", "a**", "x.py", "*.py"]
PATH_SEGMENTS = ["a", "b", "c", "ab", "ba", "aa", "bb", "x.py", "a.py", "ab.py", "[ab]", "*"]

# Gitignore syntax both this module and pathspec read alike: segments from
# SEGMENT_GLOBS, an optional leading '/' (root anchor), an optional trailing
# '/' (directories only). Left out on purpose, because they differ: a
# leading '!' (negation) or '#' (comment), which gitignore treats specially
# and a reservation takes literally. Paths may hold glob characters: a
# pattern under named folders also covers the path spelled as written.
patterns = st.builds(
    lambda lead, segments, trail: lead + "/".join(segments) + trail,
    st.sampled_from(["", "", "/"]),
    st.lists(st.sampled_from(SEGMENT_GLOBS), min_size=1, max_size=4),
    st.sampled_from(["", "", "/"]),
)
paths = st.lists(st.sampled_from(PATH_SEGMENTS), min_size=1, max_size=5).map("/".join)


def gitignore_matches(pattern: str, path: str) -> bool:
    """pathspec's reading of ``pattern`` as one line of a root .gitignore, or of the same text with its
    glob characters escaped where git also reads it as a path (no ``**`` before a name): the oracle."""
    if pathspec.GitIgnoreSpec.from_lines([pattern]).match_file(path):
        return True
    body = pattern.rstrip("/").removesuffix("/**")
    rooted = pattern.startswith("/") or "/" in pattern.rstrip("/")  # a slash before the end anchors a line
    if not rooted or "**" in body.split("/") or not any(glob in body for glob in "*?["):
        return False
    spelled = "".join("\\" + char if char in "*?[" else char for char in body)
    return pathspec.GitIgnoreSpec.from_lines([spelled + pattern[len(body):]]).match_file(path)  # '/', '/**' kept


def automaton_accepts(pattern: str, path: str) -> bool:
    """Run the automata of the pattern's readings (as a glob, and as the path spelled as written
    where it is one) on a path, as the overlap search does."""
    return any(_one_automaton_accepts(reading, path) for reading in _readings(normalize_pattern(pattern)))


def _one_automaton_accepts(pattern: str, path: str) -> bool:
    automaton = compile_pattern(pattern).automaton
    current = automaton.closure(0)
    for char in path:
        following: set[int] = set()
        for state in current:
            for charset, target in automaton.moves[state]:
                if any(low <= ord(char) <= high for low, high in charset):
                    following |= automaton.closure(target)
        current = frozenset(following)
    return bool(current & automaton.accepting)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("src/**", "src/app.py"),
        ("app/models/user.py", "app/**"),
        ("src/app.py", "src/*.py"),
        ("src/*.py", "src/a*"),
        ("*.md", "docs/x.md"),  # gitignore: a glob without '/' matches at any depth
        ("README.md", "docs/README.md"),  # so does a plain name
        ("docs/", "docs/guide/index.md"),
        ("docs", "docs/api.md"),  # the directory rule: everything beneath a match
        ("app/*", "app/models/user.py"),
        ("/src", "src/**"),
        ("src/*.py", "src/*/x.js"),  # src/a.py may be a directory
        ("a/**/b", "a/b"),
        ("**/test_*.py", "tests/unit/test_api.py"),
    ],
)
def test_overlapping_patterns_conflict(left: str, right: str) -> None:
    witness = overlap_witness(left, right)
    assert witness is not None
    assert matches(left, witness) and matches(right, witness)
    assert overlap_witness(right, left) is not None


def test_witness_reads_naturally() -> None:
    assert overlap_witness("src/*.py", "src/a*") == "src/a.py"
    assert overlap_witness("docs", "docs/*/index.md") == "docs/a/index.md"
    assert overlap_witness("src/app", "src/app/models.py") == "src/app/models.py"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("docs/**", "src/**"),
        ("/README.md", "docs/README.md"),  # a leading '/' anchors at the root
        ("src/*.py", "src/*.js"),
        ("a/?", "a/bc"),
        ("src/app.py", "src/app.pyc"),
        ("docs/*.md", "docs/*.txt"),
        ("/[ab].py", "/c.py"),
    ],
)
def test_disjoint_patterns_do_not_conflict(left: str, right: str) -> None:
    assert overlap_witness(left, right) is None
    assert overlap_witness(right, left) is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("a//b", "a/b"),
        ("./src/./x/", "src/x/**"),
        ("a/**/**/b", "a/**/b"),
        ("README.md", "README.md"),  # any depth
        ("**/README.md", "README.md"),
        ("/README.md", "/README.md"),  # the root's only
        ("./a", "/a"),  # a '/' in it anchors it
        ("/etc/passwd", "etc/passwd"),
        ("a/", "a/"),  # a directory at any depth
        ("**/a/**", "a/"),
        ("/a/", "a/**"),
        ("**/", "*/"),
    ],
)
def test_normalisation(raw: str, normal: str) -> None:
    assert normalize_pattern(raw) == normal


@pytest.mark.parametrize("raw", ["/", "../x", "/../x", "a/../../b", "", "  ", ".", "a\0b", "C:\\x"])
def test_patterns_outside_the_repository_are_refused(raw: str) -> None:
    with pytest.raises(UsageError):
        normalize_pattern(raw)


def test_names_with_spaces_unicode_and_newlines_match() -> None:
    assert matches("docs/*.md", "docs/read me.md")
    assert matches("données/**", "données/été.csv")
    assert matches("odd/*", "odd/line\nbreak")
    assert matches("odd/*", "odd/sub/file")  # beneath odd/sub, which odd/* matches
    assert not matches("odd/*", "odd")  # beneath odd, not odd itself
    assert matches("docs", "docs") and not matches("docs/", "docs")  # a trailing '/' is for directories
    assert not matches("docs/*.md", "docs/read me.txt")


@settings(max_examples=1000, deadline=None)
@given(pattern=patterns, path=paths)
def test_matching_agrees_with_gitignore(pattern: str, path: str) -> None:
    assert matches(pattern, path) == gitignore_matches(pattern, path), (pattern, path)


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, path=paths)
@example(pattern="/[ab]/", path="[ab]/a")  # anchored by its slash, its canonical form [ab]/** has it only inside
@example(pattern="/[ab]/", path="[ab]")  # the folder itself: its literal reading holds what lies beneath only
def test_the_canonical_form_reads_back_as_itself_and_means_the_same(pattern: str, path: str) -> None:
    canonical = normalize_pattern(pattern)
    assert normalize_pattern(canonical) == canonical
    assert matches(canonical, path) == matches(pattern, path) == gitignore_matches(canonical, path)


@settings(max_examples=400, deadline=None)
@given(left=patterns, right=patterns)
def test_a_witness_matches_both_patterns(left: str, right: str) -> None:
    witness = overlap_witness(left, right)
    if witness is not None:
        assert matches(left, witness), (left, witness)
        assert matches(right, witness), (right, witness)


@settings(max_examples=400, deadline=None)
@given(left=patterns, right=patterns, path=paths)
def test_no_witness_means_no_path_matches_both(left: str, right: str, path: str) -> None:
    if overlap_witness(left, right) is None:
        assert not (matches(left, path) and matches(right, path)), (left, right, path)


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, path=paths)
@example(pattern="/[ab]/", path="[ab]/a")  # by its literal reading only
def test_automaton_and_regex_agree(pattern: str, path: str) -> None:
    assert automaton_accepts(pattern, path) == matches(pattern, path)


def test_no_witness_means_no_path_in_a_small_universe_matches_both() -> None:
    universe = [
        "/".join(parts)
        for size in (1, 2, 3, 4, 5)  # deep enough for a witness beneath a directory
        for parts in itertools.product(["a", "b", "ab", "x.py"], repeat=size)
    ]
    pairs = list(
        itertools.combinations(["a/*", "*.py", "a/**", "**/b", "[!a]/*", "?/a*", "b", "/b", "a/", "a/b", "ab/*.py"], 2)
    )
    for left, right in pairs:
        both = [path for path in universe if matches(left, path) and matches(right, path)]
        assert (overlap_witness(left, right) is None) == (not both), (left, right, both[:3])


@settings(max_examples=300, deadline=None)
@given(left=patterns, right=patterns)
def test_patterns_with_different_anchors_never_overlap(left: str, right: str) -> None:
    from pytest_maf.patterns import anchor

    left_anchor, right_anchor = anchor(normalize_pattern(left)), anchor(normalize_pattern(right))
    if left_anchor and right_anchor and left_anchor != right_anchor:
        assert overlap_witness(left, right) is None


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, path=paths)
def test_a_covered_path_has_a_segment_below_the_plain_prefix_with_the_plain_affixes(pattern: str, path: str) -> None:
    """What the reservation index relies on: the segment a match ends on (the
    path's own last one, or a directory above it) carries the affixes."""
    normal = normalize_pattern(pattern)
    compiled = compile_pattern(normal)
    if compiled.last_affixes is not None and compiled.matches(path):
        start, end = compiled.last_affixes
        prefix = literal_prefix(normal)
        names = path.split("/")[max(len(prefix), 1) - 1 if compiled.literal else len(prefix):]
        assert any(name.startswith(start) and name.endswith(end) for name in names), (normal, path)
