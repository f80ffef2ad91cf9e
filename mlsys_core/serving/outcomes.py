"""Delayed labels: served predictions joined to the outcomes that arrive later.

A logged prediction is matched to the base table's row with the same entity keys and event
time; its label is ``spec.label``, read as a feature set reads it (``EventLabels``).
A prediction with no matching row yet, or whose row has no value (a cancelled flight), is
*pending*. One join for every reader of outcomes (the drift check's performance, the
dashboard, the A/B test), so they never disagree on which prediction was right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import EventLabels, newest_event
from mlsys_core.serving.schema import event_keys
from mlsys_core.spec import DatasetSpec

LABEL = "label"


def _utc_naive(values: pd.Series) -> pd.Series:
    """Event times as naive UTC, whether they arrive naive (served requests) or aware."""
    stamps = pd.to_datetime(values)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.astype("datetime64[ns]")


def outcome_labels(
    base: pd.DataFrame, spec: DatasetSpec, outcomes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Entity keys, event time and the binary label of every base row that has one, read
    as a feature set reads it (``outcomes``: the label's outcome table, when it has one).

    Two rows with the same keys and time cannot be told apart, so neither labels a
    prediction (dropped, not guessed).
    """
    keys, time = event_keys(spec), spec.event_timestamp
    rows = base[list(dict.fromkeys([*keys, *spec.label_columns]))]
    tables = {spec.base: base, **({spec.label.source: outcomes} if spec.label.source else {})}
    newest = newest_event(base[time]) if time else None
    labels = EventLabels(spec.label, time, tables, newest)(rows)  # type: ignore[arg-type]
    rows = rows.assign(**{LABEL: labels})
    rows = rows.dropna(subset=[LABEL])
    if time:
        rows = rows.assign(**{time: _utc_naive(rows[time])})
    rows = rows.drop_duplicates(subset=keys, keep=False)
    return rows[keys].assign(**{LABEL: rows[LABEL].astype(np.int8).to_numpy()})


def join_labels(log: pd.DataFrame, labels: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The log rows with a ``label`` column: 0/1 where the outcome is known, NaN pending."""
    keys = event_keys(spec)
    if missing := [k for k in keys if k not in log.columns]:
        raise ValueError(f"prediction log lacks the spec's key columns {missing}")
    left = log.copy()
    if spec.event_timestamp:
        left[spec.event_timestamp] = _utc_naive(log[spec.event_timestamp])
    for key in spec.entity_keys:  # keys compare as the base table stores them
        if key in labels and left[key].dtype != labels[key].dtype:
            left[key] = left[key].astype(labels[key].dtype)
    joined = left.merge(labels, on=keys, how="left", validate="many_to_one")
    return joined.assign(**{LABEL: joined[LABEL].astype("float64")})


def join_outcomes(lake: Lake, spec: DatasetSpec, log: pd.DataFrame) -> pd.DataFrame:
    """``log`` with its ``label`` from the newest clean base table (NaN: pending); every
    row pending when there is no base table yet."""
    base = lake.latest("clean", spec.base)
    source = spec.label.source
    outcomes = lake.latest("clean", source) if source else None
    if log.empty:
        return log.assign(**{LABEL: pd.Series(dtype="float64")})
    if base is None or (source and outcomes is None):
        return log.assign(**{LABEL: np.nan})
    keys = list(dict.fromkeys([*event_keys(spec), *spec.label_columns]))
    found = lake.read(outcomes) if outcomes is not None else None
    return join_labels(log, outcome_labels(lake.read(base, columns=keys), spec, found), spec)
