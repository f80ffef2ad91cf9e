"""A failed write leaves the lake as it found it, and a clean snapshot and its quarantine
commit together: the three faults of issue 19, each at its exact point (the crash harness in
``tests/crash`` fails every write point of every stage; these name the reported ones)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlsys_core.crashpoints import InjectedCrash, armed
from mlsys_core.data.cleaning import clean_snapshot, latest_clean
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import GroupMember, Lake, LakeError
from mlsys_core.data.maintenance import check_lake
from mlsys_core.spec import ColumnRule, SourceSpec, TableContract

CONTRACT = TableContract(
    columns={
        "day": ColumnRule(dtype="int", ge=1, le=31),
        "month": ColumnRule(dtype="int", ge=1, le=12),
        "amount": ColumnRule(dtype="float", ge=0),
    },
    unique=["month", "day"],
)


def _files(lake: Lake) -> dict[str, bytes]:
    return {
        str(p.relative_to(lake.root)): p.read_bytes()
        for p in sorted(lake.root.rglob("*"))
        if p.is_file() and p.name != "_lake.lock"
    }


def _source(tmp_path: Path, months: int = 8) -> SourceSpec:
    rows = [
        {"day": d, "month": m, "amount": -1.0 if d == 3 else d * 1.5}
        for m in range(1, months + 1)
        for d in range(1, 11)
    ]
    path = tmp_path / "sales.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return SourceSpec(name="sales", path=str(path), partition_by=["month"])


def _no_leftovers(lake: Lake) -> None:
    report = check_lake(lake, grace=timedelta(0))
    assert report.findings == [], report.findings


def test_a_failed_partitioned_ingest_leaves_no_parts(tmp_path: Path) -> None:
    """Fault 1: a failure writing the sixth partition of a non-incremental ingest."""
    lake, source = Lake(tmp_path / "lake"), _source(tmp_path)
    with armed("lake.part.rename", nth=6), pytest.raises(InjectedCrash):
        snapshot_source(source, lake)
    assert not list((lake.root / "raw").rglob("*.parquet"))
    assert lake.latest("raw", "sales") is None
    _no_leftovers(lake)
    assert snapshot_source(source, lake).rows == 80


def test_a_failure_after_a_partitions_parts_before_its_marker_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Fault 2: both parts of a partition placed, its marker not yet."""
    lake = Lake(tmp_path / "lake")
    raw = snapshot_source(_source(tmp_path), lake)
    before = _files(lake)
    with armed("atomic.rename", nth=2), pytest.raises(InjectedCrash):  # second partition
        clean_snapshot(raw, CONTRACT, lake)
    assert _files(lake) == before
    _no_leftovers(lake)


def test_a_failure_between_the_quarantine_and_the_clean_commit_shows_neither(
    tmp_path: Path,
) -> None:
    """Fault 3: the quarantine snapshot is in place, the clean one not yet."""
    lake = Lake(tmp_path / "lake")
    raw = snapshot_source(_source(tmp_path), lake)
    before = _files(lake)
    with armed("lake.snapshot.placed", nth=1), pytest.raises(InjectedCrash):
        clean_snapshot(raw, CONTRACT, lake)
    assert lake.latest("quarantine", "sales") is None
    assert lake.latest("clean", "sales") is None
    assert _files(lake) == before  # the uncommitted half and the partitions are taken back
    _no_leftovers(lake)
    ref = clean_snapshot(raw, CONTRACT, lake)
    assert (ref.clean.rows, ref.quarantine.rows) == (72, 8)
    assert latest_clean(lake, "sales") == ref


def test_a_group_member_left_by_a_killed_writer_is_invisible_and_reused(tmp_path: Path) -> None:
    """What a kill between the two renames leaves: a member no reader sees, which the rerun
    completes (and which `lake check` reports as an incomplete group meanwhile)."""
    lake = Lake(tmp_path)
    part = lake.write_part("clean", "t", "all", "p", pd.DataFrame({"x": [1.0]}))
    qpart = lake.write_part("quarantine", "t", "all", "p", pd.DataFrame({"x": ["bad"]}))
    members = [
        GroupMember(layer="quarantine", table="t", snapshot_id="s", parts=[qpart]),
        GroupMember(layer="clean", table="t", snapshot_id="s", parts=[part]),
    ]
    # As if killed between the two renames: the quarantine names a group whose clean twin
    # is missing.
    lake._commit_member(members[0], group=[m.key for m in members])
    assert lake.find("quarantine", "t", "s") is None
    kinds = {f.kind for f in check_lake(lake, timedelta(0)).findings}
    assert "incomplete_group" in kinds
    quarantine, clean = lake.write_group(members)
    assert lake.find("quarantine", "t", "s") == quarantine
    assert lake.find("clean", "t", "s") == clean


def test_a_snapshot_whose_parts_disagree_on_types_is_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    numbers = lake.write_part("clean", "t", "a", "p", pd.DataFrame({"x": [1.0, 2.0]}))
    text = lake.write_part("clean", "t", "b", "p", pd.DataFrame({"x": ["oops"]}))
    with pytest.raises(LakeError, match="disagree on column types"):
        lake.write_snapshot("clean", "t", "s", [numbers, text])
    assert lake.latest("clean", "t") is None
