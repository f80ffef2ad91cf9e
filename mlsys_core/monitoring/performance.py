"""Delayed labels: served predictions joined to the outcomes that arrive later.

A logged prediction is matched to the base table's row with the same entity keys and event
time; its label is ``spec.label`` (``column > threshold``). A prediction with no matching
row yet, or whose row has no value (a cancelled flight), is *pending*: counted, never
scored. Performance is AUC and calibration per period of prediction time.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import make_label
from mlsys_core.registry.gate import auc
from mlsys_core.spec import DatasetSpec
from mlsys_core.training.metrics import expected_calibration_error

LABEL = "label"
Period = Literal["D", "W"]


class PeriodPerformance(BaseModel):
    model_config = ConfigDict(frozen=True)

    period: str
    predictions: int
    labeled: int
    pending: int
    positive_rate: float | None
    mean_probability: float
    auc: float | None
    ece: float | None


def _utc_naive(values: pd.Series) -> pd.Series:
    """Event times as naive UTC, whether they arrive naive (served requests) or aware."""
    stamps = pd.to_datetime(values)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.astype("datetime64[ns]")


def outcome_keys(spec: DatasetSpec) -> list[str]:
    """The columns that tie a served prediction to its outcome: entity keys and event time."""
    return [*spec.entity_keys, *([spec.event_timestamp] if spec.event_timestamp else [])]


def outcome_labels(base: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Entity keys, event time and the binary label of every base row that has one.

    Two rows with the same keys and time cannot be told apart, so neither labels a
    prediction (dropped, not guessed).
    """
    keys = outcome_keys(spec)
    rows = base[[*keys, spec.label.column]].dropna(subset=[spec.label.column])
    if spec.event_timestamp:
        rows = rows.assign(**{spec.event_timestamp: _utc_naive(rows[spec.event_timestamp])})
    rows = rows.drop_duplicates(subset=keys, keep=False)
    labels = make_label(rows, spec.label).astype(np.int8)
    return rows[keys].assign(**{LABEL: labels.to_numpy()})


def join_labels(log: pd.DataFrame, labels: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The log rows with a ``label`` column: 0/1 where the outcome is known, NaN pending."""
    keys = outcome_keys(spec)
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


def performance_over_time(joined: pd.DataFrame, period: Period = "D") -> list[PeriodPerformance]:
    """Per period of ``logged_at`` (UTC): counts, AUC (both classes needed) and ECE."""
    if joined.empty:
        return []
    logged = pd.to_datetime(joined["logged_at"], utc=True).dt.tz_localize(None)
    starts = logged.dt.to_period(period).dt.start_time
    out = []
    for start, rows in joined.groupby(starts.to_numpy(), sort=True):
        labeled = rows[rows[LABEL].notna()]
        y = labeled[LABEL].to_numpy(dtype=np.int8)
        p = labeled["probability"].to_numpy(dtype=np.float64)
        both = len(y) > 0 and 0 < y.sum() < len(y)
        out.append(
            PeriodPerformance(
                period=f"{pd.Timestamp(start):%Y-%m-%d}",
                predictions=len(rows),
                labeled=len(labeled),
                pending=len(rows) - len(labeled),
                positive_rate=float(y.mean()) if len(y) else None,
                mean_probability=float(rows["probability"].mean()),
                auc=float(auc(y, p)[0]) if both else None,
                ece=float(expected_calibration_error(y, p)) if len(y) else None,
            )
        )
    return out


def join_outcomes(lake: Lake, spec: DatasetSpec, log: pd.DataFrame) -> pd.DataFrame:
    """``log`` with its ``label`` from the newest clean base table (NaN: pending); every
    row pending when there is no base table yet."""
    base = lake.latest("clean", spec.base)
    if log.empty:
        return log.assign(**{LABEL: pd.Series(dtype="float64")})
    if base is None:
        return log.assign(**{LABEL: np.nan})
    keys = [*outcome_keys(spec), spec.label.column]
    return join_labels(log, outcome_labels(lake.read(base, columns=keys), spec), spec)
