from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mlsys_core.data.lake import Lake
from mlsys_core.serving.prediction_log import (
    META_COLUMNS,
    PredictionLogError,
    append_predictions,
    read_prediction_log,
    snapshot_prediction_log,
)

T0 = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


def _rows(start: datetime, n: int, variant: str = "champion") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": [f"r{start:%H%M}-{i}" for i in range(n)],
            "logged_at": [start + timedelta(minutes=30 * i) for i in range(n)],
            "model_name": "flight-delay",
            "model_version": "3",
            "variant": variant,
            "served": variant == "champion",
            "probability": [i / n for i in range(n)],
            "prediction": [int(i / n >= 0.5) for i in range(n)],
            "carrier": "UA",
            "distance": [100.0 + i for i in range(n)],
        }
    )


def test_appends_by_day_and_reads_back_by_time_range(tmp_path):
    lake = Lake(tmp_path)
    first = append_predictions(lake, "ds", _rows(T0, 4))  # 23:00 .. 00:30 next day
    second = append_predictions(lake, "ds", _rows(T0 + timedelta(hours=2), 2, "challenger"))
    assert [p.partition for p in first] == ["date=2026-11-27", "date=2026-11-28"]
    assert sum(p.rows for p in first + second) == 6

    whole = read_prediction_log(lake, "ds")
    assert len(whole) == 6
    assert whole["logged_at"].is_monotonic_increasing
    assert set(META_COLUMNS) <= set(whole.columns)

    window = read_prediction_log(
        lake, "ds", since=T0 + timedelta(minutes=45), until=T0 + timedelta(hours=2)
    )
    assert window["logged_at"].min() >= pd.Timestamp(T0 + timedelta(minutes=45))
    assert window["logged_at"].max() < pd.Timestamp(T0 + timedelta(hours=2))
    assert len(window) == 2
    assert list(read_prediction_log(lake, "ds", columns=["probability"]).columns) == [
        "probability",
        "logged_at",
    ]


def test_empty_log_reads_as_an_empty_frame(tmp_path):
    frame = read_prediction_log(Lake(tmp_path), "nothing")
    assert frame.empty and list(frame.columns) == META_COLUMNS
    assert snapshot_prediction_log(Lake(tmp_path), "nothing") is None


def test_rows_without_the_meta_columns_are_refused_and_nothing_is_written(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(PredictionLogError, match="variant"):
        append_predictions(lake, "ds", _rows(T0, 2).drop(columns=["variant"]))
    assert read_prediction_log(lake, "ds").empty


def test_snapshot_pins_the_parts_seen(tmp_path):
    lake = Lake(tmp_path)
    append_predictions(lake, "ds", _rows(T0, 3))
    pinned = snapshot_prediction_log(lake, "ds")
    append_predictions(lake, "ds", _rows(T0 + timedelta(days=1), 2))
    assert pinned.rows == 3 and len(lake.read(pinned)) == 3
    newer = snapshot_prediction_log(lake, "ds")
    assert newer.snapshot_id != pinned.snapshot_id and newer.rows == 5
