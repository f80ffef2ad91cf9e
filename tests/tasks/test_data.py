"""Data tasks: thin adapters, and the retry policy they carry."""

from __future__ import annotations

import pytest
from prefect import flow, task

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.spec import DatasetSpec
from tasks.data import clean_partition, finish_cleaning, plan_cleaning, snapshot_source
from tasks.retry import retry_on_io_errors


def test_snapshot_and_clean_through_fn(settings: Settings, small_spec: DatasetSpec):
    source = small_spec.source("weather")
    raw = snapshot_source.fn(source, settings)
    assert Lake(settings.lake_dir).find("raw", "weather", raw.snapshot_id) == raw
    contract = small_spec.contracts["weather"]
    plan = plan_cleaning.fn(raw, contract, settings)
    outcomes = {
        p: clean_partition.fn("weather", p, parts, contract, plan.undeclared_types, settings)
        for p, parts in plan.partitions.items()
    }
    cleaned = finish_cleaning.fn(plan, outcomes, settings)
    assert cleaned.clean.rows + cleaned.quarantine.rows == raw.rows


def _flaky(error: type[Exception]):
    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_on_io_errors)
    def step() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise error("first attempt fails")
        return len(calls)

    @flow
    def run() -> int:
        return step()

    return run, calls


def test_io_errors_are_retried():
    run, calls = _flaky(OSError)
    assert run() == 2
    assert len(calls) == 2


def test_data_errors_fail_at_once():
    run, calls = _flaky(ValueError)
    with pytest.raises(ValueError, match="first attempt fails"):
        run()
    assert len(calls) == 1
