"""Print the crash harness's counts at the end of the session."""

from __future__ import annotations

import pytest

from tests.crash.harness import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY.cases:
        terminalreporter.write_line(SUMMARY.line())
