"""Registry tasks take the same lock as plain callers: the one in the MLflow store."""

from __future__ import annotations

import threading
import time

from prefect import flow

from mlsys_core.config import Settings
from mlsys_core.registry.locking import RegistryLock
from mlsys_core.tracking import configure_mlflow
from tasks.registry import rollback_model


def test_a_task_queues_behind_a_plain_caller_holding_the_lock(settings: Settings) -> None:
    client = configure_mlflow(settings.tracking)
    name = "lock-shared"
    lock = RegistryLock(client, name)
    out: dict = {}

    @flow
    def roll_back() -> None:
        rollback_model(name, "a-flow", "test", settings)

    def run() -> None:
        try:
            roll_back()
        except Exception as exc:  # handed to the test thread
            out["error"], out["at"] = exc, time.monotonic()

    with lock:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while len(lock.holders()) < 2:  # the task's ticket, behind ours
            assert time.monotonic() < deadline, "the task never asked for the lock"
            time.sleep(0.05)
        time.sleep(0.5)
        assert "error" not in out  # still waiting
        released = time.monotonic()
    thread.join(120)
    # Once it held the lock it found no model to roll back.
    assert isinstance(out["error"], LookupError) and out["at"] > released
    assert lock.holders() == []
