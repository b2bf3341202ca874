"""JUnit XML from stored evidence, for CI jobs that publish what several runs gathered."""

from __future__ import annotations

import re
from itertools import groupby
from typing import Iterable

from junit_xml import TestCase, TestSuite, to_xml_report_string  # type: ignore[import-untyped]

from pytest_maf.evidence import is_blocking_failure
from pytest_maf.records import Evidence


# What XML 1.0 cannot hold: control characters but tab and line ends, lone surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` with each character XML cannot hold written as an escape (``\\ufffe``): one such
    character in a failure message must not cost the whole report."""
    return _NOT_XML.sub(lambda found: found.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)


def evidence_report(rows: Iterable[Evidence]) -> str:
    """One test suite per task attempt, one test case per verifier.

    A blocking FAIL is a failure; a non-blocking one (a warning check) is
    reported as skipped with its message, so CI shows it without failing.
    """
    suites = []
    ordered = sorted(rows, key=lambda row: (row.task_id, row.attempt, row.verifier))
    for (task_id, attempt), group in groupby(ordered, key=lambda row: (row.task_id, row.attempt)):
        cases = []
        for row in group:
            case = TestCase(_xml_text(row.verifier), classname=_xml_text(task_id), elapsed_sec=row.details.get("duration_s"))
            message = _xml_text(str(row.details.get("message", "")) or f"{row.verifier} failed")
            if is_blocking_failure(row):
                case.add_failure_info(message=message)
            elif row.result == "FAIL":
                case.add_skipped_info(message=f"warning: {message}")
            cases.append(case)
        suites.append(
            TestSuite(
                _xml_text(f"{task_id} attempt {attempt}"),
                cases,
                properties={"maf.task_id": _xml_text(task_id), "maf.attempt": str(attempt)},
            )
        )
    return str(to_xml_report_string(suites, prettyprint=True))
