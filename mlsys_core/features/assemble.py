"""Assembling the feature frame from clean tables, as the dataset spec declares it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlsys_core.features.offline import OfflineStore
from mlsys_core.features.pit import point_in_time_join
from mlsys_core.spec import DatasetSpec, LabelSpec, TimeSplit

SPLIT = "_split"


def lookup_join(
    left: pd.DataFrame, right: pd.DataFrame, on: dict[str, str], columns: dict[str, str]
) -> pd.DataFrame:
    """Many-to-one left join; a right key seen twice is an error, not a silent fan-out."""
    right_keys = list(on.values())
    r = right[[*right_keys, *columns]].rename(columns=columns)
    if r.duplicated(right_keys).any():
        raise ValueError(f"lookup on {right_keys}: the right table repeats keys")
    r = r.rename(columns={rk: f"__key_{lk}" for lk, rk in on.items()})
    out = left.merge(
        r, how="left", left_on=list(on), right_on=[f"__key_{k}" for k in on], validate="many_to_one"
    )
    out.index = left.index
    return out.drop(columns=[f"__key_{k}" for k in on])


def make_label(frame: pd.DataFrame, label: LabelSpec) -> pd.Series:
    """1.0 / 0.0, or NaN where the label column is null (no outcome to learn from)."""
    values = frame[label.column]
    return (values > label.threshold).astype("float64").where(values.notna(), np.nan)


def assign_split(timestamps: pd.Series, split: TimeSplit) -> pd.Series:
    """Split by event time, so no validation or test row predates a training row."""
    ts = pd.to_datetime(timestamps, utc=True)
    out = np.where(ts < split.train_end, "train", np.where(ts < split.valid_end, "valid", "test"))
    return pd.Series(out, index=timestamps.index, dtype=object)


def assemble_features(
    tables: dict[str, pd.DataFrame],
    spec: DatasetSpec,
    base: pd.DataFrame | None = None,
    store: OfflineStore | None = None,
) -> pd.DataFrame:
    """One row per base event: keys, event time, raw feature inputs, label and split.

    ``base`` (default: ``tables[spec.base]``) are the rows to assemble, e.g. one batch of the
    base table; the joins and the feature views read ``tables``, which must then hold the
    whole of every source a view reads, the base table included: a batch's history is not
    in the batch. Each output row depends only on its base row and ``tables``.
    """
    base = tables[spec.base] if base is None else base
    if missing := sorted(set(spec.base_columns) - set(base.columns)):
        raise ValueError(f"base table {spec.base!r} lacks columns {missing}")
    frame = base[spec.base_columns].copy()
    for lookup in spec.lookups:
        frame = lookup_join(frame, tables[lookup.source], lookup.on, lookup.columns)
    for join in spec.as_of_joins:
        frame = point_in_time_join(
            frame,
            tables[join.source],
            on=join.on,
            left_time=spec.event_timestamp,
            right_time=join.timestamp,
            columns=join.columns,
            tolerance=join.tolerance,
            availability_lag=join.availability_lag,
        )
    if spec.feature_views:
        # The training path of the feature store: the same call serves any entity rows.
        # Batch callers pass one store, so each view's sources are indexed once, not per batch.
        store = store or OfflineStore(spec.feature_views, tables)
        frame = store.get_historical_features(
            frame, spec.view_features, timestamp=spec.event_timestamp
        )
    frame[spec.label.name] = make_label(frame, spec.label)
    frame[SPLIT] = assign_split(frame[spec.event_timestamp], spec.split)
    keep = [*spec.entity_keys, *spec.input_columns, spec.label.name, SPLIT]
    return frame[list(dict.fromkeys(keep))].reset_index(drop=True)
