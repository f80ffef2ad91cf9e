"""One join of served predictions to their outcomes, read by the drift check's performance
and by the A/B test alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.monitoring.performance import performance_over_time
from mlsys_core.serving.abtest import ab_test
from mlsys_core.serving.outcomes import LABEL, join_labels, outcome_labels
from mlsys_core.spec import DatasetSpec, LabelSpec

SPEC = nycflights13_spec()


def _flights(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "carrier": "UA",
            "flight": np.arange(n) + 1,
            "origin": "EWR",
            "dest": "IAH",
            "time_hour": pd.date_range("2013-07-01", periods=n, freq="h", tz="UTC"),
            "arr_delay": np.where(np.arange(n) % 3 == 0, 40.0, -5.0),
        }
    )


def _served(base: pd.DataFrame) -> pd.DataFrame:
    """Every event served once, alternately by each variant, every one predicted late."""
    log = base.drop(columns="arr_delay").drop_duplicates().reset_index(drop=True)
    log["time_hour"] = log["time_hour"].dt.tz_localize(None)  # served requests: naive UTC
    n = len(log)
    return log.assign(
        served=True,
        variant=np.where(np.arange(n) % 2 == 0, "champion", "challenger"),
        model_version="1",
        prediction=1,
        probability=0.9,
        logged_at=pd.Timestamp("2026-11-20", tz="UTC"),
    )


def test_an_event_two_base_rows_share_is_no_outcome_for_the_ab_test_or_the_check() -> None:
    base = _flights(200)
    # Flight 4 (index 3, late) is reported again as early: which one was served is unknown.
    twice = pd.concat([base, base.iloc[[3]].assign(arr_delay=-30.0)], ignore_index=True)
    joined = join_labels(_served(twice), outcome_labels(twice, SPEC), SPEC)

    assert joined[LABEL].isna().sum() == 1
    result = ab_test(joined, min_outcomes=1)
    assert sum(v.outcomes for v in result.variants.values()) == 199
    periods = performance_over_time(joined, "D")
    assert sum(p.labeled for p in periods) == 199
    # Every prediction says "late": a variant's accuracy is its share of late flights.
    late = (base["arr_delay"] > 15).drop(index=3).to_numpy()
    variant = np.where(np.arange(200) % 2 == 0, "champion", "challenger")[base.index != 3]
    for name in ("champion", "challenger"):
        assert result.variants[name].correct == int(late[variant == name].sum())


def test_a_class_label_is_read_as_training_reads_it() -> None:
    """``positive=["1"]`` on a column the lake holds as numbers: training compares numbers
    (``make_label``); the A/B test once compared the text "1" and found no positive."""
    base = _flights(120).assign(diverted=lambda f: (np.arange(len(f)) % 4 == 0).astype(int))
    spec = SPEC.model_copy(update={"label": LabelSpec(column="diverted", positive=["1"])})
    log = _served(base.drop(columns="diverted"))
    joined = join_labels(log, outcome_labels(base, spec), spec)
    assert joined[LABEL].sum() == 30
    result = ab_test(joined, min_outcomes=1)
    assert result.variants["champion"].positive_rate == pytest.approx(0.5)
    assert result.variants["challenger"].correct == 0


def test_log_without_the_key_columns_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="lacks the spec's key columns"):
        join_labels(pd.DataFrame({"probability": [0.1]}), pd.DataFrame(), SPEC)


def test_outcomes_from_their_own_table_label_predictions_as_training_does() -> None:
    """Claims kept in a table of their own: a served flight a "delay" claim names is right
    when predicted late; one that no claim names is 0; one within ``known_after`` of the
    newest flight is pending, as its feature row has no label."""
    base = _flights(100).assign(ticket=lambda f: [f"T{i}" for i in range(len(f))])
    claims = pd.DataFrame({"ticket": ["T3", "T3", "T10", "T90", "T99"]}).assign(
        kind=["lost bag", "delay", "delay", "delay", "lost bag"]
    )
    label = LabelSpec(
        source="claims",
        on={"ticket": "ticket"},
        column="kind",
        positive=["delay"],
        known_after=pd.Timedelta(hours=20).to_pytimedelta(),
    )
    spec = DatasetSpec.model_validate(
        {
            **SPEC.model_dump(),
            "sources": [*SPEC.model_dump()["sources"], {"name": "claims", "path": "claims.csv"}],
            "label": label,
        }
    )
    labels = outcome_labels(base, spec, claims)
    joined = join_labels(_served(base.drop(columns="ticket")), labels, spec)
    got = dict(zip(joined["flight"], joined[LABEL], strict=True))
    assert (got[4], got[11], got[1]) == (1.0, 1.0, 0.0)  # flights 4 and 11: T3 and T10
    assert np.isnan(got[91]) and np.isnan(got[100])  # the newest 20 hours: pending
    assert joined[LABEL].isna().sum() == 20
    assert joined[LABEL].sum() == 2


def test_outcomes_that_write_their_key_otherwise_than_the_events_are_refused() -> None:
    """Ticket numbers written as text in the claims and as numbers in the flights could
    name no event: every label would be 0. Refused, naming the column."""
    base = _flights(10).assign(ticket=np.arange(10))
    claims = pd.DataFrame({"ticket": ["3", "7"]})
    label = LabelSpec(source="claims", on={"ticket": "ticket"})
    spec = DatasetSpec.model_validate(
        {
            **SPEC.model_dump(),
            "sources": [*SPEC.model_dump()["sources"], {"name": "claims", "path": "claims.csv"}],
            "label": label,
        }
    )
    with pytest.raises(ValueError, match=r"writes \['ticket'\] as numbers where the events"):
        outcome_labels(base, spec, claims)
    labels = outcome_labels(base, spec, claims.astype({"ticket": int}))
    assert labels[LABEL].tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
