"""Paths and patterns from the command line, read the way git reads them.

A pattern given in a subdirectory ``sub`` of the repository is read as if it
were written in a ``.gitignore`` file in ``sub``:

* with a ``/`` in it (a trailing one aside) it is anchored there: ``app/*.py``
  from ``src`` is ``src/app/*.py``, and ``./models.py`` is ``src/models.py``;
* without one it matches at any depth below ``sub``: ``*.py`` from ``src`` is
  ``src/**/*.py``.

From the repository root a pattern stays as given. ``..`` may climb while the
result stays inside the repository. A leading ``/`` never depends on the
current directory: an absolute path inside the current work tree is that
exact path; otherwise the ``/`` anchors at the repository root
(``/README.md`` is the root README), except for a path of two or more names
whose first exists at the filesystem root but not at the work tree's top
(``/etc/hosts``, ``/tmp/other/x``): that is a path outside, an error.
Paths for ``check`` and ``status`` are concrete: ``sub/PATH``.

Example::

    repository_pattern("models.py", "src/app")   # -> 'src/app/**/models.py'
    repository_pattern("../x", "src")            # -> '/x'
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from pytest_maf.errors import UsageError
from pytest_maf.gitignore_lines import drop_trailing_spaces, refuse_other_meanings
from pytest_maf.light_dataclass import dataclass
from pytest_maf.patterns import check_pattern_text, leading_folders, normalize_path, normalize_pattern


def _climb(text: str, directory: str) -> list[str]:
    """``text``'s segments joined to ``directory``'s, with ``.`` and ``..`` resolved."""
    segments: list[str] = [segment for segment in directory.split("/") if segment]
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment != "..":
            segments.append(segment)
        elif not segments:
            raise UsageError(f"{text!r} leads out of the repository: a '..' above its top")
        elif segments.pop() == "**":
            raise UsageError(f"{text!r} has '..' after '**', which names no one directory")
    return segments


def repository_pattern(text: str, directory: str = "") -> str:
    """The repository-relative pattern for ``text`` given in ``directory``.

    ``directory`` is repository-relative, '' at the root. A leading ``/``
    anchors at the repository root wherever ``text`` is given.

    >>> repository_pattern("models.py", "src/app"), repository_pattern("./models.py", "src/app")
    ('src/app/**/models.py', 'src/app/models.py')
    >>> repository_pattern("docs/", ""), repository_pattern("../x", "src")
    ('docs/', '/x')
    """
    text = drop_trailing_spaces(text)  # first: 'build/ ' is 'build/', floating as that is
    check_pattern_text(text)
    refuse_other_meanings(text)  # before anchoring in ``directory`` hides a leading '!' or '#'
    if set(text.rstrip("/").split("/")) == {"**"}:
        text = "**/" if text.endswith("/") else "**"  # "**/**/" is "**/": any directory below
    body = text.rstrip("/")
    if text.startswith("/") or "/" in body or body in (".", ".."):
        trailing = "/" if text.endswith("/") and body else ""
        base = "" if text.startswith("/") else directory
        segments = _climb(body, base)
        if not segments:  # ".", "/", "src/.." at the root: not "/", which the user did not type
            raise UsageError(f"pattern {text!r} names the repository root itself; use '**' for everything")
        return normalize_pattern("/" + "/".join(segments) + trailing)
    floating = normalize_pattern(text)  # read at the root first: "**/" is "*/" there
    return normalize_pattern(f"{directory}/**/{floating}") if directory else floating


def repository_path(text: str, directory: str = "") -> str:
    """The concrete repository-relative path for ``text`` given in ``directory``.

    >>> repository_path("models.py", "src/app"), repository_path("../README.md", "src")
    ('src/app/models.py', 'README.md')
    """
    if not text or "\0" in text:
        raise UsageError(f"path {text!r} is empty or contains NUL")
    segments = _climb(text, "" if text.startswith("/") else directory)
    if not segments:
        raise UsageError(f"path {text!r} names the repository root itself, not a file")
    return normalize_path("/".join(segments))


def _relative(path: PurePosixPath | Path, base: PurePosixPath | Path) -> str:
    relative = path.relative_to(base).as_posix()
    return "" if relative == "." else relative


def worktree_top(start: Path) -> Path | None:
    """The top of the git work tree holding ``start`` (a linked worktree's own top), or None."""
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


@dataclass(frozen=True)
class WorkingDirectory:
    """Where a command runs: the top of its work tree, and the directory inside it.

    As in git, an absolute path must lie in the current work tree: one in
    another worktree of the same repository is outside.
    """

    top: Path
    inside: str  # the current directory relative to top, '' at the top

    @classmethod
    def of(cls, cwd: Path) -> WorkingDirectory:
        """The current directory ``cwd``; outside git, ``cwd`` is the top."""
        top = worktree_top(cwd) or cwd
        return cls(top, _relative(cwd, top))

    def _within(self, text: str) -> str | None:
        """An absolute ``text`` relative to the top ('' for the top itself), or None when outside.

        Compared resolved, so a path through a symlinked directory (a temporary
        directory often is one) is found inside; symlinks inside are not followed.
        """
        location = PurePosixPath(os.path.normpath(text))
        real_top = self.top.resolve()
        for ancestor in (location, *location.parents):
            if Path(ancestor).resolve() == real_top:
                return _relative(location, ancestor)
        return None

    def _absolute(self, text: str) -> str | None:
        """For a ``text`` starting with '/': the root-anchored form of a path inside, or None
        when ``text`` is itself a root anchor; raises for a path outside."""
        inside = self._within(text)
        if inside is not None:
            if not inside:
                raise UsageError(f"{text} is the work tree's top directory; use '**' for everything")
            return "/" + inside + ("/" if text.endswith("/") else "")
        segments = [segment for segment in text.split("/") if segment]
        # A single name ("/README.md", "/lib/") is gitignore's root anchor, always.
        if len(segments) > 1 and os.path.lexists("/" + segments[0]) and not os.path.lexists(self.top / segments[0]):
            raise UsageError(
                f"{text} is outside the work tree at {self.top}"
                f" (for the repository's own {segments[0]}/, give it relative to the current directory)"
            )
        return None

    def anchored(self, text: str) -> str:
        """``text`` with an absolute path inside the work tree made root-anchored ('/src/app.py');
        a root anchor and a relative ``text`` as they are; :class:`UsageError` for a path outside."""
        return (self._absolute(text) or text) if text.startswith("/") else text

    def pattern(self, text: str, *, through_links: bool = True) -> str:
        """A command-line pattern as a canonical repository-relative pattern: the same in every worktree
        (it covers the path spelled as written too, as git reads a pathspec: :func:`patterns.as_spelled`).
        ``through_links=False``: one through a symbolic link of the work tree is refused
        (:meth:`refuse_through_a_link`); a reservation made so already can still be renewed and released."""
        text = drop_trailing_spaces(text)  # before an absolute path is read: '/top/build/ ' is '/top/build/'
        check_pattern_text(text)
        pattern = repository_pattern(self.anchored(text), self.inside)
        if not through_links:
            self.refuse_through_a_link(text, pattern)
        return pattern

    def path(self, text: str, *, through_links: bool = True) -> str:
        """A command-line path as a concrete repository-relative path (``through_links`` as for
        :meth:`pattern`)."""
        path = repository_path(self.anchored(text), self.inside)
        if not through_links:
            self.refuse_through_a_link(text, path)
        return path

    def place(self, text: str, *, through_links: bool = True) -> str:
        """:meth:`path`, ending in '/' when it names a folder: given with a trailing '/', or a directory
        of this work tree (not a link to one, which git tracks as a file). Example: ``'src/'`` for ``src``."""
        if not text.endswith("/"):
            path = self.path(text, through_links=through_links)
            return path + "/" if self._is_directory(path) else path
        path = self.path(text)
        if not through_links:
            self.refuse_through_a_link(text, f"/{path}/")  # 'link/': to git a link is a file, not a folder
        return path + "/"

    def _is_directory(self, path: str) -> bool:
        place = self.top / path
        try:
            return place.is_dir() and not place.is_symlink()
        except OSError:  # a name too long for the file system, say: no folder there
            return False

    def refuse_through_a_link(self, text: str, found: str) -> None:
        """Refuse ``found`` (the repository-relative form of ``text``) when its literal directories pass
        through a symbolic link of this work tree, as ``git add`` does: git tracks the link itself, never
        a path through it, so a reservation there would protect nothing, and a check there would answer
        for a path git never commits. So is a directory pattern (``link/``) naming a link: to git a link
        is a file, not a directory."""
        segments = found.strip("/").split("/")
        place = self.top
        for depth, segment in enumerate(leading_folders(found), 1):  # past a glob: depends on the tree
            place = place / segment
            try:
                if not place.is_symlink():
                    if place.is_dir():
                        continue
                    return
                target, inside = os.readlink(place), self._within(os.path.realpath(place))
            except OSError:  # a name too long for the file system, say: nothing there to pass through
                return
            link = "/".join(segments[:depth])
            led_to = "/".join(name for name in (inside, *segments[depth:]) if name) + "/" * found.endswith("/")
            instead = f"{link}, or the path it leads to, {led_to}" if inside is not None and led_to.strip("/") else link
            raise UsageError(
                f"{text!r} is beyond a symbolic link: {link} is one (to {target}); git tracks {link} itself,"
                f" never a path through it, so reservations name the link or what it leads to inside the"
                f" repository: give {instead}"
            )
