"""The lines of the event log, as text or JSON, with secrets redacted: :mod:`pytest_maf.logs`
imports this (and :mod:`logging`) when the first event is written."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Iterable

from pytest_maf import __version__
from pytest_maf.logs import LINE_FIELDS, SERVICE, redact, secrets_to_redact


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
    """``STAMP LEVEL EVENT key=value ...``: a value's control and direction characters as escapes
    (``\\x1b``, ``\\u202e``), as every view shows them, so a reason or an error's context cannot
    move the cursor, clear the screen or reverse the line on a terminal or in a log file read later."""

    def format(self, record: logging.LogRecord) -> str:
        from pytest_maf.terminal import printable

        fields = " ".join(f"{key}={printable(value)}" for key, value in getattr(record, "maf_fields", {}).items())
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp} {record.levelname.lower():<7} {printable(record.getMessage())} {fields}".rstrip()


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Replaces every secret value in the formatted line, whatever field carried it."""

    def __init__(self, secrets: Iterable[str], stream: Any = None) -> None:
        super().__init__(stream or sys.stderr)
        self.secrets = secrets_to_redact(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)
