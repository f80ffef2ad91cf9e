"""The crash harness's cases travel in each test's report (``user_properties``): the root
conftest counts them and prints the harness's line at the end of the session, also when
xdist runs the tests in worker processes and only the reports reach the controller (which
loads no conftest below the root)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest

from tests.crash.harness import CASES_PROPERTY, SUMMARY


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    if call.when == "call" and SUMMARY.cases:
        report = outcome.get_result()
        report.user_properties.append((CASES_PROPERTY, [asdict(c) for c in SUMMARY.cases]))
        SUMMARY.cases.clear()
