"""The ingest and validate flows on a real Prefect API: incremental landing, cache hits on
content, retries of transient errors only, rollback of a failed table, and identical
outputs under every task runner."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

import mlsys_core.data.cleaning as cleaning_module
from flows import runners
from flows.ingest import ingest
from flows.validate import validate
from mlsys_core.config import Settings
from mlsys_core.crashpoints import InjectedCrash, armed
from mlsys_core.data.lake import Lake
from mlsys_core.data.maintenance import check_lake
from mlsys_core.spec import DatasetSpec


def _only_flights(spec: DatasetSpec) -> DatasetSpec:
    """The small spec with just flights, so each flow run stays short."""
    data = spec.model_dump()
    data["sources"] = [s for s in data["sources"] if s["name"] == "flights"]
    data["contracts"] = {"flights": data["contracts"]["flights"]}
    data["lookups"], data["as_of_joins"], data["feature_views"] = [], [], []
    data["streams"] = []  # they feed the views dropped here
    data["features"]["numeric"] = ["distance"]
    data["features"]["categorical"] = ["carrier", "origin", "dest"]
    return DatasetSpec.model_validate(data)


@pytest.fixture(scope="module")
def flights_spec(small_spec: DatasetSpec) -> DatasetSpec:
    return _only_flights(small_spec)


@pytest.fixture(scope="module")
def months(small_spec: DatasetSpec) -> dict[int, pd.DataFrame]:
    flights = pd.read_csv(small_spec.source("flights").path)
    return {m: flights[flights["month"] == m] for m in (1, 2, 3)}


def _land(folder: Path, month: int, frame: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f".{month}.tmp", index=False)
    (folder / f".{month}.tmp").rename(folder / f"2013-{month:02d}.csv")


def _lake_files(lake: Lake) -> dict[str, str]:
    """Every data file of the lake by path, with its content hash."""
    return {
        str(p.relative_to(lake.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(lake.root.rglob("*.parquet"))
    }


def test_landing_months_one_at_a_time(settings: Settings, flights_spec, months, tmp_path):
    landing = {"flights": str(tmp_path / "landing")}
    seen = []
    for month in (1, 2):
        _land(tmp_path / "landing", month, months[month])
        seen.append(ingest(flights_spec, landing)["flights"])
    lake = Lake(settings.lake_dir)
    assert seen[1].rows == len(months[1]) + len(months[2])
    assert lake.manifest(seen[1])["parents"] == [f"raw/flights/{seen[0].snapshot_id}"]
    assert {p.partition for p in lake.parts(seen[1])} == {
        "year=2013/month=1",
        "year=2013/month=2",
    }
    clean = validate({"flights": seen[1]}, flights_spec)["flights"]
    assert clean.rows_in == clean.clean.rows + clean.quarantine.rows == seen[1].rows
    # Nothing new landed: the same snapshot comes back and the lake is untouched.
    files = _lake_files(lake)
    assert ingest(flights_spec, landing)["flights"] == seen[1]
    assert _lake_files(lake) == files


def test_rerun_hits_the_cache_and_gives_identical_outputs(
    settings: Settings, flights_spec, monkeypatch: pytest.MonkeyPatch
):
    calls = []
    real = cleaning_module.clean_partition

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(cleaning_module, "clean_partition", counting)
    raw = ingest(flights_spec)
    first = validate(raw, flights_spec)
    assert len(calls) == 12  # one per month partition
    files = _lake_files(Lake(settings.lake_dir))
    again = validate(ingest(flights_spec), flights_spec)
    assert len(calls) == 12  # every partition was a cache hit: the core never ran
    assert again == first
    assert _lake_files(Lake(settings.lake_dir)) == files


def test_transient_io_error_is_retried_and_bad_data_is_not(
    settings: Settings, flights_spec, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    raw = ingest(flights_spec)
    real = cleaning_module.clean_partition
    attempts: dict[str, int] = {}

    def flaky(table, partition, *args, **kwargs):
        attempts[partition] = attempts.get(partition, 0) + 1
        if partition == "year=2013/month=5" and attempts[partition] == 1:
            raise OSError("NFS hiccup")
        return real(table, partition, *args, **kwargs)

    monkeypatch.setattr(cleaning_module, "clean_partition", flaky)
    monkeypatch.setattr("tasks.data.clean_partition.retry_delay_seconds", [0, 0])
    clean = validate(raw, flights_spec)["flights"]
    assert attempts["year=2013/month=5"] == 2
    assert clean.clean.rows + clean.quarantine.rows == raw["flights"].rows

    attempts.clear()

    def bad_data(table, partition, *args, **kwargs):
        attempts[partition] = attempts.get(partition, 0) + 1
        raise ValueError(f"{partition}: values no parser accepts")

    monkeypatch.setattr(cleaning_module, "clean_partition", bad_data)
    monkeypatch.setenv("MLSYS_STATE_DIR", str(tmp_path / "fresh"))  # a new lake: no cache hits
    with pytest.raises(ValueError, match="values no parser accepts"):
        validate(ingest(flights_spec), flights_spec)
    assert len(attempts) == 12
    assert set(attempts.values()) == {1}  # never retried


def test_a_failed_partition_rolls_the_table_back(
    settings: Settings, flights_spec, monkeypatch: pytest.MonkeyPatch
):
    raw = ingest(flights_spec)
    lake = Lake(settings.lake_dir)
    before = _lake_files(lake)
    real = cleaning_module.clean_partition

    def broken_december(table, partition, *args, **kwargs):
        if partition.endswith("month=12"):
            raise ValueError("december is corrupt")
        return real(table, partition, *args, **kwargs)

    monkeypatch.setattr(cleaning_module, "clean_partition", broken_december)
    with pytest.raises(ValueError, match="december is corrupt"):
        validate(raw, flights_spec)
    # The eleven partitions that were cleaned are taken back: the lake is as before.
    assert _lake_files(lake) == before
    assert lake.latest("clean", "flights") is None
    # December mended, the rerun's eleven cache hits name parts that were taken back: they
    # are cleaned again, and the table commits whole.
    monkeypatch.setattr(cleaning_module, "clean_partition", real)
    clean = validate(raw, flights_spec)["flights"]
    assert clean.clean.rows + clean.quarantine.rows == raw["flights"].rows
    assert len(lake.read(clean.clean)) == clean.clean.rows
    assert check_lake(lake, grace=timedelta(0)).findings == []


@pytest.mark.parametrize(
    ("point", "nth"),
    [
        ("atomic.rename", 4),  # a partition's two parts are placed, its marker is not
        ("lake.snapshot.placed", 1),  # the quarantine snapshot is placed, the clean one not
    ],
)
def test_a_failure_inside_the_flows_commit_leaves_the_lake_as_it_was(
    settings: Settings, flights_spec, point: str, nth: int
):
    raw = ingest(flights_spec)
    lake = Lake(settings.lake_dir)
    before = _lake_files(lake)
    with armed(point, nth), pytest.raises(InjectedCrash):
        validate(raw, flights_spec)
    assert _lake_files(lake) == before
    assert lake.latest("quarantine", "flights") is None
    assert lake.latest("clean", "flights") is None
    assert check_lake(lake, grace=timedelta(0)).findings == []
    clean = validate(raw, flights_spec)["flights"]
    assert lake.latest("quarantine", "flights") == clean.quarantine


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["processes", "dask"])
def test_every_runner_gives_identical_outputs(
    settings: Settings, flights_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: str
):
    threads = validate(ingest(flights_spec), flights_spec)["flights"]
    expected = _lake_files(Lake(settings.lake_dir))
    other_state = tmp_path / "other"
    monkeypatch.setenv("MLSYS_STATE_DIR", str(other_state))
    configured = Settings(task_runner=runner, max_workers=2)
    raw = ingest(flights_spec)
    result = validate.with_options(task_runner=runners.build(configured))(raw, flights_spec)
    assert result["flights"].clean.snapshot_id == threads.clean.snapshot_id
    assert _lake_files(Lake(configured.lake_dir)) == expected


_COLLECTOR = """
import os, sys, time
from pathlib import Path
from mlsys_core.cli import main
lake, stop, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rounds = 0
while not stop.exists():
    rounds += 1
    lake.mkdir(parents=True, exist_ok=True)
    junk = lake / f".tmp-part-killed{rounds}.parquet"  # as a killed writer leaves it
    junk.write_bytes(b"half")
    os.utime(junk, (time.time() - 7200, time.time() - 7200))
    main(["lake", "check", "--lake", str(lake), "--grace", "5m"])
    assert main(["lake", "gc", "--lake", str(lake), "--grace", "5m"]) == 0
    ready.touch()  # imported and one round done: the next rounds overlap the flows
    time.sleep(0.2)
print("rounds", rounds)
"""


@pytest.mark.slow
def test_check_and_gc_run_safely_while_the_data_flows_run(
    settings: Settings, flights_spec, months, tmp_path: Path
):
    """`mlsys lake check` and `mlsys lake gc` loop in another process while landings are
    ingested and validated by the flows: no flow fails, every table reads whole, and what
    the collector was given to remove (old leftovers of killed writers) is removed."""
    landing, stop, ready = tmp_path / "landing", tmp_path / "stop", tmp_path / "ready"
    lake = Lake(settings.lake_dir)
    collector = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", _COLLECTOR, str(lake.root), str(stop), str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # On a loaded machine the collector's imports can outlast the flows: start them
        # once it collects, so its next round runs while they write.
        deadline = time.monotonic() + 120
        while not ready.exists() and collector.poll() is None:
            assert time.monotonic() < deadline, "the collector never finished a round"
            time.sleep(0.1)
        for month in (1, 2, 3):
            _land(landing, month, months[month])
            raw = ingest(flights_spec, {"flights": str(landing)})["flights"]
            clean = validate({"flights": raw}, flights_spec)["flights"]
            assert len(lake.read(clean.clean)) == clean.clean.rows
            assert len(lake.read(clean.quarantine)) == clean.quarantine.rows
    finally:
        stop.touch()
        output, _ = collector.communicate(timeout=120)
    assert collector.returncode == 0, output
    assert int(output.split("rounds")[-1]) >= 2
    assert clean.rows_in == sum(len(months[m]) for m in (1, 2, 3))
    report = check_lake(lake, grace=timedelta(minutes=5))
    assert report.ok, report.findings
