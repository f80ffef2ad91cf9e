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
from mlsys_core.spec import DatasetSpec, RecentSplit


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
