"""Tests for mlsys_core/features/store.py: feature sets versioned by spec and clean snapshots."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlsys_core.data.cleaning import CleanRef, clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import (
    build_feature_set,
    latest_feature_set,
    load_feature_set,
)
from mlsys_core.spec import DatasetSpec, RecentSplit, SourceSpec, TimeSplit


def _ingest_and_clean(spec: DatasetSpec, lake: Lake) -> dict[str, CleanRef]:
    raws = {s.name: snapshot_source(s, lake) for s in spec.sources}
    return {name: clean_snapshot(ref, spec.contracts[name], lake) for name, ref in raws.items()}


@pytest.fixture(scope="module")
def cleaned(
    small_spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Lake, dict[str, CleanRef]]:
    lake = Lake(tmp_path_factory.mktemp("store") / "lake")
    return lake, _ingest_and_clean(small_spec, lake)


def _versions(lake: Lake, dataset: str) -> list[str]:
    folder = lake.root / "features" / dataset
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _with(spec: DatasetSpec, edit: dict[str, Any]) -> DatasetSpec:
    data = spec.model_dump(mode="json")
    for dotted, value in edit.items():
        *path, last = dotted.split(".")
        node = data
        for part in path:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return DatasetSpec.model_validate(data)


def test_identical_inputs_give_the_same_version_without_rewriting(
    cleaned: tuple[Lake, dict[str, CleanRef]], small_spec: DatasetSpec
) -> None:
    lake, clean = cleaned
    first = build_feature_set(clean, small_spec, lake)
    folder = Path(first.snapshot.path)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    versions = _versions(lake, small_spec.name)
    # An equal spec built anew, and the clean refs in another order.
    again = build_feature_set(
        dict(reversed(clean.items())),
        DatasetSpec.model_validate_json(small_spec.model_dump_json()),
        lake,
    )
    assert again == first
    assert _versions(lake, small_spec.name) == versions
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_load_returns_the_frame_and_the_spec_it_was_built_with(
    cleaned: tuple[Lake, dict[str, CleanRef]], small_spec: DatasetSpec
) -> None:
    lake, clean = cleaned
    spec = _with(small_spec, {"label.threshold": 30.0})
    ref = build_feature_set(clean, spec, lake)
    frame, loaded = load_feature_set(ref, lake)
    assert loaded == spec
    assert loaded != small_spec
    assert loaded.fingerprint() == spec.fingerprint() == ref.spec_fingerprint
    assert len(frame) == ref.snapshot.rows == clean["flights"].clean.rows
    assert ref.split_rows == frame[SPLIT].value_counts().to_dict()
    assert sum(ref.split_rows.values()) == len(frame)
    assert ref.clean_snapshots == {t: c.clean.snapshot_id for t, c in clean.items()}
    assert ref.raw_snapshots == {t: c.raw.snapshot_id for t, c in clean.items()}
    # The label follows the spec's threshold, checked against the clean flights.
    flights = lake.read(clean["flights"].clean)
    delayed = flights["arr_delay"] > 30
    assert frame["is_delayed"].sum() == delayed.sum()
    assert frame["is_delayed"].isna().sum() == flights["arr_delay"].isna().sum()
    assert latest_feature_set(lake, spec.name) == ref


@pytest.mark.parametrize(
    "edit",
    [
        {"label.threshold": 60.0},
        {"features.timezone": "UTC"},
        {"split.valid_end": "2013-11-01T00:00:00-04:00"},
        # Feature definitions are part of the version too.
        {"feature_views.0.aggregations.0.window": "P6D"},
        {"feature_views.2.availability.lag": "PT2H"},
    ],
)
def test_version_moves_when_the_spec_changes(
    cleaned: tuple[Lake, dict[str, CleanRef]], small_spec: DatasetSpec, edit: dict[str, Any]
) -> None:
    lake, clean = cleaned
    base = build_feature_set(clean, small_spec, lake)
    changed = build_feature_set(clean, _with(small_spec, edit), lake)
    assert changed.version != base.version
    assert {base.version, changed.version} <= set(_versions(lake, small_spec.name))


def test_version_moves_when_a_clean_snapshot_changes(
    cleaned: tuple[Lake, dict[str, CleanRef]],
    small_spec: DatasetSpec,
    real_tables: dict[str, pd.DataFrame],
    tmp_path: Path,
) -> None:
    lake, clean = cleaned
    base = build_feature_set(clean, small_spec, lake)
    before, _ = load_feature_set(base, lake)
    # New weather bytes: every temperature one degree warmer.
    weather = real_tables["weather"].assign(temp=real_tables["weather"]["temp"] + 1.0)
    path = tmp_path / "weather_v2.csv"
    weather.to_csv(path, index=False)
    raw = snapshot_source(SourceSpec(name="weather", path=str(path)), lake)
    new_weather = clean_snapshot(raw, small_spec.contracts["weather"], lake)
    assert new_weather.clean.snapshot_id != clean["weather"].clean.snapshot_id

    changed = build_feature_set({**clean, "weather": new_weather}, small_spec, lake)
    assert changed.version != base.version
    assert changed.spec_fingerprint == base.spec_fingerprint
    assert changed.clean_snapshots["weather"] == new_weather.clean.snapshot_id
    after, _ = load_feature_set(changed, lake)
    pd.testing.assert_series_equal(after["origin_temp"], before["origin_temp"] + 1.0)
    # The earlier version is untouched.
    pd.testing.assert_frame_equal(load_feature_set(base, lake)[0], before)


def test_version_depends_only_on_content(
    cleaned: tuple[Lake, dict[str, CleanRef]], small_spec: DatasetSpec, tmp_path: Path
) -> None:
    lake, clean = cleaned
    other_lake = Lake(tmp_path / "lake")
    other = build_feature_set(_ingest_and_clean(small_spec, other_lake), small_spec, other_lake)
    assert other.version == build_feature_set(clean, small_spec, lake).version


def test_missing_clean_table_is_an_error(
    cleaned: tuple[Lake, dict[str, CleanRef]], small_spec: DatasetSpec
) -> None:
    lake, clean = cleaned
    partial = {t: c for t, c in clean.items() if t != "planes"}
    with pytest.raises(ValueError, match=r"\['planes'\]"):
        build_feature_set(partial, small_spec, lake)


def test_latest_feature_set_without_any_is_a_lookup_error(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="nycflights13"):
        latest_feature_set(Lake(tmp_path), "nycflights13")


def test_a_recent_split_slides_with_new_data_so_a_retrain_trains_on_it(
    cleaned: tuple[Lake, dict[str, CleanRef]], small_spec: DatasetSpec, tmp_path: Path
) -> None:
    """The same spec built before and after two more months of flights arrive: the second
    feature set tests on the newest month, trains on what the first one tested on, and
    says in its manifest where its windows began."""
    lake, clean = cleaned
    month = timedelta(days=30)
    spec = small_spec.model_copy(update={"split": RecentSplit(valid=month, test=month)})
    (source,) = [s for s in spec.sources if s.name == spec.base]
    flights = pd.read_csv(source.path)
    path = tmp_path / "flights_to_october.csv.gz"
    flights[flights["month"] <= 10].to_csv(path, index=False, compression="gzip")
    older = source.model_copy(update={"path": str(path)})
    raw = snapshot_source(older, lake)
    early = {**clean, spec.base: clean_snapshot(raw, spec.contracts[spec.base], lake)}

    before = build_feature_set(early, spec, lake)
    after = build_feature_set(clean, spec, lake)
    assert after.spec_fingerprint == before.spec_fingerprint  # one spec: the data moved it
    assert after.split_rows["train"] > before.split_rows["train"] + before.split_rows["test"]
    dates = [TimeSplit.model_validate(lake.manifest(f.snapshot)["split"]) for f in (before, after)]
    frames = [load_feature_set(f, lake)[0] for f in (before, after)]
    for frame, split in zip(frames, dates, strict=True):
        newest = frame[spec.event_timestamp].max()
        assert split.valid_end == newest - month and split.train_end == newest - 2 * month
        assert frame.loc[frame[SPLIT] == "test", spec.event_timestamp].min() >= split.valid_end
    assert dates[1].train_end - dates[0].train_end > timedelta(days=55)
    # What the first one tested on, the second one trains on.
    key = [*spec.entity_keys, spec.event_timestamp]
    tested = frames[0].loc[frames[0][SPLIT] == "test", key]
    again = tested.merge(frames[1][[*key, SPLIT]], on=key)
    assert len(again) == len(tested) and (again[SPLIT] == "train").all()
