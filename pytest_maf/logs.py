"""Structured logging: one line per event, as text or JSON, with secrets redacted.

Library code logs events through :func:`log_event`::

    log_event("claim", task_id="t1", agent_id="claude-1", attempt=1)

and the `maf` command sets the level (``LOG_LEVEL``, default warning) and the
format (``--log-format json|text``) of the lines on stderr. With
``logging.file`` set, every event at ``logging.file_level`` or above is also
appended to that file as a JSON line, rotated at ``logging.max_bytes``. A JSON
line carries ``timestamp``, ``level``, ``service``, ``version``, ``event`` and
the event's context (``task_id``, ``agent_id``, ...); a context field never
replaces one of those. The values of the configured required environment
variables never appear: they are replaced by ``***`` in every line.

:mod:`logging` itself is imported when the first event is to be written (or
:data:`LOGGER` is first asked for): a `maf` command that writes no event, as
the guard of a commit at the default level, never imports it.
"""

from __future__ import annotations

import os
import sys

from pytest_maf.light_dataclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Iterable
    from typing import Any
    from pathlib import Path

# logging's levels, so that naming one does not import logging.
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
LEVELS = {"DEBUG": DEBUG, "INFO": INFO, "WARNING": WARNING, "ERROR": ERROR, "CRITICAL": CRITICAL}
REDACTED = "***"
SERVICE = "pytest-maf"
# The fields every JSON line has; an event's context field of the same name is written as context_<name>.
LINE_FIELDS = ("timestamp", "level", "service", "version", "event")

_logger: logging.Logger | None = None
# What configure() asked for while logging was not yet set up: (level, format, secrets, stream).
# Its handler is made when the first event at that level or above comes.
_deferred: tuple[int, str, list[str], Any] | None = None


def log_event(event: str, level: int = INFO, /, **fields: Any) -> None:
    if _deferred is not None and level < _deferred[0]:
        return  # below the configured level: nothing to write, and no need for logging
    logger = package_logger()
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"maf_fields": fields})


def package_logger() -> logging.Logger:
    """The ``pytest_maf`` logger (:data:`LOGGER`), with the handlers :func:`configure` set.

    A library is silent until its application configures logging: until
    :func:`configure` is called, its only handler is a :class:`logging.NullHandler`.
    """
    global _logger, _deferred
    if _logger is None:
        import logging

        _logger = logging.getLogger("pytest_maf")
        _logger.addHandler(logging.NullHandler())
    if _deferred is not None:
        level, fmt, secrets, stream = _deferred
        _deferred = None
        _install(level, fmt, secrets, stream, None)
    return _logger


def __getattr__(name: str) -> Any:
    if name == "LOGGER":
        return package_logger()
    if name in ("JsonFormatter", "TextFormatter", "RedactingHandler"):
        from pytest_maf import log_lines

        return getattr(log_lines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def secrets_to_redact(secrets: Iterable[str]) -> list[str]:
    """The secrets worth replacing (4 characters or more), longest first."""
    # Longest first, so a secret containing another is replaced whole.
    return sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)


def redact(line: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        line = line.replace(secret, REDACTED)
    return line


@dataclass(frozen=True)
class LogFile:
    """Where events are kept as JSON lines, from which level, and how the file rotates."""

    path: Path
    level: str = "info"
    max_bytes: int = 10_485_760
    backup_count: int = 5


def secret_values(required_env: Iterable[str], environ: Any = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return [environ[name] for name in required_env if environ.get(name)]


def configure(
    level: str, fmt: str, secrets: Iterable[str], stream: Any = None, log_file: LogFile | None = None
) -> None:
    """Send pytest-maf's events to ``stream`` (stderr) at ``level``, as ``fmt``, and to ``log_file`` if given."""
    global _deferred
    secrets, stream = list(secrets), stream or sys.stderr
    if _logger is None and log_file is None and level.upper() in LEVELS:
        # Nothing set up yet and nothing that can fail: the handler is made with the first event.
        _deferred = (LEVELS[level.upper()], fmt, secrets, stream)
        return
    _deferred = None
    package_logger()
    _install(level, fmt, secrets, stream, log_file)


def _install(level: str | int, fmt: str, secrets: list[str], stream: Any, log_file: LogFile | None) -> None:
    from pytest_maf.log_lines import JsonFormatter, RedactingHandler, TextFormatter

    assert _logger is not None
    handler = RedactingHandler(secrets, stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.setLevel(level.upper() if isinstance(level, str) else level)
    handlers: list[logging.Handler] = [handler]
    if log_file is not None:
        from pytest_maf.log_files import RotatingJsonFileHandler  # logging.handlers: only when a file is kept

        handlers.append(RotatingJsonFileHandler(log_file, secrets))
    for existing in list(_logger.handlers):
        _logger.removeHandler(existing)
        existing.close()
    for new in handlers:
        _logger.addHandler(new)
    _logger.setLevel(min(new.level for new in handlers))
    _logger.propagate = False
