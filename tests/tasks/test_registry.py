"""The registry lock of flows: a Prefect global concurrency limit of one per model."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from prefect.client.orchestration import get_client

from tasks.registry import limit_name, registry_lock


def test_registry_lock_serializes_threads_through_the_prefect_api() -> None:
    name = f"lock-test-{time.monotonic_ns()}"
    inside: list[int] = []
    overlaps: list[int] = []
    guard = threading.Lock()

    def critical(i: int) -> None:
        with registry_lock(name):
            with guard:
                inside.append(i)
                if len(inside) > 1:
                    overlaps.append(len(inside))
            time.sleep(0.05)
            with guard:
                inside.remove(i)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(critical, range(6)))
    assert overlaps == []
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(limit_name(name))
    assert limit.limit == 1
    assert limit.active_slots == 0  # every holder released its slot


def test_limit_names_are_valid_for_any_model_name() -> None:
    assert limit_name("team/flight delay") == "mlsys-registry-team-flight-delay"
