"""Reservation patterns: normalising, matching a path, and deciding overlap exactly.

A pattern is a repository-relative path or a gitignore-style glob:

* ``*`` matches any run of characters within one path segment, ``?`` one
  character, ``[...]`` one character of a class (``[!...]`` or ``[^...]``
  negates); none of them matches ``/``. A backslash makes the next character
  literal.
* ``**`` as a whole segment matches any number of segments: ``src/**`` is
  everything under ``src``, ``**/test_*.py`` a test file at any depth, and
  ``a/**/b`` matches ``a/b`` and ``a/x/y/b``.
* As in gitignore, a glob with no ``/`` matches at any depth: ``*.md`` is
  ``**/*.md``, so it covers ``docs/x.md`` too. A plain path with no glob
  characters always means that one path from the repository root.
* A trailing ``/`` means the directory and everything under it:
  ``docs/`` is ``docs/**``.

Two patterns overlap if and only if some path matches both;
:func:`overlap_witness` decides it exactly, by searching the product of the
two patterns' automata, and returns the shortest such path.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from dataclasses import dataclass, field

from pytest_maf.errors import UsageError

MAX_CODEPOINT = 0x10FFFF
SLASH = ord("/")
# Character sets are sorted tuples of inclusive codepoint ranges (NUL excluded).
Charset = tuple[tuple[int, int], ...]
ANY: Charset = ((1, MAX_CODEPOINT),)
NON_SLASH: Charset = ((1, SLASH - 1), (SLASH + 1, MAX_CODEPOINT))
ONLY_SLASH: Charset = ((SLASH, SLASH),)
GLOB_CHARACTERS = frozenset("*?[\\")
# Witness characters are chosen from these first, so witnesses read naturally.
PREFERRED = "abcdefghijklmnopqrstuvwxyz0123456789_-."


def normalize_pattern(text: str) -> str:
    """Return the canonical form of a pattern, or raise :class:`UsageError`.

    >>> normalize_pattern("./src//app/")
    'src/app/**'
    """
    if not text or not text.strip():
        raise UsageError("an empty pattern reserves nothing; give a path or a glob")
    if "\0" in text or not text.isprintable():
        raise UsageError(f"pattern {text!r} contains control characters")
    if text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text):
        raise UsageError(
            f"pattern {text!r} is absolute; give it relative to the repository root"
        )
    directory = text.endswith("/")
    segments = [segment for segment in text.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise UsageError(f"pattern {text!r} climbs out of the repository with '..'")
    if not segments:
        raise UsageError(f"pattern {text!r} names the repository root itself; use '**'")
    if directory and segments[-1] != "**":
        segments.append("**")
    collapsed: list[str] = []
    for segment in segments:
        if not (segment == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(segment)
    return "/".join(collapsed)


def normalize_path(text: str) -> str:
    """Return a concrete repository-relative path in canonical form."""
    if not text or "\0" in text:
        raise UsageError(f"path {text!r} is empty or contains NUL")
    if text.startswith("/"):
        raise UsageError(f"path {text!r} is absolute; give it relative to the repository root")
    segments = [segment for segment in text.split("/") if segment not in ("", ".")]
    if ".." in segments or not segments:
        raise UsageError(f"path {text!r} is not inside the repository")
    return "/".join(segments)


def is_literal(pattern: str) -> bool:
    """True for a plain path: no glob characters and no ``**``."""
    return not (GLOB_CHARACTERS & set(pattern))


# Parsing: a segment is "**" or a list of tokens, each a charset with a
# repeat flag ("*" is NON_SLASH repeated).


@dataclass(frozen=True)
class Token:
    charset: Charset
    repeat: bool = False


def _parse_class(segment: str, start: int) -> tuple[Charset, int] | None:
    """Parse ``[...]`` at ``segment[start]``; None when unterminated (then '[' is literal)."""
    index = start + 1
    negate = index < len(segment) and segment[index] in "!^"
    if negate:
        index += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while index < len(segment):
        char = segment[index]
        if char == "]" and not first:
            charset = _normalize(ranges)
            charset = _subtract(NON_SLASH, charset) if negate else _intersect(charset, NON_SLASH)
            return charset, index + 1
        if char == "\\" and index + 1 < len(segment):
            index += 1
            char = segment[index]
        if index + 2 < len(segment) and segment[index + 1] == "-" and segment[index + 2] != "]":
            low, high = ord(char), ord(segment[index + 2])
            if low <= high:
                ranges.append((low, high))
            index += 3
        else:
            ranges.append((ord(char), ord(char)))
            index += 1
        first = False
    return None


def _parse_segment(segment: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            if not (tokens and tokens[-1].repeat):
                tokens.append(Token(NON_SLASH, repeat=True))
            index += 1
        elif char == "?":
            tokens.append(Token(NON_SLASH))
            index += 1
        elif char == "[" and (parsed := _parse_class(segment, index)) is not None:
            tokens.append(Token(parsed[0]))
            index = parsed[1]
        else:
            if char == "\\" and index + 1 < len(segment):
                index += 1
                char = segment[index]
            tokens.append(Token(((ord(char), ord(char)),)))
            index += 1
    return tokens


@dataclass
class Automaton:
    """A nondeterministic automaton over the characters of a path."""

    moves: list[list[tuple[Charset, int]]] = field(default_factory=list)
    epsilons: list[list[int]] = field(default_factory=list)
    accepting: set[int] = field(default_factory=set)

    def state(self) -> int:
        self.moves.append([])
        self.epsilons.append([])
        return len(self.moves) - 1

    def closure(self, state: int) -> frozenset[int]:
        seen = {state}
        stack = [state]
        while stack:
            for target in self.epsilons[stack.pop()]:
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return frozenset(seen)


def _charset_regex(charset: Charset) -> str:
    if charset == NON_SLASH:
        return "[^/]"
    parts = []
    for low, high in charset:
        parts.append(re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}")
    return f"[{''.join(parts)}]"


def _segments(pattern: str) -> list[str]:
    segments = pattern.split("/")
    if len(segments) == 1 and not is_literal(pattern) and pattern != "**":
        return ["**", *segments]  # gitignore: a glob without '/' matches at any depth
    return segments


@functools.lru_cache(maxsize=65536)
def literal_prefix(pattern: str) -> tuple[str, ...]:
    """The leading segments of a normalised pattern that are plain names.

    Empty for a glob that matches at any depth. Cheap: nothing is compiled.
    """
    prefix = []
    for segment in _segments(pattern):
        if not is_literal(segment):
            break
        prefix.append(segment)
    return tuple(prefix)


def anchor(pattern: str) -> str:
    """A normalised pattern's first plain segment, or '' when it starts with a glob.

    Patterns with different non-empty anchors never overlap.
    """
    prefix = literal_prefix(pattern)
    return prefix[0] if prefix else ""


def _build_automaton(segments: list[str]) -> Automaton:
    automaton = Automaton()
    current = automaton.state()
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**" and last:
            # One or more whole segments: anything non-empty (paths are well formed).
            rest = automaton.state()
            automaton.moves[current].append((ANY, rest))
            automaton.moves[rest].append((ANY, rest))
            current = rest
            continue
        if segment == "**":
            # Nothing, or any run of segments each followed by '/'.
            after, inside = automaton.state(), automaton.state()
            automaton.epsilons[current].append(after)
            automaton.moves[current].append((ANY, inside))
            automaton.moves[inside].append((ANY, inside))
            automaton.moves[inside].append((ONLY_SLASH, after))
            current = after
            continue
        for token in _parse_segment(segment):
            if token.repeat:
                loop = automaton.state()
                automaton.epsilons[current].append(loop)
                automaton.moves[loop].append((token.charset, loop))
                current = loop
            else:
                following = automaton.state()
                automaton.moves[current].append((token.charset, following))
                current = following
        if not last:
            following = automaton.state()
            automaton.moves[current].append((ONLY_SLASH, following))
            current = following
    automaton.accepting.add(current)
    return automaton


def _build_regex(segments: list[str]) -> re.Pattern[str]:
    """The same language as :func:`_build_automaton`, for matching concrete paths fast."""
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".+" if last else "(?:.*/)?")
            continue
        for token in _parse_segment(segment):
            parts.append(_charset_regex(token.charset) + ("*" if token.repeat else ""))
        if not last:
            parts.append("/")
    return re.compile("".join(parts), re.DOTALL)


class CompiledPattern:
    """A normalised pattern; its automaton and regex are built on first use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.segments = tuple(_segments(text))
        self.literal = is_literal(text)

    @functools.cached_property
    def automaton(self) -> Automaton:
        return _build_automaton(list(self.segments))

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return _build_regex(list(self.segments))

    @functools.cached_property
    def segment_range(self) -> tuple[int, float]:
        """The fewest and most path segments a match can have."""
        plain = sum(1 for segment in self.segments if segment != "**")
        fewest = plain + (1 if self.segments[-1] == "**" else 0)
        return fewest, float("inf") if "**" in self.segments else plain

    @functools.cached_property
    def last_affixes(self) -> tuple[str, str] | None:
        """The plain text a match's last segment must start and end with, if known."""
        last = self.segments[-1]
        if last == "**":
            return None
        if is_literal(last):
            return last, last
        if "[" not in last and "\\" not in last:  # only '*' and '?': no parse needed
            cut_start = min(i for i in (last.find("*"), last.find("?")) if i >= 0)
            cut_end = max(last.rfind("*"), last.rfind("?"))
            return last[:cut_start], last[cut_end + 1 :]
        tokens = _parse_segment(last)

        def plain_run(ordered: list[Token]) -> str:
            run = []
            for token in ordered:
                if token.repeat or len(token.charset) != 1 or token.charset[0][0] != token.charset[0][1]:
                    break
                run.append(chr(token.charset[0][0]))
            return "".join(run)

        return plain_run(tokens), plain_run(tokens[::-1])[::-1]

    def matches(self, path: str) -> bool:
        """Whether the concrete repository-relative ``path`` matches."""
        if self.literal:
            return path == self.text
        return self.regex.fullmatch(path) is not None


@functools.lru_cache(maxsize=65536)
def compile_pattern(pattern: str) -> CompiledPattern:
    """The compiled form of a normalised pattern (cached)."""
    return CompiledPattern(pattern)


def matches(pattern: str, path: str) -> bool:
    """Whether the concrete ``path`` matches ``pattern`` (both repository-relative)."""
    return compile_pattern(normalize_pattern(pattern)).matches(normalize_path(path))


# Charset arithmetic.


def _normalize(ranges: list[tuple[int, int]]) -> Charset:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def _intersect(left: Charset, right: Charset) -> Charset:
    result = []
    i = j = 0
    while i < len(left) and j < len(right):
        low, high = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if low <= high:
            result.append((low, high))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return tuple(result)


def _subtract(left: Charset, right: Charset) -> Charset:
    result = []
    for low, high in left:
        for cut_low, cut_high in right:
            if cut_high < low or cut_low > high:
                continue
            if cut_low > low:
                result.append((low, cut_low - 1))
            low = cut_high + 1
            if low > high:
                break
        if low <= high:
            result.append((low, high))
    return tuple(result)


def _pick(charset: Charset) -> str:
    for char in PREFERRED:
        if any(low <= ord(char) <= high for low, high in charset):
            return char
    return chr(charset[0][0])


# Well-formed paths: non-empty segments separated by single '/'.
_AT_SEGMENT_START, _IN_SEGMENT = 0, 1


def _path_moves(state: int) -> list[tuple[Charset, int]]:
    if state == _AT_SEGMENT_START:
        return [(NON_SLASH, _IN_SEGMENT)]
    return [(NON_SLASH, _IN_SEGMENT), (ONLY_SLASH, _AT_SEGMENT_START)]


def _literal_prefixes_disjoint(left: str, right: str) -> bool:
    for mine, theirs in zip(literal_prefix(left), literal_prefix(right)):
        if mine != theirs:
            return True
    return False


def _plainly_disjoint(left: CompiledPattern, right: CompiledPattern) -> bool:
    """Cheap, sound tests that no path can match both (False means: search)."""
    (left_min, left_max), (right_min, right_max) = left.segment_range, right.segment_range
    if left_max < right_min or right_max < left_min:
        return True
    if left.last_affixes is None or right.last_affixes is None:
        return False
    (left_start, left_end), (right_start, right_end) = left.last_affixes, right.last_affixes
    starts_agree = left_start.startswith(right_start) or right_start.startswith(left_start)
    ends_agree = left_end.endswith(right_end) or right_end.endswith(left_end)
    return not (starts_agree and ends_agree)


@functools.lru_cache(maxsize=65536)
def _overlap_compiled(left_text: str, right_text: str) -> str | None:
    if _literal_prefixes_disjoint(left_text, right_text):
        return None
    left, right = compile_pattern(left_text), compile_pattern(right_text)
    if _plainly_disjoint(left, right):
        return None
    if is_literal(left_text):
        return left_text if right.matches(left_text) else None
    if is_literal(right_text):
        return right_text if left.matches(right_text) else None
    a, b = left.automaton, right.automaton
    closures_a = [a.closure(s) for s in range(len(a.moves))]
    closures_b = [b.closure(s) for s in range(len(b.moves))]
    start = (0, 0, _AT_SEGMENT_START)
    parents: dict[tuple[int, int, int], tuple[tuple[int, int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        state_a, state_b, shape = node
        if (
            shape == _IN_SEGMENT
            and closures_a[state_a] & a.accepting
            and closures_b[state_b] & b.accepting
        ):
            characters = []
            while parents[node] is not None:
                node, char = parents[node]  # type: ignore[misc]
                characters.append(char)
            return "".join(reversed(characters))
        for from_a in closures_a[state_a]:
            for charset_a, to_a in a.moves[from_a]:
                for from_b in closures_b[state_b]:
                    for charset_b, to_b in b.moves[from_b]:
                        both = _intersect(charset_a, charset_b)
                        if not both:
                            continue
                        for charset_path, to_shape in _path_moves(shape):
                            common = _intersect(both, charset_path)
                            following = (to_a, to_b, to_shape)
                            if common and following not in parents:
                                parents[following] = (node, _pick(common))
                                queue.append(following)
    return None


def overlap_witness(left: str, right: str) -> str | None:
    """A path matched by both patterns, or None when no path is.

    >>> overlap_witness("src/*.py", "src/a*")
    'src/a.py'
    >>> overlap_witness("app/*", "app/models/user.py") is None
    True
    """
    return _overlap_compiled(normalize_pattern(left), normalize_pattern(right))
