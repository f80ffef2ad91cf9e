"""Incremental ingestion of a landing folder, month partitions and lineage, on real flights."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.data.sources import SourceError
from mlsys_core.spec import DatasetSpec, SourceSpec


@pytest.fixture(scope="module")
def monthly(real_tables: dict[str, pd.DataFrame]) -> dict[int, pd.DataFrame]:
    """The first three months of real flights, 5% of each, one frame per month."""
    flights = real_tables["flights"]
    return {
        m: flights[flights["month"] == m].sample(frac=0.05, random_state=m).reset_index(drop=True)
        for m in (1, 2, 3)
    }


def _land(folder: Path, name: str, frame: pd.DataFrame) -> None:
    """Drop a file in the way a writer should: under a temporary name, then rename."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    frame.to_csv(tmp, index=False)
    tmp.rename(folder / name)


def _source(folder: Path) -> SourceSpec:
    return SourceSpec(
        name="flights",
        path=str(folder),
        incremental=True,
        pattern="*.csv",
        partition_by=["year", "month"],
    )


def test_each_run_appends_only_the_new_month(tmp_path: Path, monthly) -> None:
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    source = _source(landing)
    _land(landing, "2013-01.csv", monthly[1])
    first = snapshot_source(source, lake)
    assert first.rows == len(monthly[1])
    assert [p.partition for p in lake.parts(first)] == ["year=2013/month=1"]

    _land(landing, "2013-02.csv", monthly[2])
    second = snapshot_source(source, lake)
    parts = lake.parts(second)
    assert [p.partition for p in parts] == ["year=2013/month=1", "year=2013/month=2"]
    # The January part is the very same file: appending copies nothing.
    assert parts[0] == lake.parts(first)[0]
    assert second.rows == len(monthly[1]) + len(monthly[2])
    assert lake.manifest(second)["parents"] == [f"raw/flights/{first.snapshot_id}"]
    assert [f["name"] for f in lake.manifest(second)["new_files"]] == ["2013-02.csv"]
    # The old version is still whole and readable.
    assert len(lake.read(first)) == len(monthly[1])
    both = lake.read(second)
    assert sorted(both["month"].unique()) == [1, 2]


def test_a_file_seen_before_is_skipped_by_its_content(tmp_path: Path, monthly) -> None:
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    source = _source(landing)
    _land(landing, "2013-01.csv", monthly[1])
    first = snapshot_source(source, lake)
    # Nothing new: the same snapshot, nothing written.
    assert snapshot_source(source, lake) == first
    # The same bytes again under another name: still nothing new.
    _land(landing, "2013-01-resent.csv", monthly[1])
    assert snapshot_source(source, lake) == first
    assert len(list((lake.root / "raw" / "flights").glob("[!_.]*"))) == 1


def test_half_copied_files_are_not_taken(tmp_path: Path, monthly) -> None:
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    _land(landing, "2013-01.csv", monthly[1])
    monthly[2].to_csv(landing / ".2013-02.csv.tmp", index=False)
    ref = snapshot_source(_source(landing), lake)
    assert ref.rows == len(monthly[1])


def test_an_empty_or_missing_landing_folder_is_a_clear_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    with pytest.raises(SourceError, match="does not exist"):
        snapshot_source(_source(tmp_path / "nowhere"), lake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LookupError, match="is empty"):
        snapshot_source(_source(tmp_path / "empty"), lake)


def test_partition_columns_must_be_part_of_the_unique_key(small_spec: DatasetSpec) -> None:
    data = small_spec.model_dump()
    flights = next(s for s in data["sources"] if s["name"] == "flights")
    flights["partition_by"] = ["origin", "dest"]
    with pytest.raises(ValueError, match=r"\['dest'\] are not part of its unique key"):
        DatasetSpec.model_validate(data)


def test_lineage_walks_from_clean_back_through_every_ingest(
    tmp_path: Path, monthly, small_spec: DatasetSpec
) -> None:
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    source = _source(landing)
    refs = []
    for month in (1, 2, 3):
        _land(landing, f"2013-{month:02d}.csv", monthly[month])
        refs.append(snapshot_source(source, lake))
    cleaned = clean_snapshot(refs[-1], small_spec.contracts["flights"], lake)
    chain = lake.lineage(cleaned.clean)
    assert [node["snapshot"] for node in chain] == [
        f"clean/flights/{cleaned.clean.snapshot_id}",
        *(f"raw/flights/{ref.snapshot_id}" for ref in reversed(refs)),
    ]
    assert chain[-1]["parents"] == []
    assert [node["rows"] for node in chain[1:]] == [r.rows for r in reversed(refs)]


def test_incremental_cleaning_reuses_cleaned_months(
    tmp_path: Path, monthly, small_spec: DatasetSpec
) -> None:
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    source, contract = _source(landing), small_spec.contracts["flights"]
    _land(landing, "2013-01.csv", monthly[1])
    first = clean_snapshot(snapshot_source(source, lake), contract, lake)
    january = lake.parts(first.clean)[0]
    inode = (lake.root / january.file).stat().st_ino  # a rewrite renames a new file in
    _land(landing, "2013-02.csv", monthly[2])
    second = clean_snapshot(snapshot_source(source, lake), contract, lake)
    assert lake.parts(second.clean)[0] == january
    assert (lake.root / january.file).stat().st_ino == inode  # not cleaned again
    assert second.clean.rows + second.quarantine.rows == second.raw.rows


def test_a_bad_file_leaves_the_lake_as_it_was(tmp_path: Path, monthly) -> None:
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    source = _source(landing)
    _land(landing, "2013-01.csv", monthly[1])
    first = snapshot_source(source, lake)
    before = sorted(p for p in lake.root.rglob("*") if p.is_file())
    _land(landing, "2013-02.csv", monthly[2])  # parsed and written first ...
    (landing / "2013-03.csv").write_bytes(b'year,month\n2013,3\n"broken')  # ... then this fails
    with pytest.raises(SourceError, match="not valid csv"):
        snapshot_source(source, lake)
    assert sorted(p for p in lake.root.rglob("*") if p.is_file()) == before
    assert lake.latest("raw", "flights") == first
