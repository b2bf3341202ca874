"""Choosing preflight checks by id or glob (``--maf-checks env.*,mcp.*``) and by tag
(``-m services``), and listing their ids (``--collect-only``).

A check's id is its ``maf_check(id=...)``; a parametrised check's verifier id
adds the parameter (``mcp.client[codex]``), and either may be chosen. Each tag
of ``maf_check(tags=[...])`` becomes a marker of the check, registered, so
pytest's own ``-m`` selects by tag without an unknown-mark warning.

Example::

    pytest --maf-preflight --maf-checks 'env.*,store.schema' -m 'not mcp'
"""

from __future__ import annotations

import fnmatch
from typing import Any, Generator

import pytest

from pytest_maf.ids import id_problem
from pytest_maf.terminal import printable

OPTION = "--maf-checks"
# Marker names pytest and its plugins act on: a tag by one of these names would skip, fail or time out a check.
RESERVED_MARKERS = frozenset({
    "skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings", "timeout", "maf_check",
    "maf_task_payload", "tryfirst", "trylast",
})
MAX_PATTERNS = 200
SEVERITIES = ("critical", "warning")
MARKER_ARGUMENTS = ("id", "severity", "tags")  # what maf_check(...) takes, each by name


def check_id(item: pytest.Item) -> str | None:
    """The item's ``maf_check`` id, or None for a test that is not a check."""
    marker = item.get_closest_marker("maf_check")
    found = marker.kwargs.get("id") if marker is not None else None
    return str(found) if found else None


def verifier_id(item: pytest.Item) -> str | None:
    """The check id with the parameter of a parametrised check (``mcp.client[codex]``)."""
    found = check_id(item)
    callspec = getattr(item, "callspec", None)
    return f"{found}[{callspec.id}]" if found and callspec else found


def check_patterns(text: str) -> list[str]:
    """``--maf-checks``: ids or globs separated by commas; a malformed list is a usage error."""
    patterns = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not pattern for pattern in patterns):
        raise pytest.UsageError(f"{OPTION} {printable(repr(text))}: give check ids or globs separated by commas, such as env.*,mcp.*")
    if len(patterns) > MAX_PATTERNS:
        raise pytest.UsageError(f"{OPTION}: {len(patterns)} patterns; give at most {MAX_PATTERNS}")
    for pattern in patterns:
        if not pattern.isprintable():
            raise pytest.UsageError(f"{OPTION}: {printable(repr(pattern))} holds a control character; give a check id or glob")
    return patterns


def marker_tags(marker: pytest.Mark | None) -> list[str]:
    """A ``maf_check`` marker's tags, sorted; a :class:`pytest.UsageError` unless they are a list of names
    (``tags="db"`` would otherwise be read as the tags d and b, or as none)."""
    tags = marker.kwargs.get("tags", ()) if marker is not None else ()
    if not isinstance(tags, (list, tuple, set, frozenset)) or not all(isinstance(tag, str) for tag in tags):
        raise pytest.UsageError(f"maf_check tags {tags!r}: give a list of names, such as tags=['database']")
    return sorted(set(tags))


def _tags(item: pytest.Item) -> list[str]:
    try:
        return marker_tags(item.get_closest_marker("maf_check"))
    except pytest.UsageError:
        return []  # refused with the marker's other mistakes, once the collection is over (malformed_checks)


def marker_problem(marker: pytest.Mark) -> str | None:
    """What is wrong with a ``maf_check`` marker's arguments, or None (pure)."""
    if marker.args:
        return "give each argument by name, such as maf_check(id='svc.db')"
    unknown = sorted(set(marker.kwargs) - set(MARKER_ARGUMENTS))
    if unknown:
        return f"unknown argument(s) {', '.join(unknown)}: maf_check takes {', '.join(MARKER_ARGUMENTS)}"
    if "id" in marker.kwargs:
        given = marker.kwargs["id"]
        problem = id_problem(given, path_segment=False) if isinstance(given, str) else "is not a string"
        if problem is not None:
            shown = repr(given) if len(repr(given)) <= 60 else repr(given)[:57] + "..."
            return f"id {shown} {problem}"
    severity = marker.kwargs.get("severity", "critical")
    if severity not in SEVERITIES:
        return f"severity {severity!r}: use 'critical' or 'warning'"
    try:
        marker_tags(marker)
    except pytest.UsageError as error:
        return str(error).removeprefix("maf_check ")
    return None


def malformed_checks(items: list[pytest.Item]) -> str | None:
    """A usage error's message naming each check whose ``maf_check`` arguments are wrong, or None:
    found while collecting, before any run's task is touched."""
    found = []
    for item in items:
        marker = item.get_closest_marker("maf_check")
        problem = marker_problem(marker) if marker is not None else None
        if problem is not None:
            found.append(f"{item.nodeid}: maf_check {problem}")
    if not found:
        return None
    shown = found[:10] + ([f"and {len(found) - 10} more"] if len(found) > 10 else [])
    return printable("; ".join(shown)) + "; fix the marker (nothing was run or recorded)"


WORKER_USAGE_ERRORS_KEY = "maf_usage_errors"  # an xdist worker's workeroutput: its controller says them


class CollectionUsageErrors:
    """Registered for every ``--maf-*`` run: a usage error found while collecting (a ``maf_check``
    marker given a wrong argument, a ``--maf-checks`` id that matches no check, a path that is not
    there, a bad ``-m`` or ``-k``) runs nothing and writes nothing, with or without xdist.

    Under xdist the workers collect: one that meets a usage error sends its controller no test and
    the error's message, and the controller starts no task, says the message and exits 4, as pytest
    does for the same error without xdist."""

    def __init__(self) -> None:
        self.on_workers: dict[str, None] = {}  # each message once, in the order seen

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> Generator[None, None, None]:
        try:
            message = malformed_checks(items)
            if message is not None:
                raise pytest.UsageError(message)
            yield
        except pytest.UsageError:
            items[:] = []  # pytest (and xdist, to its controller) lists the items even so: list none
            raise

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> Generator[None, object, object]:
        try:
            return (yield)
        except pytest.UsageError as error:
            workeroutput = getattr(session.config, "workeroutput", None)
            if workeroutput is not None:  # an xdist worker: pytest's own "ERROR:" line would not be seen
                workeroutput[WORKER_USAGE_ERRORS_KEY] = [str(part) for part in error.args]
            raise

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        for message in getattr(node, "workeroutput", {}).get(WORKER_USAGE_ERRORS_KEY, ()):
            self.on_workers[str(message)] = None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.on_workers:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for message in self.on_workers:
            terminalreporter.write_line(f"ERROR: {message}", red=True)


class CheckSelection:
    """Registered for a preflight or a ``--maf-checks`` run: tags as markers, the id filter, the id listing."""

    def __init__(self, config: pytest.Config, patterns: list[str] | None) -> None:
        self.config = config
        self.patterns = patterns
        self.registered: set[str] = set()

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        for tag in _tags(item):
            if tag in RESERVED_MARKERS or not tag.isidentifier():
                continue  # only a plain name can be given to -m, and a reserved one would change the check
            if tag not in self.registered:
                self.config.addinivalue_line("markers", f"{tag}: preflight checks tagged {tag!r} (maf_check tags)")
                self.registered.add(tag)
            item.add_marker(tag)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self.patterns is None:
            return
        chosen: list[pytest.Item] = []
        left: list[pytest.Item] = []
        matched: set[str] = set()
        for item in items:
            names = [name for name in (check_id(item), verifier_id(item)) if name]
            hits = {  # an exact id first: mcp.client[codex] is a name, not a glob's [...] class
                pattern for pattern in self.patterns for name in names
                if name == pattern or fnmatch.fnmatchcase(name, pattern)
            }
            matched |= hits
            (chosen if hits else left).append(item)
        unmatched = [pattern for pattern in self.patterns if pattern not in matched]
        if unmatched:
            known = sorted({name for item in items for name in (check_id(item),) if name})
            shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
            message = f"{OPTION}: {printable(', '.join(unmatched))} matches no check; the check ids are: {shown or 'none'}"
            items[:] = []  # pytest reports the collection even so: list nothing
            raise pytest.UsageError(message)
        if left:
            config.hook.pytest_deselected(items=left)
            items[:] = chosen

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> Any:
        if not config.getoption("collectonly"):
            return None
        checks = [(verifier_id(item), item) for item in items]
        shown = [(name, item) for name, item in checks if name]
        if not shown:
            return None
        width = max(len(name) for name, _ in shown)
        lines = [f"maf checks ({len(shown)}): id, severity, tags"]
        for name, item in shown:
            marker = item.get_closest_marker("maf_check")
            severity = str(marker.kwargs.get("severity", "critical")) if marker is not None else "critical"
            lines.append(printable(f"  {name:<{width}}  {severity:<8}  {' '.join(_tags(item))}").rstrip())
        return lines
