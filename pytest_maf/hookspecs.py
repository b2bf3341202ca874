"""Hooks pytest-maf calls, for conftest.py files and plugins to implement.

Both run on the process that writes evidence (the xdist controller)::

    # conftest.py
    def pytest_maf_evidence_details(config, nodeid, verifier, result, details):
        details["commit"] = os.environ.get("GITHUB_SHA", "")

    def pytest_maf_evidence_recorded(config, evidence):
        print(f"{evidence.verifier}: {evidence.result}")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_maf.records import Evidence


def pytest_maf_evidence_details(
    config: pytest.Config, nodeid: str, verifier: str, result: str, details: dict[str, Any]
) -> None:
    """Called before an evidence row is written; add keys to ``details`` to store them with it.

    ``result`` is ``"PASS"`` or ``"FAIL"``. Values must be JSON-serialisable.
    """


def pytest_maf_evidence_recorded(config: pytest.Config, evidence: Evidence) -> None:
    """Called after an evidence row has been written to the runtime store."""
