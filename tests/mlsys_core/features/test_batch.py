"""Batch feature extraction gives exactly the rows of whole-table assembly."""

from __future__ import annotations

import pandas as pd

from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import assemble_features
from mlsys_core.features.batch import assemble_in_batches
from mlsys_core.spec import DatasetSpec


def test_batches_assemble_exactly_like_the_whole_table(tmp_path, small_spec: DatasetSpec):
    lake = Lake(tmp_path / "lake")
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), small_spec.contracts[s.name], lake)
        for s in small_spec.sources
    }
    part = assemble_in_batches(clean, small_spec, lake, "test", batch_rows=777)
    ours = lake.read_part(part)
    whole = assemble_features({t: lake.read(c.clean) for t, c in clean.items()}, small_spec)
    assert part.rows == len(whole) == clean["flights"].clean.rows
    pd.testing.assert_frame_equal(_nulls_as_none(ours), _nulls_as_none(whole), check_dtype=False)


def _nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)
