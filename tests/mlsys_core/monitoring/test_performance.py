"""Served predictions scored once their outcomes arrived: pending rows, and AUC and
calibration per period against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.monitoring.performance import performance_over_time
from mlsys_core.serving.outcomes import LABEL, join_labels, outcome_labels
from mlsys_core.training.metrics import expected_calibration_error

SPEC = nycflights13_spec()


def _base(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "carrier": rng.choice(["UA", "AA", "DL"], n),
            "flight": np.arange(n) + 1,
            "origin": "EWR",
            "dest": "IAH",
            "time_hour": pd.date_range("2013-07-01", periods=n, freq="h", tz="UTC"),
            "arr_delay": rng.normal(10, 30, n),
        }
    )


def test_join_labels_marks_unknown_outcomes_pending_and_scores_the_rest() -> None:
    rng = np.random.default_rng(0)
    base = _base(400, rng)
    base.loc[:9, "arr_delay"] = np.nan  # cancelled: never a label
    duplicate = base.iloc[[20]]  # two rows with one key: neither labels a prediction
    labels = outcome_labels(pd.concat([base, duplicate]), SPEC)
    assert len(labels) == 400 - 10 - 1

    log = base.drop(columns="arr_delay").copy()
    log["time_hour"] = log["time_hour"].dt.tz_localize(None)  # served requests: naive UTC
    log["flight"] = log["flight"].astype(float)  # keys compare as the base table stores them
    log["probability"] = rng.uniform(0, 1, 400)
    log["logged_at"] = pd.date_range("2026-11-20", periods=400, freq="30min", tz="UTC")
    future = log.iloc[:25].assign(flight=99_999.0)  # its flight has not happened yet
    joined = join_labels(pd.concat([log, future], ignore_index=True), labels, SPEC)

    assert joined[LABEL].isna().sum() == 10 + 1 + 25
    truth = (base["arr_delay"] > 15).astype(float).where(base["arr_delay"].notna())
    known = joined[LABEL].iloc[:400].notna().to_numpy()
    np.testing.assert_array_equal(joined[LABEL].iloc[:400][known], truth[known])

    periods = performance_over_time(joined, "D")
    assert sum(p.predictions for p in periods) == 425
    assert sum(p.pending for p in periods) == 36
    days = joined["logged_at"].dt.strftime("%Y-%m-%d")
    for period in periods:
        rows = joined[(days == period.period).to_numpy() & joined[LABEL].notna().to_numpy()]
        y, p = rows[LABEL].to_numpy(int), rows["probability"].to_numpy()
        assert period.labeled == len(rows)
        assert period.auc == pytest.approx(roc_auc_score(y, p))
        assert period.ece == pytest.approx(expected_calibration_error(y, p))
        assert period.positive_rate == pytest.approx(y.mean())

    weekly = performance_over_time(joined, "W")
    assert sum(p.predictions for p in weekly) == 425
    assert len(weekly) < len(periods)


def test_a_period_with_one_class_or_no_labels_has_no_auc() -> None:
    joined = pd.DataFrame(
        {
            "logged_at": pd.to_datetime(
                ["2026-11-20T01:00Z", "2026-11-20T02:00Z", "2026-11-21T00:00Z"]
            ),
            "probability": [0.2, 0.7, 0.5],
            LABEL: [1.0, 1.0, np.nan],
        }
    )
    first, second = performance_over_time(joined)
    assert (first.labeled, first.auc, first.positive_rate) == (2, None, 1.0)
    assert (second.labeled, second.pending, second.auc, second.ece) == (0, 1, None, None)
    assert performance_over_time(joined.iloc[:0]) == []
