"""A folder given where a path is expected (``check``, ``status --file``, ``release --force``).

A folder is a repository-relative path written with a trailing ``/`` (``src/``). A reservation
*reaches into* it when it covers some path beneath it (``src/``, ``src/**``, ``src/api/x.py``,
and ``*.md`` too: ``src/a.md``); it lies *over or inside* it when it covers the whole folder
(``src``, ``src/``, ``**``) or everything it covers lies in it (``src/**``, ``src/api/x.py``),
which ``*.md`` does not.

Example::

    folder_pattern("src/")                    # -> 'src/**'
    over_or_inside("src/api/x.py", "src/")    # -> True
    over_or_inside("*.md", "src/")            # -> False
"""

from __future__ import annotations

from pytest_maf.patterns import compile_pattern, escape_glob, literal_prefix, normalize_pattern


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
