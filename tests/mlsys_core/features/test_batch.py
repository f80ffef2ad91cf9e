"""Batch feature extraction gives exactly the rows of whole-table assembly."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT, assemble_features
from mlsys_core.features.batch import assemble_in_batches
from mlsys_core.features.store import build_feature_set
from mlsys_core.spec import DatasetSpec, LabelSpec, RecentSplit


def test_batches_assemble_exactly_like_the_whole_table(tmp_path, small_spec: DatasetSpec):
    lake = Lake(tmp_path / "lake")
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), small_spec.contracts[s.name], lake)
        for s in small_spec.sources
    }
    parts = assemble_in_batches(clean, small_spec, lake, "test", batch_rows=777)
    base_parts = lake.parts(clean["flights"].clean)
    # One features part per base partition, in table order, each with its partition's rows.
    assert [p.partition for p in parts] == list(dict.fromkeys(p.partition for p in base_parts))
    ours = pd.concat([lake.read_part(p) for p in parts], ignore_index=True)
    whole = assemble_features({t: lake.read(c.clean) for t, c in clean.items()}, small_spec)
    assert sum(p.rows for p in parts) == len(whole) == clean["flights"].clean.rows
    pd.testing.assert_frame_equal(_nulls_as_none(ours), _nulls_as_none(whole), check_dtype=False)


def _nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


def test_one_thread_and_many_write_the_same_parts(tmp_path, small_spec: DatasetSpec):
    lake = Lake(tmp_path / "lake")
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), small_spec.contracts[s.name], lake)
        for s in small_spec.sources
    }
    serial = assemble_in_batches(clean, small_spec, lake, "one", batch_rows=500, workers=1)
    threaded = assemble_in_batches(clean, small_spec, lake, "many", batch_rows=500, workers=3)
    assert [p.partition for p in serial] == [p.partition for p in threaded]
    for a, b in zip(serial, threaded, strict=True):
        pd.testing.assert_frame_equal(lake.read_part(a), lake.read_part(b))


def test_a_recent_split_is_dated_from_the_whole_base_table_not_each_batch(
    tmp_path, small_spec: DatasetSpec
):
    """Flights are partitioned by month and assembled in batches: each row's split still
    comes from the newest flight of the whole table (dated per batch, every month would
    test its own last days)."""
    window = timedelta(days=30)
    spec = small_spec.model_copy(update={"split": RecentSplit(valid=window, test=window)})
    lake = Lake(tmp_path / "lake")
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    parts = assemble_in_batches(clean, spec, lake, "recent", batch_rows=777, workers=2)
    assert len(parts) == 12
    ours = pd.concat([lake.read_part(p) for p in parts], ignore_index=True)
    times = ours[spec.event_timestamp]
    newest = times.max()
    expected = np.where(
        times >= newest - window, "test", np.where(times >= newest - 2 * window, "valid", "train")
    )
    assert (ours[SPLIT].to_numpy() == expected).all()
    assert ours[SPLIT].value_counts()["train"] > 9 * ours[SPLIT].value_counts()["test"]
    whole = assemble_features({t: lake.read(c.clean) for t, c in clean.items()}, spec)
    pd.testing.assert_frame_equal(_nulls_as_none(ours), _nulls_as_none(whole), check_dtype=False)


def test_outcomes_from_their_own_table_label_events_as_a_scan_would(
    tmp_path, small_spec: DatasetSpec
):
    """Passengers' claims, kept in a table of their own, label the flights they name: 1
    when a "delay" claim names the flight, 0 when none does, no label when the flight is
    within ``known_after`` of the newest one (its claim may still come), and a RecentSplit
    dated back from the newest labelled flight. Batches and the whole table agree, and a
    new claims snapshot is a new feature set."""
    lake = Lake(tmp_path / "lake")
    flights = snapshot_source(small_spec.source("flights"), lake)
    clean_flights = clean_snapshot(flights, small_spec.contracts["flights"], lake)
    events = lake.read(clean_flights.clean)
    rng = np.random.default_rng(4)
    named = events.sample(frac=0.2, random_state=4)[["carrier", "flight", "time_hour"]]
    claims = named.assign(
        kind=rng.choice(["delay", "lost bag"], len(named), p=[0.7, 0.3]),
        filed_at=named["time_hour"] + pd.to_timedelta(rng.uniform(0, 20, len(named)), "D"),
    )
    claims = pd.concat([claims, claims.iloc[:40].assign(kind="lost bag")])  # two per flight
    path = tmp_path / "claims.csv"
    claims.to_csv(path, index=False)
    window, late = timedelta(days=30), timedelta(days=20)
    on = {"carrier": "carrier", "flight": "flight", "time_hour": "time_hour"}
    spec = DatasetSpec.model_validate(
        {
            **small_spec.model_dump(),
            "sources": [*small_spec.model_dump()["sources"], {"name": "claims", "path": str(path)}],
            "contracts": {
                **small_spec.model_dump()["contracts"],
                "claims": {"columns": {"time_hour": {"dtype": "datetime"}}},
            },
            "label": LabelSpec(
                source="claims", on=on, column="kind", positive=["delay"], known_after=late
            ),
            "split": RecentSplit(valid=window, test=window),
        }
    )
    assert "claims" in spec.sources_needed
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    parts = assemble_in_batches(clean, spec, lake, "claims", batch_rows=777, workers=2)
    ours = pd.concat([lake.read_part(p) for p in parts], ignore_index=True)
    whole = assemble_features({t: lake.read(c.clean) for t, c in clean.items()}, spec)
    pd.testing.assert_frame_equal(_nulls_as_none(ours), _nulls_as_none(whole), check_dtype=False)

    # A scan: each flight against every claim.
    delays = claims[claims["kind"] == "delay"]
    keys = set(zip(delays["carrier"], delays["flight"], delays["time_hour"], strict=True))
    times = ours["time_hour"]
    until = times.max() - late
    expected = [
        np.nan if t > until else float((c, f, t) in keys)
        for c, f, t in zip(ours["carrier"], ours["flight"], times, strict=True)
    ]
    np.testing.assert_array_equal(ours[spec.label.name].to_numpy(), np.array(expected))
    assert ours[spec.label.name].isna().sum() > 100
    assert 0.05 < ours[spec.label.name].mean() < 0.3
    split = np.where(
        times >= until - window, "test", np.where(times >= until - 2 * window, "valid", "train")
    )
    assert (ours[SPLIT].to_numpy() == split).all()
    labelled_test = ours[(ours[SPLIT] == "test") & ours[spec.label.name].notna()]
    assert labelled_test["time_hour"].min() >= until - window and len(labelled_test) > 100

    first = build_feature_set(clean, spec, lake)
    path.write_text(claims.iloc[:-1].to_csv(index=False))  # one claim withdrawn
    claims_again = snapshot_source(spec.source("claims"), lake)
    clean["claims"] = clean_snapshot(claims_again, spec.contracts["claims"], lake)
    assert build_feature_set(clean, spec, lake).version != first.version
