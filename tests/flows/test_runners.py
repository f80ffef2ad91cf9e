"""The partition runners run at most ``Settings.workers`` partitions at once."""

from __future__ import annotations

import os
import threading
import time

from prefect import flow, task

from flows import runners
from mlsys_core.config import Settings, default_workers


def _peak_concurrency(settings: Settings, partitions: int) -> int:
    """Map a task over ``partitions`` items on the runner ``settings`` build; the most that
    ever ran at once."""
    lock, running, peak = threading.Lock(), [0], [0]

    @task
    def work(item: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)  # long enough that an unbounded pool starts every item together
        with lock:
            running[0] -= 1
        return item

    @flow(task_runner=runners.build(settings))
    def mapped() -> list[int]:
        return [f.result() for f in work.map(list(range(partitions)))]

    assert mapped() == list(range(partitions))
    return peak[0]


def test_default_pool_is_the_cores_up_to_four(monkeypatch):
    monkeypatch.delenv("MLSYS_MAX_WORKERS", raising=False)
    settings = Settings()
    assert settings.workers == default_workers() == min(4, os.cpu_count() or 1)
    # Prefect's own default pool is unbounded: all 8 would start together.
    assert _peak_concurrency(settings, 8) == settings.workers


def test_max_workers_bounds_the_pool():
    assert _peak_concurrency(Settings(max_workers=3), 8) == 3
