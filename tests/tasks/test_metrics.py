"""System metrics of flow runs: one decorator line records duration, peak memory and rows,
for completed and failed runs, without changing the flow's parameters."""

from __future__ import annotations

import importlib
import json
import pkgutil
import time

import numpy as np
import pytest
from prefect import Flow, flow
from prefect.runtime import flow_run

import flows
from mlsys_core.config import Settings
from mlsys_core.data.lake import SnapshotRef
from mlsys_core.monitoring.system import (
    MB,
    ResourceMonitor,
    process_tree_rss,
    read_run_metrics,
    rows_in,
    runs_dir,
)
from tasks.metrics import METERED, metered


@flow(name="metered-toy")
@metered(rows=lambda r: r["rows"])
def toy(n: int, megabytes: int = 64) -> dict:
    block = np.ones(megabytes * 1024 * 1024 // 8)  # held while the flow runs
    seen = process_tree_rss()
    time.sleep(0.5)  # several sampling intervals
    return {"rows": n, "run_id": str(flow_run.id), "sum": float(block.sum()), "seen": seen}


@flow(name="metered-fails")
@metered()
def fails() -> None:
    raise ValueError("bad input")


def test_a_flow_run_records_duration_peak_memory_and_rows(settings: Settings) -> None:
    result = toy(1234, megabytes=200)
    (record,) = read_run_metrics(settings.root)
    assert record.flow == "metered-toy"
    assert record.run_id == result["run_id"]
    assert record.status == "completed"
    assert record.rows_processed == 1234
    assert record.duration_s > 0
    # The peak covers what the process held mid-run, with the 200 MB array live (a long test
    # session may reuse freed pages, so the rise over the start is not asserted).
    assert record.peak_memory_mb >= 0.98 * result["seen"] / MB
    assert record.peak_memory_mb >= record.start_memory_mb
    (path,) = (runs_dir(settings.root) / "metered-toy").iterdir()
    assert json.loads(path.read_text())["rows_processed"] == 1234
    # The decorator keeps the flow's parameter schema (the UI's form).
    assert set(toy.parameters.properties) == {"n", "megabytes"}


def test_a_failed_run_is_recorded_and_still_fails(settings: Settings) -> None:
    with pytest.raises(ValueError, match="bad input"):
        fails()
    (record,) = read_run_metrics(settings.root)
    assert (record.flow, record.status, record.rows_processed) == ("metered-fails", "failed", None)


def test_every_flow_is_metered() -> None:
    found = {}
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Flow) and value.fn.__module__ == module.__name__:
                found[value.name] = getattr(value.fn, METERED, False)
    assert len(found) >= 12
    assert all(found.values()), [name for name, ok in found.items() if not ok]


def test_resource_monitor_and_rows_in() -> None:
    with ResourceMonitor(interval_s=0.01) as monitor:
        block = np.ones(100 * 1024 * 1024 // 8)
        block += 1
        seen = process_tree_rss()
        time.sleep(0.1)
    assert monitor.peak_rss >= 0.98 * seen
    assert monitor.duration_s > 0
    # Ingest returns {table: SnapshotRef}: its rows are the sum of the snapshots' rows.
    refs = {
        t: SnapshotRef(layer="raw", table=t, snapshot_id="x", rows=n, path="/x")
        for t, n in [("flights", 30), ("weather", 12)]
    }
    assert rows_in(refs) == 42
    assert rows_in({"settings": Settings.model_construct(), "count": 3}) is None
    assert rows_in(None) is None
