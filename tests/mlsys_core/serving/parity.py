"""Helpers of the parity tests: feature-set rows as a caller would send them, and the check
that the inputs the service found are the feature set's."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mlsys_core.serving.schema import column_kinds
from mlsys_core.serving.sources import ServingPlan
from mlsys_core.spec import DatasetSpec


def json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def caller_fields(spec: DatasetSpec) -> list[str]:
    """What a caller knows: keys, event time, the keys features are found by, and the
    inputs only a caller has. Nothing the service finds."""
    plan = ServingPlan(spec)
    return list(dict.fromkeys([*plan.required, *plan.request_keys, *plan.request_features]))


def caller_records(rows: pd.DataFrame, spec: DatasetSpec) -> list[dict[str, Any]]:
    """The rows as a caller sends them: integers as integers (the lake holds them as
    float64), times as ISO text."""
    kinds = column_kinds(spec)
    out = []
    for row in rows[caller_fields(spec)].to_dict(orient="records"):
        record = {k: json_value(v) for k, v in row.items()}
        for k, v in record.items():
            if kinds.get(k) == "integer" and isinstance(v, float):
                record[k] = int(v)
        out.append(record)
    return out


def hours_with_most(frame: pd.DataFrame, timestamp: str, n: int) -> pd.DataFrame:
    """The rows of the event times with the most rows, until there are at least ``n``."""
    counts = frame[timestamp].value_counts(sort=True)
    hours = counts.index[: int((counts.cumsum() < n).sum()) + 1]
    return frame[frame[timestamp].isin(hours)]


def assert_same_inputs(served: list[dict[str, Any]], rows: pd.DataFrame, spec: DatasetSpec) -> None:
    """Each input the service found equals the feature set's value for the row (missing
    where it is missing), and most of them were found, not missing. Window means match to
    1e-9, not bit for bit: they are differences of running sums, and materialization sums
    over fewer rows than the feature set did (rounding, not skew)."""
    plan = ServingPlan(spec)
    assert plan.found, "the spec has nothing for the service to find"
    present = 0
    for got, (_, row) in zip(served, rows.iterrows(), strict=True):
        for col in plan.found:
            want, have = json_value(row[col]), got[col]
            if want is None:
                assert have is None, (col, have)
            elif isinstance(want, float | int) and not isinstance(want, bool):
                assert have is not None and math.isclose(have, want, rel_tol=1e-9), (
                    col,
                    have,
                    want,
                )
                present += 1
            else:
                assert have == want, (col, have, want)
                present += 1
    assert present > 0.7 * len(served) * len(plan.found), "most found inputs are missing"
