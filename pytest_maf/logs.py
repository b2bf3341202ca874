"""Structured logging: one line per event, as text or JSON, with secrets redacted.

Library code logs events through :func:`log_event`::

    log_event("claim", task_id="t1", agent_id="claude-1", attempt=1)

and the `maf` command sets the level (``LOG_LEVEL``, default warning) and the
format (``--log-format json|text``). A JSON line carries ``timestamp``,
``level``, ``event`` and, where they apply, ``task_id`` and ``agent_id``. The
values of the configured required environment variables never appear: they
are replaced by ``***`` in every line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any, Iterable

LOGGER = logging.getLogger("pytest_maf")
LOGGER.addHandler(logging.NullHandler())  # a library is silent until its application configures logging
REDACTED = "***"


def log_event(event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, event, extra={"maf_fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        line.update(getattr(record, "maf_fields", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, sort_keys=False, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in getattr(record, "maf_fields", {}).items())
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp} {record.levelname.lower():<7} {record.getMessage()} {fields}".rstrip()


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Replaces every secret value in the formatted line, whatever field carried it."""

    def __init__(self, secrets: Iterable[str], stream: Any = None) -> None:
        super().__init__(stream or sys.stderr)
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return line


def secret_values(required_env: Iterable[str], environ: Any = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return [environ[name] for name in required_env if environ.get(name)]


def configure(level: str, fmt: str, secrets: Iterable[str], stream: Any = None) -> None:
    """Send pytest-maf's events to ``stream`` (stderr) at ``level``, as ``fmt``."""
    handler = RedactingHandler(secrets, stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for existing in list(LOGGER.handlers):
        LOGGER.removeHandler(existing)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
