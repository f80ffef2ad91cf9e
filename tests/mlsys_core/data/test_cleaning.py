"""Tests for mlsys_core/data/cleaning.py: clean and quarantine snapshots with stable ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from mlsys_core.data.cleaning import clean_snapshot, latest_clean
from mlsys_core.data.contract import REASON
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake, SnapshotRef
from mlsys_core.spec import ColumnRule, SourceSpec, TableContract

CONTRACT = TableContract(
    columns={
        "code": ColumnRule(dtype="string"),
        "size": ColumnRule(dtype="int", ge=0, le=100),
    },
    unique=["code"],
)
# Row 2 is out of range, row 3 not a number, row 5 repeats a key.
TEXT = "code,size\nA,1\nB,500\nC,x\nD,4\nA,7\n"


def _raw(tmp_path: Path, lake: Lake, text: str = TEXT, name: str = "codes.csv") -> SnapshotRef:
    path = tmp_path / name
    path.write_text(text)
    return snapshot_source(SourceSpec(name="codes", path=str(path)), lake)


def _folders(lake: Lake) -> list[str]:
    return sorted(str(p.relative_to(lake.root)) for p in lake.root.glob("*/*/*"))


def _stamps(lake: Lake) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in lake.root.rglob("*") if p.is_file()}


def test_clean_and_quarantine_snapshots_partition_the_raw_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    raw = _raw(tmp_path, lake)
    ref = clean_snapshot(raw, CONTRACT, lake)
    clean, quarantine = lake.read(ref.clean), lake.read(ref.quarantine)
    assert ref.raw == raw
    assert ref.rows_in == raw.rows == 5
    assert ref.clean.rows + ref.quarantine.rows == raw.rows
    assert clean["code"].tolist() == ["A", "D"]
    assert quarantine["code"].tolist() == ["B", "C", "A"]
    assert all(quarantine[REASON].str.len() > 0)
    # Both halves share one id and the quarantine sits beside the clean snapshot.
    assert ref.clean.snapshot_id == ref.quarantine.snapshot_id
    assert lake.find("quarantine", "codes", ref.clean.snapshot_id) == ref.quarantine
    listed = Counter(r for reasons in quarantine[REASON] for r in reasons.split("; "))
    assert ref.reasons == dict(listed)
    for snap in (ref.clean, ref.quarantine):
        assert lake.manifest(snap)["parents"] == [f"raw/codes/{raw.snapshot_id}"]


def test_cleaning_again_gives_the_same_ids_and_writes_nothing(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    raw = _raw(tmp_path, lake)
    first = clean_snapshot(raw, CONTRACT, lake)
    folders, stamps = _folders(lake), _stamps(lake)
    second = clean_snapshot(raw, CONTRACT, lake)
    assert second == first
    assert _folders(lake) == folders
    assert _stamps(lake) == stamps


def test_ids_depend_only_on_content(tmp_path: Path) -> None:
    # Two lakes, same raw bytes and contract: same ids, so nothing random or time-based.
    lake_a, lake_b = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    ref_a = clean_snapshot(_raw(tmp_path, lake_a), CONTRACT, lake_a)
    ref_b = clean_snapshot(_raw(tmp_path, lake_b, name="other.csv"), CONTRACT, lake_b)
    assert ref_a.clean.snapshot_id == ref_b.clean.snapshot_id
    pd.testing.assert_frame_equal(lake_a.read(ref_a.clean), lake_b.read(ref_b.clean))


def test_ids_move_with_the_raw_snapshot_or_the_contract(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    base = clean_snapshot(_raw(tmp_path, lake), CONTRACT, lake)
    other_raw = clean_snapshot(_raw(tmp_path, lake, TEXT + "E,9\n", "v2.csv"), CONTRACT, lake)
    looser = CONTRACT.model_copy(
        update={"columns": {**CONTRACT.columns, "size": ColumnRule(dtype="int", ge=0)}}
    )
    other_contract = clean_snapshot(base.raw, looser, lake)
    ids = {r.clean.snapshot_id for r in (base, other_raw, other_contract)}
    assert len(ids) == 3
    assert lake.read(other_contract.clean)["code"].tolist() == ["A", "B", "D"]


def test_latest_clean_rebuilds_the_newest_cleaning(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    with pytest.raises(LookupError, match="codes"):
        latest_clean(lake, "codes")
    clean_snapshot(_raw(tmp_path, lake), CONTRACT, lake)
    newest = clean_snapshot(_raw(tmp_path, lake, TEXT + "E,9\n", "v2.csv"), CONTRACT, lake)
    assert latest_clean(lake, "codes") == newest


def test_an_empty_quarantine_is_still_written(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    ref = clean_snapshot(_raw(tmp_path, lake, "code,size\nA,1\nB,2\n"), CONTRACT, lake)
    assert ref.quarantine.rows == 0
    assert lake.find("quarantine", "codes", ref.clean.snapshot_id) is not None
    assert ref.reasons == {}
