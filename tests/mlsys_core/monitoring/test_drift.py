"""Evidently drift on the spec's feature columns, and the latest-months window."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys_core.datasets.nycflights13 import nycflights13_spec
from mlsys_core.features.assemble import SPLIT
from mlsys_core.monitoring.drift import (
    DriftSummary,
    _run_report,
    drift_frames,
    feature_columns,
    latest_window,
    summarize,
    write_html_report,
)
from mlsys_core.monitoring.stattests import drift_columns, reference_stats
from mlsys_core.spec import DatasetSpec

NEW_YORK = "America/New_York"


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return nycflights13_spec()


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, spec: DatasetSpec, html: Path, window: str = ""
) -> DriftSummary:
    """What the data-drift step does once the frames are loaded: the spec's columns'
    reference statistics, the verdict on every current row, and the HTML report."""
    numeric, categorical = feature_columns(spec, reference)
    stats = reference_stats(reference, numeric, categorical)
    summary = summarize(drift_columns(stats, current), len(reference), len(current), window)
    write_html_report(reference, current, summary, stats, html)
    return summary


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``distance`` moves by five standard deviations; ``origin_temp`` and ``origin`` do not.

    ``origin`` keeps exactly the same shares: Evidently's chi-square takes the reference
    shares as exact, so two independent samples of one distribution can read as drift.
    """
    rng = np.random.default_rng(seed)

    def frame(distance_mean: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "distance": rng.normal(distance_mean, 200.0, rows),
                "origin_temp": rng.normal(55.0, 15.0, rows),
                "origin": rng.permutation(np.resize(["EWR", "JFK", "LGA"], rows)),
            }
        )

    return frame(1_000.0), frame(2_000.0)


# Evidently tests small samples (p-values, drift when small) and measures large ones
# (distances, drift when large): both kinds of score must be read the right way round.
@pytest.mark.parametrize("rows", [400, 1_500])
def test_shifted_column_drifts_and_unchanged_ones_do_not(
    spec: DatasetSpec, tmp_path: Path, rows: int
) -> None:
    reference, current = frames(rows)
    html = tmp_path / "reports" / "drift.html"

    summary = drift_report(reference, current, spec, html, window="w")

    by_column = {c.column: c for c in summary.columns}
    assert set(by_column) == {"distance", "origin_temp", "origin"}
    assert ("p_value" in by_column["distance"].method) == (rows < 1_000)  # both kinds ran
    assert by_column["distance"].drifted
    assert not by_column["origin_temp"].drifted
    assert not by_column["origin"].drifted
    assert summary.drifted_columns == 1
    assert summary.share_drifted == pytest.approx(1 / 3)
    assert not summary.dataset_drift
    assert summary.reference_rows == summary.current_rows == rows
    assert summary.current_window == "w"
    assert summary.columns[0].column == "distance"  # drifted columns first

    # The HTML report is written whole, with no temporary file left beside it.
    assert [p.name for p in html.parent.iterdir()] == ["drift.html"]
    assert "<html" in html.read_text(errors="replace")[:2_000].lower()


def test_the_report_is_the_data_drift_presets_own_page(spec: DatasetSpec, tmp_path: Path) -> None:
    """Widget for widget what Evidently's ``DataDriftPreset`` draws for these frames, though
    its per-column metrics (whose plots the preset drops) are not computed."""
    from evidently.presets import DataDriftPreset  # noqa: PLC0415

    reference, current = frames(400)
    html = tmp_path / "drift.html"
    drift_report(reference, current, spec, html)
    numeric, categorical = feature_columns(spec, reference)
    preset = _run_report(DataDriftPreset(), reference, current, numeric, categorical)
    # Each page names its widgets with fresh random ids.
    ids = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
    ours, theirs = (ids.sub("id", page) for page in (html.read_text(), preset.get_html_str(False)))
    assert "distance" in ours and "origin_temp" in ours
    assert ours == theirs


def test_dataset_drifts_when_half_the_columns_do(spec: DatasetSpec, tmp_path: Path) -> None:
    reference, current = frames(400, seed=1)
    current["origin_temp"] += 60.0
    summary = drift_report(reference, current, spec, tmp_path / "d.html")
    assert {c.column for c in summary.columns if c.drifted} == {"distance", "origin_temp"}
    assert summary.share_drifted == pytest.approx(2 / 3)
    assert summary.dataset_drift


def test_a_wide_tables_report_shows_the_columns_that_drifted_most(tmp_path: Path) -> None:
    """Evidently spends about 0.1 s and 80 kB a column: a report capped at ``report_columns``
    shows the ones that drifted most, tests and distances ranked together, and says so;
    the verdict still covers every column."""
    rng = np.random.default_rng(0)
    calm = {f"calm_{c}": rng.normal(size=1_500) for c in "abcdef"}
    reference = pd.DataFrame(
        {**calm, **{f"shift_{s}": rng.normal(size=1_500) for s in ("small", "big", "huge")}}
    )
    current = reference.sample(frac=1.0, random_state=0).reset_index(drop=True)
    for name, by in (("shift_small", 0.3), ("shift_big", 2.0), ("shift_huge", 4.0)):
        current[name] += by
    numeric = list(reference.columns)
    stats = reference_stats(reference, numeric, [])
    summary = summarize(drift_columns(stats, current), len(reference), len(current), "w")
    assert {c.column for c in summary.columns if c.drifted} == {
        "shift_small",
        "shift_big",
        "shift_huge",
    }
    strength = {c.column: c.strength() for c in summary.columns}
    assert strength["shift_huge"] > strength["shift_big"] > strength["shift_small"] > 1
    assert max(strength[c] for c in calm) < 1

    capped = tmp_path / "capped.html"
    write_html_report(reference, current, summary, stats, capped, report_columns=2)
    page = capped.read_text()
    assert "2 of the 9 checked columns are shown here" in page
    assert "3 of 9 columns drifted" in page
    assert "shift_huge" in page and "shift_big" in page
    assert "shift_small" not in page and not any(c in page for c in calm)

    whole = tmp_path / "whole.html"
    write_html_report(reference, current, summary, stats, whole)  # 9 columns: under the cap
    page = whole.read_text()
    assert all(c in page for c in numeric) and "checked columns are shown here" not in page


def test_an_empty_window_is_insufficient_data_not_a_crash(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    reference, current = frames(50)
    html = tmp_path / "d.html"
    summary = drift_report(reference, current.iloc[:0], spec, html, window="empty")
    assert summary.status == "insufficient_data"
    assert summary.current_rows == 0
    assert not summary.dataset_drift
    assert {c.status for c in summary.columns} == {"insufficient_data"}
    assert "insufficient data" in html.read_text()


def test_latest_window_picks_the_last_month_in_local_time() -> None:
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                [
                    "2013-10-20T12:00:00Z",  # October everywhere
                    "2013-11-15T12:00:00Z",  # November everywhere
                    "2013-12-01T03:00:00Z",  # December in UTC, 30 Nov 22:00 in New York
                    "2013-12-01T06:00:00Z",  # 1 Dec 01:00 in New York
                ],
                utc=True,
            ),
            "row": ["oct", "nov", "nov-local", "dec"],
        }
    )
    assert latest_window(frame, "ts", 1, NEW_YORK)["row"].tolist() == ["dec"]
    assert latest_window(frame, "ts", 2, NEW_YORK)["row"].tolist() == ["nov", "nov-local", "dec"]
    assert latest_window(frame, "ts", 3, NEW_YORK)["row"].tolist() == [
        "oct",
        "nov",
        "nov-local",
        "dec",
    ]
    # In UTC both December rows count, which is how the local rule differs.
    assert latest_window(frame, "ts", 1, "UTC")["row"].tolist() == ["nov-local", "dec"]


def test_latest_window_when_the_local_month_lags_utc() -> None:
    # The newest row is still November in New York though December in UTC.
    frame = pd.DataFrame(
        {
            "ts": ["2013-11-02T12:00:00+00:00", "2013-12-01T04:59:00+00:00"],
            "row": ["early-nov", "late-nov"],
        }
    )
    assert latest_window(frame, "ts", 1, NEW_YORK)["row"].tolist() == ["early-nov", "late-nov"]
    assert latest_window(frame, "ts", 1, "UTC")["row"].tolist() == ["late-nov"]


def test_drift_frames_compares_training_rows_with_the_latest_window(
    spec: DatasetSpec,
) -> None:
    stamps = pd.to_datetime(
        [
            "2013-01-10T15:00Z",
            "2013-02-10T15:00Z",
            "2013-02-20T15:00Z",
            "2013-03-05T15:00Z",
            "2013-03-31T23:00Z",
            "2013-04-01T03:00Z",
        ],
        utc=True,
    )
    frame = pd.DataFrame(
        {
            spec.event_timestamp: stamps,
            SPLIT: ["train", "train", "train", "valid", "test", "test"],
            "row": range(6),
        }
    )
    reference, current, window = drift_frames(frame, spec, months=1)
    assert reference["row"].tolist() == [0, 1, 2]
    # 1 April 03:00 UTC is still 31 March in New York: March is the last local month.
    assert current["row"].tolist() == [3, 4, 5]
    assert window == "2013-03-05 .. 2013-03-31"

    sampled, _, _ = drift_frames(frame, spec, months=1, max_reference_rows=2, seed=0)
    assert len(sampled) == 2
    assert set(sampled["row"]) <= {0, 1, 2}
