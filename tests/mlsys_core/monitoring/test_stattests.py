"""The fast column drift against a plain, full Evidently DataDriftPreset run on real data:
the same method, threshold and verdict per column, and the score to rounding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import FeatureSetRef, load_feature_set
from mlsys_core.monitoring.drift import evidently_drift, feature_columns, summarize
from mlsys_core.monitoring.reference import cached_reference, load_reference, save_reference
from mlsys_core.monitoring.stattests import drift_columns, reference_stats
from mlsys_core.spec import DatasetSpec


@pytest.fixture(scope="module")
def flights(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> tuple[pd.DataFrame, DatasetSpec]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("stattests"))
    return load_feature_set(make_feature_set(settings), Lake(settings.lake_dir))


def _local_month(frame: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
    return (
        pd.to_datetime(frame[spec.event_timestamp], utc=True)
        .dt.tz_convert(spec.features.timezone)
        .dt.month
    )


def _assert_same_verdicts(reference, current, spec) -> list:  # noqa: ANN001
    numeric, categorical = feature_columns(spec, reference)
    ours = drift_columns(reference_stats(reference, numeric, categorical), current)
    plain = evidently_drift(reference, current, numeric, categorical)
    assert len(plain) == len(numeric) + len(categorical)
    by_column = {c.column: c for c in ours}
    for theirs in plain:
        mine = by_column[theirs.column]
        assert mine.status == "ok"
        assert (mine.method, mine.threshold, mine.drifted) == (
            theirs.method,
            theirs.threshold,
            theirs.drifted,
        ), theirs.column
        assert mine.score == pytest.approx(theirs.score, rel=1e-7, abs=1e-12), theirs.column
    return ours


def test_large_reference_matches_evidently_on_real_flights(flights) -> None:  # noqa: ANN001
    frame, spec = flights
    reference = frame[frame[SPLIT] == "train"]
    month = _local_month(frame, spec)
    current = frame[(month >= 6).to_numpy() & (month <= 11).to_numpy()]
    assert len(reference) > 1_000  # Evidently's distances: Wasserstein and Jensen-Shannon
    ours = _assert_same_verdicts(reference, current, spec)
    methods = {c.method for c in ours}
    assert {"Wasserstein distance (normed)", "Jensen-Shannon distance"} <= methods
    assert any(c.drifted for c in ours) and not all(c.drifted for c in ours)


def test_small_reference_matches_evidently_on_real_flights(flights) -> None:  # noqa: ANN001
    frame, spec = flights
    month = _local_month(frame, spec)
    reference = frame[(month <= 2).to_numpy()].sample(900, random_state=0)
    current = frame[(month == 7).to_numpy()].sample(600, random_state=0)
    ours = _assert_same_verdicts(reference, current, spec)
    methods = {c.method for c in ours}
    # Tests with p-values below 1000 reference rows; discrete plane_engines gets chi-square.
    assert {"K-S p_value", "chi-square p_value"} <= methods


def test_binary_columns_use_the_z_test_like_evidently() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"flag": rng.choice(["a", "b"], 500), "n": rng.integers(0, 2, 500)})
    current = pd.DataFrame({"flag": rng.choice(["a", "b"], 400, p=[0.7, 0.3])})
    current["n"] = rng.integers(0, 2, 400).astype(float)
    stats = reference_stats(reference, ["n"], ["flag"])
    ours = {c.column: c for c in drift_columns(stats, current)}
    plain = evidently_drift(reference, current, ["n"], ["flag"])
    for theirs in plain:
        assert ours[theirs.column].method == theirs.method == "Z-test p_value"
        assert ours[theirs.column].drifted == theirs.drifted
        assert ours[theirs.column].score == pytest.approx(theirs.score, rel=1e-9)
    assert ours["flag"].drifted


def test_empty_all_nan_and_new_categories_are_explicit() -> None:
    reference = pd.DataFrame(
        {"x": np.arange(2_000.0), "gone": np.arange(2_000.0), "c": ["a", "b"] * 1_000}
    )
    current = pd.DataFrame(
        {"x": np.arange(500.0), "gone": np.full(500, np.nan), "c": ["a", "b", "z", "y"] * 125}
    )
    current.loc[0, "x"] = np.inf  # infinities count as missing, as in Evidently
    stats = reference_stats(reference, ["x", "gone"], ["c"])
    result = {c.column: c for c in drift_columns(stats, current)}
    assert result["gone"].status == "insufficient_data"
    assert "no non-null current values" in result["gone"].detail
    assert result["x"].current_rows == 499
    assert result["c"].new_categories == ["y", "z"]
    assert result["c"].drifted  # half the rows are categories the reference never had
    summary = summarize(list(result.values()), 2_000, 500, "w")
    assert summary.insufficient_columns == 1
    assert summary.share_drifted == pytest.approx(sum(c.drifted for c in result.values()) / 2)

    empty = drift_columns(stats, current.iloc[:0])
    assert {c.status for c in empty} == {"insufficient_data"}
    nothing = summarize(empty, 2_000, 0, "empty")
    assert nothing.status == "insufficient_data"
    assert not nothing.dataset_drift
    missing = drift_columns(stats, current[["x"]])
    assert {c.column for c in missing if c.status != "ok"} == {"gone", "c"}


def test_reference_cache_round_trips_and_gives_the_same_verdicts(
    flights,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    frame, spec = flights
    reference = frame[frame[SPLIT] == "train"]
    current = frame[frame[SPLIT] == "test"]
    numeric, categorical = feature_columns(spec, reference)
    calls = []

    def compute():  # noqa: ANN202
        calls.append(1)
        return reference_stats(reference, numeric, categorical)

    folder = tmp_path / "ref" / "v1"
    first, hit = cached_reference(folder, compute)
    assert not hit
    second, hit = cached_reference(folder, compute)
    assert hit and calls == [1]
    assert second.columns == first.columns
    for name, values in first.sorted_values.items():
        np.testing.assert_array_equal(second.sorted_values[name], values)
    assert drift_columns(second, current) == drift_columns(first, current)
    # Written whole by rename: no temporary folder left, JSON and Parquet only.
    assert [p.name for p in folder.parent.iterdir()] == ["v1"]
    assert {p.suffix for p in folder.iterdir()} == {".json", ".parquet"}
    save_reference(first, folder)  # an existing entry is kept
    assert load_reference(tmp_path / "absent") is None
