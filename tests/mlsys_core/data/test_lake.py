"""Tests for mlsys_core/data/lake.py: immutable, content-addressed, atomically written snapshots."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsys_core.data.lake import Lake, LakeError, SnapshotRef


def _frame(n: int = 5, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype="int64"),
            "value": np.arange(n, dtype="float64") + offset,
            "name": [f"row{i}" for i in range(n)],
            "when": pd.date_range("2013-01-01", periods=n, freq="h", tz="UTC"),
        },
        index=np.arange(n) * 10 + 7,  # not a default index: it must not leak into the file
    )


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _tmp_leftovers(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    frame = _frame()
    ref = lake.write("raw", "things", "abc123", frame)
    assert ref == SnapshotRef(
        layer="raw",
        table="things",
        snapshot_id="abc123",
        rows=len(frame),
        path=str(tmp_path / "raw" / "things" / "abc123"),
    )
    pd.testing.assert_frame_equal(lake.read(ref), frame.reset_index(drop=True))
    pd.testing.assert_frame_equal(
        lake.read(ref, columns=["name"]), frame[["name"]].reset_index(drop=True)
    )
    assert lake.find("raw", "things", "abc123") == ref
    assert _tmp_leftovers(tmp_path) == []


def test_manifest_records_rows_schema_and_creation_time(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    frame = _frame(7)
    before = datetime.now(UTC)
    ref = lake.write("clean", "things", "v1", frame, {"parents": ["raw/things/x"], "note": 1})
    after = datetime.now(UTC)
    meta = lake.manifest(ref)
    assert meta["rows"] == 7
    assert [c["name"] for c in meta["schema"]] == list(frame.columns)
    types = {c["name"]: c["type"] for c in meta["schema"]}
    assert types["id"] == "int64"
    assert types["value"] == "double"
    assert types["when"].startswith("timestamp")
    created = datetime.fromisoformat(meta["created_at"])
    assert created.tzinfo is not None
    assert before <= created <= after
    assert (meta["layer"], meta["table"], meta["snapshot_id"]) == ("clean", "things", "v1")
    assert meta["parents"] == ["raw/things/x"]
    assert meta["note"] == 1
    # It is plain JSON on disk, next to the data.
    assert json.loads((Path(ref.path) / "_manifest.json").read_text()) == meta


def test_rewriting_an_existing_snapshot_is_a_no_op(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = lake.write("raw", "things", "same", _frame(3))
    folder = Path(first.path)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    second = lake.write("raw", "things", "same", _frame(9, offset=100.0))
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert _entries(tmp_path / "raw" / "things") == ["same"]
    # The snapshot is immutable: it still holds what was written first.
    pd.testing.assert_frame_equal(lake.read(second), _frame(3).reset_index(drop=True))
    assert _tmp_leftovers(tmp_path) == []


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.write("raw", "things", "good", _frame())
    unwritable = pd.DataFrame({"mixed": [1, "a", 2.5, object()]})
    with pytest.raises(pa.ArrowException):
        lake.write("raw", "things", "bad", unwritable)
    assert lake.find("raw", "things", "bad") is None
    assert _entries(tmp_path / "raw" / "things") == ["good"]
    assert _tmp_leftovers(tmp_path) == []


def test_a_folder_without_manifest_is_not_a_snapshot(tmp_path: Path) -> None:
    # What a crashed non-atomic writer would leave: data but no manifest.
    lake = Lake(tmp_path)
    partial = tmp_path / "raw" / "things" / "partial"
    partial.mkdir(parents=True)
    (partial / "part-0.parquet").write_bytes(b"half a file")
    assert lake.find("raw", "things", "partial") is None
    assert lake.latest("raw", "things") is None


def test_concurrent_writers_of_one_snapshot_agree(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    frame = _frame(50)
    start = threading.Barrier(6)
    refs: list[SnapshotRef] = []
    errors: list[Exception] = []

    def writer() -> None:
        start.wait()
        try:
            refs.append(lake.write("raw", "things", "race", frame))
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(refs) == 6
    assert len(set(refs)) == 1
    assert _entries(tmp_path / "raw" / "things") == ["race"]
    pd.testing.assert_frame_equal(lake.read(refs[0]), frame.reset_index(drop=True))
    assert _tmp_leftovers(tmp_path) == []


def test_latest_is_the_most_recently_written(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    assert lake.latest("raw", "things") is None
    written = [lake.write("raw", "things", sid, _frame(i + 1)) for i, sid in enumerate("cab")]
    # Ids are hashes, so their order says nothing; the write order decides.
    assert lake.latest("raw", "things") == written[-1]
    assert lake.latest("raw", "other") is None
    assert lake.latest("clean", "things") is None
    # Re-writing an old id does not make it newer: nothing was written.
    lake.write("raw", "things", "c", _frame(1))
    assert lake.latest("raw", "things") == written[-1]


def test_reading_a_vanished_snapshot_is_a_lake_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    ref = lake.write("raw", "things", "gone", _frame())
    shutil.rmtree(ref.path)
    assert lake.find("raw", "things", "gone") is None
    with pytest.raises(LakeError, match="raw/things/gone"):
        lake.read(ref)


def test_layers_and_tables_are_separate(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    a = lake.write("raw", "a", "id1", _frame(2))
    b = lake.write("clean", "a", "id1", _frame(4))
    c = lake.write("raw", "b", "id1", _frame(6))
    assert len({a.path, b.path, c.path}) == 3
    assert [lake.read(r).shape[0] for r in (a, b, c)] == [2, 4, 6]


def test_a_part_whose_first_batch_is_all_null_takes_the_later_type(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = pd.DataFrame({"id": [1, 2], "tail": [None, None]})  # arrow type: null
    later = pd.DataFrame({"id": [3], "tail": ["N123"]})
    with lake.part_writer("clean", "t", "p=1", "a") as writer:
        writer.write(first)
        writer.write(later)
    frame = lake.read_part(writer.ref)
    assert writer.ref.rows == 3
    assert frame["id"].tolist() == [1, 2, 3]
    assert frame["tail"].tolist() == [None, None, "N123"]


def test_a_part_still_refuses_a_batch_of_another_real_type(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    with pytest.raises(LakeError, match="schema differs"):
        with lake.part_writer("clean", "t", "p=1", "a") as writer:
            writer.write(pd.DataFrame({"id": [1.5]}))
            writer.write(pd.DataFrame({"id": ["not a number"]}))
    assert not list(tmp_path.rglob("*.parquet"))


def test_the_head_of_a_snapshot_is_its_first_rows_as_read(tmp_path: Path) -> None:
    """Raw files that disagree on a column's type (numbers in one, a bad cell in the
    other) read as text; the head reads as the whole snapshot does, from the first part."""
    lake = Lake(tmp_path)
    parts = [
        lake.write_part("raw", "t", "all", "a", pd.DataFrame({"id": [1, 2], "x": [1.5, 2.0]})),
        lake.write_part("raw", "t", "all", "b", pd.DataFrame({"id": [3], "x": ["bad"]})),
    ]
    ref = lake.write_snapshot("raw", "t", "s", parts)
    whole = lake.read(ref)
    pd.testing.assert_frame_equal(lake.head(ref, 2), whole.head(2))
    assert lake.head(ref).to_dict("records") == [{"id": 1, "x": "1.5"}]
    empty = lake.write_snapshot("raw", "t", "none", [])
    assert lake.head(empty).empty
