"""Print the crash harness's counts at the end of the session.

The cases travel in each test's report (``user_properties``), so the counts are right when
xdist runs the tests in worker processes and only the reports reach this one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest

from tests.crash.harness import SUMMARY, Case, Summary

_PROPERTY = "crash_cases"
REPORTED = Summary()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    if call.when == "call" and SUMMARY.cases:
        report = outcome.get_result()
        report.user_properties.append((_PROPERTY, [asdict(c) for c in SUMMARY.cases]))
        SUMMARY.cases.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, cases in report.user_properties:
        if key == _PROPERTY:
            REPORTED.cases += [Case(**c) for c in cases]
            REPORTED.points |= {c["point"] for c in cases}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTED.cases:
        terminalreporter.write_line(REPORTED.line())
