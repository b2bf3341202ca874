"""The log file: JSON lines appended by many `maf` processes, rotated at a size (``logging.file``)."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import stat
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from pytest_maf.files import regular_file_head
from pytest_maf.log_lines import JsonFormatter
from pytest_maf.logs import LogFile, redact, secrets_to_redact

try:
    import fcntl
except ImportError:  # Windows: rotation is then safe for one writer at a time only
    fcntl = None  # type: ignore[assignment]


# As git tells a binary file: a NUL byte among the first 8,000.
BINARY_SNIFF_BYTES = 8000


class RotatingJsonFileHandler(logging.handlers.RotatingFileHandler):
    """JSON lines appended to a file, rotated to FILE.1 ... FILE.N before a line would pass ``max_bytes``.

    Many `maf` processes append to one file: each line is written under an
    exclusive lock on ``FILE.lock``, and the size is judged from the file at
    the path (not from this process's handle), so one process rotates and the
    others follow to the new file instead of writing into ``FILE.1``.
    A file that cannot be written gives one warning on stderr, never a traceback.
    """

    def __init__(self, log_file: LogFile, secrets: Iterable[str]) -> None:
        super().__init__(
            log_file.path, maxBytes=log_file.max_bytes, backupCount=log_file.backup_count, encoding="utf-8", delay=True
        )
        self.secrets = secrets_to_redact(secrets)
        self.setFormatter(JsonFormatter())
        self.setLevel(log_file.level.upper())
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        try:
            line = redact(self.format(record), self.secrets) + "\n"
            if self.stream is None and b"\0" in regular_file_head(Path(self.baseFilename), BINARY_SNIFF_BYTES):
                # before its FILE.lock is made too: .git/index.lock beside .git/index would stop git
                raise OSError(0, "it holds binary data (a database, a git index ...), not log lines")
            with self._locked():
                self._follow_rotation()
                if self.stream is None:
                    self.stream = self._open()
                size = os.fstat(self.stream.fileno()).st_size
                if size and size + len(line.encode("utf-8")) > self.maxBytes:
                    self.doRollover()
                    if self.stream is None:
                        self.stream = self._open()
                self.stream.write(line)
                self.stream.flush()
        except Exception as error:  # noqa: BLE001 (a log file must never stop a command)
            self.failed = True
            reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
            print(f"maf: warning: cannot write the log file {self.baseFilename}: {reason};"
                  " events go to stderr only", file=sys.stderr)

    def _open(self) -> Any:
        """Append to the file; a FIFO with no reader is refused at once (ENXIO) instead of blocking the command."""
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
        os.set_blocking(descriptor, True)
        return open(descriptor, "a", encoding="utf-8")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None or not _regular_or_absent(self.baseFilename):
            yield  # a device or FIFO is never rotated: no FILE.lock is made beside /dev/stdout
            return
        with open(f"{self.baseFilename}.lock", "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _follow_rotation(self) -> None:
        """Reopen when another process rotated (or removed) the file this handle writes to."""
        if self.stream is None:
            return
        try:
            at_path = os.stat(self.baseFilename)
        except FileNotFoundError:
            at_path = None
        mine = os.fstat(self.stream.fileno())
        if at_path is None or (at_path.st_dev, at_path.st_ino) != (mine.st_dev, mine.st_ino):
            self.stream.close()
            self.stream = None


def _regular_or_absent(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True
