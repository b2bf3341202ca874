"""`maf-preflight`: `pytest --maf-preflight` as a console script, for pre-commit hooks."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    import pytest

    arguments = list(sys.argv[1:] if argv is None else argv)
    return int(pytest.main(["--maf-preflight", "-p", "no:cacheprovider", *arguments]))


if __name__ == "__main__":
    sys.exit(main())
