"""`maf-preflight`: `pytest --maf-preflight` as a console script, for pre-commit hooks.

pre-commit runs a hook in an environment of its own, holding pytest-maf and what
it needs, not the project's test plugins. So the preflight leaves out what of the
project's pytest configuration names them: ``addopts`` (``--cov``, ``-n auto``),
``PYTEST_ADDOPTS`` and ``required_plugins``. The ini file is still read for
``maf_checks``, and conftest.py files still load: the project's own checks and
the evidence hooks live there.

Example::

    maf-preflight --maf-checks 'env.*'
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Sequence

# What the preflight sets of pytest's configuration, whatever the project's says.
OWN_SETTINGS = ("-p", "no:cacheprovider", "-o", "addopts=", "-o", "required_plugins=")
PROGRAM = "maf-preflight"
USAGE_ERROR = 4  # pytest's, for a conftest.py that does not import, too
MISSING_PACKAGES = (
    f"{PROGRAM}: if a conftest.py or a check could not import a package: pre-commit runs this hook with"
    " pytest-maf and what it needs only; list the package under the hook's additional_dependencies"
)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments in (["--version"], ["-V"]):
        from pytest_maf import __version__

        print(f"{PROGRAM} (pytest-maf {__version__})")
        return 0
    return run_preflight(arguments)


def run_preflight(arguments: list[str]) -> int:
    """``pytest --maf-preflight`` with ``arguments``, the project's addopts and required plugins left out."""
    added = os.environ.pop("PYTEST_ADDOPTS", None)  # like addopts, it names plugins the hook has not got
    try:
        code = _pytest_main(["--maf-preflight", *OWN_SETTINGS, *arguments])
    finally:
        if added is not None:
            os.environ["PYTEST_ADDOPTS"] = added
    if code == USAGE_ERROR:
        print(MISSING_PACKAGES, file=sys.stderr)
    return code


def _pytest_main(arguments: list[str]) -> int:
    """pytest.main, naming this program in its usage and errors where pytest can (9.0 and later)."""
    import pytest
    from _pytest import config

    named = getattr(config, "_main", None)
    if named is not None and "prog" in inspect.signature(named).parameters:
        return int(named(args=arguments, prog=PROGRAM))
    return int(pytest.main(arguments))


if __name__ == "__main__":
    sys.exit(main())
