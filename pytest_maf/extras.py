"""Optional parts of pytest-maf and the extra that installs each.

A plugin user installs pytest-maf alone; a command that needs more imports it
through :func:`import_extra`, which turns a missing package into one line
saying what to install.

Example::

    metrics = import_extra("pytest_maf.metrics", "metrics", "maf metrics")
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pytest_maf.errors import UsageError

# The top-level package each extra brings, so a missing one is told apart from a bug.
EXTRA_PACKAGES = {"metrics": ("prometheus_client",), "postgres": ("psycopg", "psycopg_pool"), "mcp": ("mcp",),
                  "completion": ("shtab",)}


class MissingExtraError(UsageError):
    """A command needs a package that only an extra installs; ``install`` is the pip line that does."""

    def __init__(self, message: str, install: str) -> None:
        super().__init__(message)
        self.install = install


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``; if a package of ``extra`` is missing, raise :class:`MissingExtraError`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in EXTRA_PACKAGES.get(extra, ()):
            raise
        install = f"pip install 'pytest-maf[{extra}]'"
        raise MissingExtraError(f"{purpose} needs the {missing} package: {install}", install) from None
