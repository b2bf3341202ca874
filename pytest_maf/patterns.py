"""Reservation patterns: normalising, matching a path, and deciding overlap exactly.

A pattern is a repository-relative gitignore pattern, read as if written in a
``.gitignore`` at the repository root:

* ``*`` matches any run of characters within one path segment, ``?`` one
  character, ``[...]`` one character of a class (``[!...]`` or ``[^...]``
  negates); none of them matches ``/``. A backslash makes the next character
  literal.
* ``**`` as a whole segment matches any number of segments: ``src/**`` is
  everything under ``src``, ``**/test_*.py`` a test file at any depth, and
  ``a/**/b`` matches ``a/b`` and ``a/x/y/b``.
* A pattern with no ``/`` (but a trailing one) matches at any depth, glob or
  plain name: ``*.md`` and ``README.md`` cover ``docs/README.md`` too. A
  ``/`` anywhere else anchors it at the root: ``src/app.py`` is that one
  path, and a leading ``/`` anchors a single name: ``/README.md`` is the
  root README only.
* As git reads a pathspec, a glob anchored at the root (a ``/`` before its
  end) with no ``**`` before its last name also covers the path spelled
  exactly as written: ``app/[slug]/page.tsx`` covers the file
  of that name (a route of Next.js or SvelteKit), as well as ``app/s/page.tsx``.
  So one spelling reserves the same in every worktree, whether the file is
  there yet or not.
* Trailing spaces are dropped, as in a ``.gitignore``, unless escaped with a backslash.
* The directory rule: a pattern covers every path it matches and everything
  beneath a matched path. ``docs``, ``docs/`` and ``app/*`` cover
  ``docs/api.md`` and ``app/models/user.py``. A trailing ``/`` matches
  directories only: ``docs/`` does not cover a file named ``docs``.

Canonical forms round-trip through :func:`normalize_pattern`: ``README.md``
(any depth), ``/README.md`` (root only), ``docs/`` (a directory ``docs`` at
any depth), ``docs/**`` (the root ``docs``), ``src/app.py``.

Two patterns overlap if and only if some path is covered by both;
:func:`overlap_witness` decides it exactly, by searching the product of the
two patterns' automata, and returns the shortest such path.
"""

from __future__ import annotations

import functools
import re
from collections import deque

from pytest_maf.errors import UsageError
from pytest_maf.gitignore_lines import drop_trailing_spaces, refuse_other_meanings
from pytest_maf.light_dataclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Hashable
    from typing import TypeVar

    Node = TypeVar("Node", bound=Hashable)

MAX_CODEPOINT = 0x10FFFF
# Bounds at the door: matching and overlap stay fast for every pattern stored.
MAX_PATTERN_LENGTH = 1024
MAX_PATTERN_WILDCARDS = 32
SLASH = ord("/")
# Character sets are sorted tuples of inclusive codepoint ranges (NUL excluded).
Charset = tuple[tuple[int, int], ...]
ANY: Charset = ((1, MAX_CODEPOINT),)
NON_SLASH: Charset = ((1, SLASH - 1), (SLASH + 1, MAX_CODEPOINT))
ONLY_SLASH: Charset = ((SLASH, SLASH),)
GLOB_CHARACTERS = frozenset("*?[\\")
# Witness characters are chosen from these first, so witnesses read naturally.
PREFERRED = "abcdefghijklmnopqrstuvwxyz0123456789_-."


def check_pattern_text(text: str) -> None:
    """Raise :class:`UsageError` for text that cannot be a pattern (empty, control characters)."""
    if not text or not text.strip():
        raise UsageError("an empty pattern reserves nothing; give a path or a glob")
    if "\0" in text or not text.isprintable():
        raise UsageError(f"pattern {text!r} contains control characters")
    if re.match(r"^[A-Za-z]:[\\/]", text):
        raise UsageError(f"pattern {text!r} is a Windows path; give it relative to the repository root")


def _explicit_segments(text: str) -> list[str]:
    """A pattern's segments with gitignore's anchoring made explicit.

    A pattern with no ``/`` but a trailing one floats (it gets a leading
    ``**``); a trailing ``/`` becomes a last ``**``. Empty and ``.`` segments
    are dropped and runs of ``**`` collapsed. ``..`` is left for the caller.
    """
    body = text.strip("/")
    floating = not text.startswith("/") and "/" not in body
    segments = body.split("/")
    if "" in segments or "." in segments or "**" in segments:
        segments = []
        for segment in body.split("/"):
            if segment not in ("", ".") and not (segment == "**" and segments and segments[-1] == "**"):
                segments.append(segment)
    if not segments:
        return []
    if text.endswith("/") and segments == ["**"]:
        segments = ["*", "**"]  # "**/": everything beneath any directory
    elif text.endswith("/") and segments[-1] != "**":
        segments.append("**")
    if floating and segments[0] != "**":
        segments.insert(0, "**")
    return segments


def _render(segments: list[str]) -> str:
    """The canonical text of explicit segments: the shortest that reads back the same, and never
    starting with what a .gitignore reads as a negation or a comment ('**/!x', '/!x/y')."""
    if len(segments) == 2 and segments[0] == "**" and segments[1] != "**":
        text = segments[1]  # any depth: "README.md"
    elif len(segments) == 3 and segments[0] == segments[2] == "**" and segments[1] != "**":
        text = f"{segments[1]}/"  # a directory at any depth: "docs/"
    elif len(segments) == 1 and segments[0] != "**":
        return f"/{segments[0]}"  # anchored at the root: "/README.md"
    else:
        text = "/".join(segments)
    if text[0] not in "!#":
        return text
    return ("/" if "/" in text.rstrip("/") else "**/") + text


def normalize_pattern(text: str) -> str:
    """Return the canonical form of a repository-relative pattern, or raise :class:`UsageError`.

    A leading ``/`` anchors at the repository root; a pattern without a ``/``
    (but a trailing one) matches at any depth and keeps that form.

    >>> normalize_pattern("./src//app/")
    'src/app/**'
    >>> normalize_pattern("/README.md"), normalize_pattern("**/README.md"), normalize_pattern("docs/")
    ('/README.md', 'README.md', 'docs/')
    """
    text = drop_trailing_spaces(text)
    check_pattern_text(text)
    segments = _explicit_segments(text)
    if ".." in segments:
        raise UsageError(f"pattern {text!r} climbs out of the repository with '..'")
    if not segments:
        raise UsageError(f"pattern {text!r} names the repository root itself; use '**'")
    return _render(segments)


def check_new_pattern(pattern: str) -> str:
    """Refuse, at the door of a new reservation, a pattern too long or too wild to
    match in bounded time, or with a character class no character can match (it
    would reserve nothing). Stored patterns are never refused: they can still be
    listed, checked against and released."""
    check_pattern_text(pattern)
    refuse_other_meanings(drop_trailing_spaces(pattern))  # as given: '**/!x' reads back as '**/!x', '!x' never
    text = normalize_pattern(pattern)
    segments = _explicit_segments(text)
    if re.search(r"\[[!^]?[^\]]*\[:[a-z]+:\]", text):
        raise UsageError(
            f"pattern {text!r} uses a POSIX character class ([:alpha:] and the like), which"
            " pytest-maf does not read as git does; write the range, such as [a-zA-Z]"
        )
    if len(text) > MAX_PATTERN_LENGTH:
        raise UsageError(f"pattern is {len(text)} characters long; the limit is {MAX_PATTERN_LENGTH}")
    wildcards = 0
    for segment in segments:
        if segment == "**":
            wildcards += 1
            continue
        for token in _parse_segment(segment):
            if not token.charset:
                raise UsageError(
                    f"pattern {text!r} has a character class that matches nothing in {segment!r}"
                    " (an empty or reversed range, or only '/'); it would reserve no path"
                )
            wildcards += token.repeat or token.charset == NON_SLASH
    if wildcards > MAX_PATTERN_WILDCARDS:
        raise UsageError(
            f"pattern {text!r} has {wildcards} wildcards; the limit is {MAX_PATTERN_WILDCARDS}"
            " (split it into simpler patterns)"
        )
    return text


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


_GLOB = re.compile("[" + re.escape("".join(sorted(GLOB_CHARACTERS))) + "]")


def _plain(segment: str) -> bool:
    """A segment with no glob characters (so not ``**`` either)."""
    return _GLOB.search(segment) is None


@functools.lru_cache(maxsize=65536)
def _segments_of(pattern: str) -> tuple[str, ...]:
    return tuple(_explicit_segments(pattern))


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
    if not charset:  # a class that matches nothing (refused at the door; an old row may hold one)
        return "(?!)"
    if charset == NON_SLASH:
        return "[^/]"
    parts = []
    for low, high in charset:
        parts.append(re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}")
    return f"[{''.join(parts)}]"


@functools.lru_cache(maxsize=65536)
def literal_prefix(pattern: str) -> tuple[str, ...]:
    """The leading segments of a normalised pattern that are plain names.

    Empty for a pattern that matches at any depth (``*.md``, ``README.md``).
    Every path the pattern covers starts with these segments.
    Cheap: nothing is compiled.
    """
    prefix = []
    for segment in _segments_of(pattern):
        if not _plain(segment):
            break
        prefix.append(segment)
    return tuple(prefix)


def leading_folders(pattern: str) -> tuple[str, ...]:
    """The folders, named plainly, that every path a normalised pattern covers passes through: its
    :func:`literal_prefix` but its last name. ``a/b/c.py`` and ``/a/b/`` pass through ``a/b``; a
    pattern that matches at any depth, through none.

    >>> leading_folders("a/b/c.py"), leading_folders("/a/b/"), leading_folders("a/*/c"), leading_folders("b/")
    (('a', 'b'), ('a', 'b'), ('a',), ())
    """
    return literal_prefix(pattern)[: len(_segments_of(pattern)) - 1]


def anchor(pattern: str) -> str:
    """A normalised pattern's first plain segment, or '' when it can match at any depth.

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
    if segments[-1] != "**":
        # The directory rule: a matched path covers everything beneath it.
        slash, beneath = automaton.state(), automaton.state()
        automaton.moves[current].append((ONLY_SLASH, slash))
        automaton.moves[slash].append((ANY, beneath))
        automaton.moves[beneath].append((ANY, beneath))
        automaton.accepting.add(beneath)
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
    if segments[-1] != "**":
        parts.append("(?:/.+)?")  # the directory rule
    return re.compile("".join(parts), re.DOTALL)


class Step:
    """A move of an automaton: on which characters other than '/', whether on '/', to where."""

    __slots__ = ("characters", "slash", "target")

    def __init__(self, characters: Charset, slash: bool, target: int) -> None:
        self.characters = characters
        self.slash = slash
        self.target = target


class CompiledPattern:
    """A normalised pattern; its automaton and regex are built on first use.

    Both accept what the pattern matches and everything beneath it.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.segments = _segments_of(text)
        self.literal = all(_plain(segment) for segment in self.segments)
        self.plain_path = "/".join(self.segments) if self.literal else ""

    @functools.cached_property
    def automaton(self) -> Automaton:
        return _build_automaton(list(self.segments))

    @functools.cached_property
    def steps(self) -> tuple[list[list[Step]], frozenset[int]]:
        """The automaton without epsilon moves, and its accepting states, for the searches."""
        automaton = self.automaton
        moves: list[list[Step]] = []
        accepting = set()
        for state in range(len(automaton.moves)):
            closure = automaton.closure(state)
            if closure & automaton.accepting:
                accepting.add(state)
            moves.append([
                Step(_intersect(charset, NON_SLASH), bool(_intersect(charset, ONLY_SLASH)), target)
                for source in sorted(closure)
                for charset, target in automaton.moves[source]
            ])
        return moves, frozenset(accepting)

    @functools.cached_property
    def spelled_path(self) -> str:
        """The path the pattern also covers spelled as written (:func:`as_spelled`), with a last
        ``/**`` where it ends in '/' (a folder only); '' where there is none. Made on first use."""
        segments = self.segments
        body = segments[:-1] if segments[-1] == "**" else segments
        if self.literal or "**" in body or any("\\" in segment for segment in body) or all(map(_plain, body)):
            return ""
        return "/".join(segments)

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return _build_regex(list(self.segments))

    @functools.cached_property
    def segment_range(self) -> tuple[int, float]:
        """The fewest and most path segments the pattern itself matches (before the directory rule)."""
        plain = sum(1 for segment in self.segments if segment != "**")
        fewest = plain + (1 if self.segments[-1] == "**" else 0)
        return fewest, float("inf") if "**" in self.segments else plain

    @functools.cached_property
    def last_affixes(self) -> tuple[str, str] | None:
        """The plain text the last segment of a path the pattern itself matches must start and end with.

        None when unknown. Beneath such a path, the directory rule covers anything.
        """
        last = self.segments[-1]
        if last == "**":
            return None
        if _plain(last):
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
        """Whether the pattern covers the concrete repository-relative ``path`` (or a directory above it)."""
        if self.literal:
            return path == self.plain_path or path.startswith(self.plain_path + "/")
        if self.regex.fullmatch(path) is not None:
            return True
        spelled = self.spelled_path
        return bool(spelled) and (path == spelled or path.startswith(spelled.removesuffix("/**") + "/"))


@functools.lru_cache(maxsize=65536)
def as_spelled(pattern: str) -> str | None:
    r"""A normalised pattern read as the path spelled as written, its glob characters escaped:
    ``app/[slug]/page.tsx`` -> ``app/\[slug]/page.tsx``. None where that adds nothing (no glob
    character) or where git reads no path so (``**`` before a name: any depth; a backslash).

    >>> as_spelled("app/[slug]/page.tsx"), as_spelled("src/*.py"), as_spelled("*.md")
    ('app/\\[slug]/page.tsx', 'src/\\*.py', None)
    """
    spelled = compile_pattern(pattern).spelled_path
    if not spelled:
        return None
    segments = spelled.split("/")
    body = segments[:-1] if segments[-1] == "**" else segments
    return _render([escape_glob(segment) for segment in body] + segments[len(body):])


def escape_glob(text: str) -> str:
    """``text`` with each glob character escaped: a gitignore pattern that matches that name literally."""
    return _GLOB.sub(lambda found: "\\" + found.group(), text)


@functools.lru_cache(maxsize=65536)
def compile_pattern(pattern: str) -> CompiledPattern:
    """The compiled form of a normalised pattern (cached)."""
    return CompiledPattern(pattern)


def matches(pattern: str, path: str) -> bool:
    """Whether ``pattern`` covers the concrete ``path`` (both repository-relative).

    >>> matches("docs", "docs/api.md"), matches("/README.md", "docs/README.md")
    (True, False)
    """
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


@functools.lru_cache(maxsize=4096)
def _common(left: Charset, right: Charset) -> Charset:
    return _intersect(left, right)


@functools.lru_cache(maxsize=4096)
def _pick(charset: Charset) -> str:
    for char in PREFERRED:
        if any(low <= ord(char) <= high for low, high in charset):
            return char
    return chr(charset[0][0])


# Well-formed paths: non-empty segments separated by single '/'.
_AT_SEGMENT_START, _IN_SEGMENT = 0, 1


def _spelled(parents: dict[Node, tuple[Node, str] | None], node: Node) -> str:
    """The characters on the way to ``node`` in a breadth-first search's parents."""
    characters = []
    step = parents[node]
    while step is not None:
        node, char = step
        characters.append(char)
        step = parents[node]
    return "".join(reversed(characters))


def _literal_prefixes_disjoint(left: str, right: str) -> bool:
    for mine, theirs in zip(literal_prefix(left), literal_prefix(right)):
        if mine != theirs:
            return True
    return False


def _plainly_disjoint(left: CompiledPattern, right: CompiledPattern) -> bool:
    """Cheap, sound tests that no path can match both (False means: search).

    Only for two patterns that match paths of one same number of segments:
    then a common path's first that many segments match both, so the last
    of them must agree with both patterns' plain affixes.
    """
    (left_min, left_max), (right_min, right_max) = left.segment_range, right.segment_range
    if not left_min == left_max == right_min == right_max:
        return False
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
    # Every path a plain pattern covers lies at or beneath its plain_path: that is the
    # shortest common path when the other pattern covers it; else the other one must
    # match something deeper.
    if left.literal and right.literal:
        for plain, other in ((left, right), (right, left)):
            if other.matches(plain.plain_path):
                return plain.plain_path
        return None
    for plain, other in ((left, right), (right, left)):
        if plain.literal:
            if other.matches(plain.plain_path):
                return plain.plain_path
            if other.segment_range[1] <= len(plain.segments):
                return None
            return _shortest_beneath(plain.plain_path, other)
    return _shortest_common(left, right)


def _shortest_beneath(plain_path: str, pattern: CompiledPattern) -> str | None:
    """The shortest path beneath ``plain_path`` that ``pattern`` covers, or None.

    A breadth-first search of the pattern's automaton alone, from where
    reading ``plain_path/`` leaves it. Paths are well formed: no empty segment.
    """
    moves, accepting = pattern.steps
    current = {0}
    for char in plain_path + "/":
        code = ord(char)
        current = {
            step.target
            for state in current
            for step in moves[state]
            if (step.slash if char == "/" else any(low <= code <= high for low, high in step.characters))
        }
        if not current:
            return None
    parents: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {
        (state, _AT_SEGMENT_START): None for state in sorted(current)
    }
    queue = deque(parents)
    while queue:
        node = queue.popleft()
        state, shape = node
        if shape == _IN_SEGMENT and state in accepting:
            return f"{plain_path}/{_spelled(parents, node)}"
        for step in moves[state]:
            if step.slash and shape == _IN_SEGMENT and (step.target, _AT_SEGMENT_START) not in parents:
                parents[(step.target, _AT_SEGMENT_START)] = (node, "/")
                queue.append((step.target, _AT_SEGMENT_START))
            if step.characters and (step.target, _IN_SEGMENT) not in parents:
                parents[(step.target, _IN_SEGMENT)] = (node, _pick(step.characters))
                queue.append((step.target, _IN_SEGMENT))
    return None


def _shortest_common(left: CompiledPattern, right: CompiledPattern) -> str | None:
    """The shortest well-formed path both cover: a breadth-first search of the automata's product."""
    moves_a, accepting_a = left.steps
    moves_b, accepting_b = right.steps
    start = (0, 0, _AT_SEGMENT_START)
    parents: dict[tuple[int, int, int], tuple[tuple[int, int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        state_a, state_b, shape = node
        if shape == _IN_SEGMENT and state_a in accepting_a and state_b in accepting_b:
            return _spelled(parents, node)
        for step_a in moves_a[state_a]:
            for step_b in moves_b[state_b]:
                if step_a.slash and step_b.slash and shape == _IN_SEGMENT:
                    following = (step_a.target, step_b.target, _AT_SEGMENT_START)
                    if following not in parents:
                        parents[following] = (node, "/")
                        queue.append(following)
                if step_a.characters and step_b.characters:
                    following = (step_a.target, step_b.target, _IN_SEGMENT)
                    if following not in parents:
                        common = _common(step_a.characters, step_b.characters)
                        if common:
                            parents[following] = (node, _pick(common))
                            queue.append(following)
    return None


def overlap_witness(left: str, right: str) -> str | None:
    """The shortest path both patterns cover, or None when no path is.

    >>> overlap_witness("src/*.py", "src/a*")
    'src/a.py'
    >>> overlap_witness("app/*", "app/models/user.py")
    'app/models/user.py'
    >>> overlap_witness("/README.md", "docs/README.md") is None
    True
    """
    witnesses = [
        witness
        for mine in _readings(normalize_pattern(left))
        for theirs in _readings(normalize_pattern(right))
        if (witness := _overlap_compiled(mine, theirs)) is not None
    ]
    return min(witnesses, key=len, default=None)  # the first of the shortest: the glob's own, where it has one


def _readings(pattern: str) -> tuple[str, ...]:
    """The pattern as a glob and, where it is one, as the path spelled as written (:func:`as_spelled`)."""
    spelled = as_spelled(pattern)
    return (pattern,) if spelled is None else (pattern, spelled)
