"""A folder given where a path is expected (``check``, ``status --file``, ``release --force``).

A folder is a repository-relative path written with a trailing ``/`` (``src/``). A reservation
*reaches into* it when it covers some path beneath it (``src/``, ``src/**``, ``src/api/x.py``,
and ``*.md`` too: ``src/a.md``); it lies *over or inside* it when it covers the whole folder
(``src``, ``src/``, ``**``) or everything it covers lies in it (``src/**``, ``src/api/x.py``),
which ``*.md`` does not.

A pattern with no inner '/' (``src/``, ``README.md``) matches at any depth, as in a
``.gitignore``, so it overlaps most others; :func:`any_depth_hint` says how to name the root
one only.

Example::

    folder_pattern("src/")                    # -> 'src/**'
    over_or_inside("src/api/x.py", "src/")    # -> True
    over_or_inside("*.md", "src/")            # -> False
"""

from __future__ import annotations

from pytest_maf.patterns import compile_pattern, escape_glob, literal_prefix, normalize_pattern, overlap_witness


def is_folder(path: str) -> bool:
    """Whether a concrete path names a folder: it ends with '/'."""
    return path.endswith("/")


def folder_pattern(folder: str) -> str:
    r"""The pattern of everything beneath ``folder``, its names matched literally.

    >>> folder_pattern("src/"), folder_pattern("app/[slug]/")
    ('src/**', 'app/\\[slug]/**')
    """
    names = folder.strip("/").split("/")
    return normalize_pattern("/" + "/".join(escape_glob(name) for name in names) + "/**")


def over_or_inside(pattern: str, folder: str) -> bool:
    """Whether the normalised ``pattern`` covers all of ``folder`` or lies inside it.

    >>> [over_or_inside(pattern, "src/") for pattern in ("src/", "src/**", "src/a.py", "*", "*.md", "tests/")]
    [True, True, True, True, False, False]
    """
    names = tuple(folder.strip("/").split("/"))
    if literal_prefix(pattern)[: len(names)] == names:
        return True  # everything it covers starts with the folder's names
    segments = compile_pattern(pattern).segments
    over = segments[:-1] if segments[-1] == "**" else segments  # 'x/**' covers all of a folder x matches
    return not over or compile_pattern(normalize_pattern("/" + "/".join(over))).matches("/".join(names))


def _root_only(pattern: str) -> tuple[str, str, str] | None:
    """For a normalised pattern that is one name at any depth: what it matches, how to write the
    root one only, and that pattern; else None."""
    segments = compile_pattern(pattern).segments
    if len(segments) == 2 and segments[0] == "**" != segments[1]:
        return f"{pattern} matches at any depth", f"/{segments[1]}", f"/{segments[1]}"
    if len(segments) == 3 and segments[0] == segments[2] == "**" != segments[1]:
        name = segments[1]
        return f"{pattern} matches a {name} folder at any depth", f"/{name}/ or {name}/**", f"/{name}/"
    return None


def any_depth_hint(requested: str, holder_pattern: str, holder: str) -> str:
    """How to reserve the root folder or file only, for a conflict that comes of a pattern matching at
    any depth (they would not conflict read at the root only); '' for any other conflict.

    >>> any_depth_hint("tests/**", "src/", "a2")
    "a2's src/ matches a src folder at any depth (a2 can hold /src/ or src/** for the root one only)"
    >>> any_depth_hint("src/a.py", "src/", "a2")  # /src/ holds src/a.py too: no help
    ''
    """
    sides = [("your", requested, "you can ask for"), (f"{holder}'s", holder_pattern, f"{holder} can hold")]
    readings = [_root_only(pattern) for _, pattern, _ in sides]
    rooted = [pattern if reading is None else reading[2] for (_, pattern, _), reading in zip(sides, readings)]
    if all(reading is None for reading in readings) or overlap_witness(*rooted) is not None:
        return ""
    return "; ".join(
        f"{whose} {reading[0]} ({who} {reading[1]} for the root one only)"
        for (whose, _, who), reading in zip(sides, readings)
        if reading is not None
    )
