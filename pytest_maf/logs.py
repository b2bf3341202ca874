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
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pytest_maf import __version__
from pytest_maf.light_dataclass import dataclass

LOGGER = logging.getLogger("pytest_maf")
LOGGER.addHandler(logging.NullHandler())  # a library is silent until its application configures logging
REDACTED = "***"
SERVICE = "pytest-maf"
# The fields every JSON line has; an event's context field of the same name is written as context_<name>.
LINE_FIELDS = ("timestamp", "level", "service", "version", "event")


def log_event(event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, event, extra={"maf_fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": SERVICE,
            "version": __version__,
            "event": record.getMessage(),
        }
        for key, value in getattr(record, "maf_fields", {}).items():
            line[f"context_{key}" if key in LINE_FIELDS else key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, sort_keys=False, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in getattr(record, "maf_fields", {}).items())
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp} {record.levelname.lower():<7} {record.getMessage()} {fields}".rstrip()


def secrets_to_redact(secrets: Iterable[str]) -> list[str]:
    """The secrets worth replacing (4 characters or more), longest first."""
    # Longest first, so a secret containing another is replaced whole.
    return sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)


def redact(line: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        line = line.replace(secret, REDACTED)
    return line


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Replaces every secret value in the formatted line, whatever field carried it."""

    def __init__(self, secrets: Iterable[str], stream: Any = None) -> None:
        super().__init__(stream or sys.stderr)
        self.secrets = secrets_to_redact(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


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
    secrets = list(secrets)
    handler = RedactingHandler(secrets, stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.setLevel(level.upper())
    handlers: list[logging.Handler] = [handler]
    if log_file is not None:
        from pytest_maf.log_files import RotatingJsonFileHandler  # logging.handlers: only when a file is kept

        handlers.append(RotatingJsonFileHandler(log_file, secrets))
    for existing in list(LOGGER.handlers):
        LOGGER.removeHandler(existing)
        existing.close()
    for new in handlers:
        LOGGER.addHandler(new)
    LOGGER.setLevel(min(new.level for new in handlers))
    LOGGER.propagate = False
