"""Flow tests run against a real, temporary Prefect API."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_api: None) -> None:
    """Every flow test talks to the session's temporary Prefect API."""
