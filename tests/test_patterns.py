"""Reservation patterns: normalisation, matching, and exact overlap with a witness."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from pytest_maf.errors import UsageError
from pytest_maf.patterns import (
    compile_pattern,
    matches,
    normalize_pattern,
    overlap_witness,
)

SEGMENT_GLOBS = ["a", "b", "ab", "*", "?", "a*", "*b", "[ab]", "[!a]", "**", "x.py", "*.py"]
PATH_SEGMENTS = ["a", "b", "c", "ab", "ba", "aa", "bb", "x.py", "a.py", "ab.py"]

patterns = st.lists(st.sampled_from(SEGMENT_GLOBS), min_size=1, max_size=4).map("/".join)
paths = st.lists(st.sampled_from(PATH_SEGMENTS), min_size=1, max_size=5).map("/".join)


def automaton_accepts(pattern: str, path: str) -> bool:
    """Run the pattern's automaton itself on a path (the overlap search uses it)."""
    automaton = compile_pattern(normalize_pattern(pattern)).automaton
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
        ("docs/", "docs/guide/index.md"),
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


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("app/*", "app/models/user.py"),
        ("docs/**", "src/**"),
        ("README.md", "docs/README.md"),  # a plain path is that one path from the root
        ("src/*.py", "src/*.js"),
        ("src/**", "src"),
        ("[ab].py", "c.py"),
    ],
)
def test_disjoint_patterns_do_not_conflict(left: str, right: str) -> None:
    assert overlap_witness(left, right) is None
    assert overlap_witness(right, left) is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("./a", "a"), ("a//b", "a/b"), ("a/", "a/**"), ("./src/./x/", "src/x/**"), ("a/**/**/b", "a/**/b")],
)
def test_normalisation(raw: str, normal: str) -> None:
    assert normalize_pattern(raw) == normal


@pytest.mark.parametrize("raw", ["/etc/passwd", "../x", "a/../../b", "", "  ", ".", "a\0b", "C:\\x"])
def test_patterns_outside_the_repository_are_refused(raw: str) -> None:
    with pytest.raises(UsageError):
        normalize_pattern(raw)


def test_names_with_spaces_unicode_and_newlines_match() -> None:
    assert matches("docs/*.md", "docs/read me.md")
    assert matches("données/**", "données/été.csv")
    assert matches("odd/*", "odd/line\nbreak")
    assert not matches("odd/*", "odd/sub/file")


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
def test_automaton_and_regex_agree(pattern: str, path: str) -> None:
    assert automaton_accepts(pattern, path) == matches(pattern, path)


def test_no_witness_means_no_path_in_a_small_universe_matches_both() -> None:
    universe = [
        "/".join(parts)
        for size in (1, 2, 3)
        for parts in itertools.product(PATH_SEGMENTS, repeat=size)
    ]
    pairs = list(itertools.combinations(["a/*", "*.py", "a/**", "**/b", "[!a]/*", "?/a*", "b"], 2))
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
def test_a_match_starts_and_ends_its_last_segment_with_the_plain_affixes(pattern: str, path: str) -> None:
    compiled = compile_pattern(normalize_pattern(pattern))
    if compiled.last_affixes is not None and compiled.matches(path):
        start, end = compiled.last_affixes
        name = path.rsplit("/", 1)[-1]
        assert name.startswith(start) and name.endswith(end)
