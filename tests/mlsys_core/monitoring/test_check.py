"""The scheduled drift check end to end: a registered champion's training data against the
newest month, logged to MLflow with the HTML report."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import load_feature_set
from mlsys_core.monitoring.check import (
    CheckConfig,
    DriftOutcome,
    DriftWindow,
    check_model_drift,
    drift_alerts,
    load_check,
    load_latest,
)
from mlsys_core.registry.lifecycle import CHAMPION
from mlsys_core.registry.promotion import predict_scores
from mlsys_core.serving.prediction_log import append_predictions
from mlsys_core.tracking import configure_mlflow, tracking_client
from mlsys_core.training.run import model_input_frame
from tests.conftest import Champion
from tests.state import build_without_a_feature, copy_state

MODEL = "drift-model"


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, make_champion) -> Champion:
    """One trained model, walked through the lifecycle to champion."""
    return make_champion(Settings(state_dir=tmp_path_factory.mktemp("drift_state")), MODEL)


def check(settings: Settings, model: str = MODEL, **options: object) -> DriftOutcome:
    """The drift check as callers without an orchestrator run it."""
    client = configure_mlflow(settings.tracking)
    experiment = client.get_experiment_by_name(settings.experiment).experiment_id
    return check_model_drift(
        client,
        experiment,
        Lake(settings.lake_dir),
        settings.root / "monitoring",
        settings.reports_dir,
        model,
        **options,
    )


@pytest.fixture(scope="module")
def outcome(champion: Champion) -> DriftOutcome:
    return check(champion.settings)


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_drift_check_compares_training_rows_with_the_last_local_month(
    champion: Champion, outcome: DriftOutcome
) -> None:
    frame, spec = load_feature_set(champion.feature_set, Lake(champion.settings.lake_dir))
    local = pd.to_datetime(frame[spec.event_timestamp], utc=True).dt.tz_convert(
        spec.features.timezone
    )
    last = (local.dt.year == local.dt.year.max()) & (local.dt.month == 12)
    assert outcome.model_version == champion.version
    assert outcome.summary.reference_rows == int((frame[SPLIT] == "train").sum())
    assert outcome.summary.current_rows == int(last.sum())
    assert outcome.summary.current_window.startswith("2013-12-")
    assert {c.column for c in outcome.summary.columns} <= set(
        spec.features.numeric + spec.features.categorical
    )
    assert len(outcome.summary.columns) > 0


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_drift_check_writes_the_html_report_in_the_state_dir(
    champion: Champion, outcome: DriftOutcome
) -> None:
    report = Path(outcome.report_path)
    assert report.is_file()
    assert report.parent == champion.settings.reports_dir
    assert report.suffix == ".html"
    assert "<html" in report.read_text(errors="replace")[:2_000].lower()


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_drift_check_logs_a_run_with_the_report(
    champion: Champion, outcome: DriftOutcome, tmp_path: Path
) -> None:
    client: MlflowClient = configure_mlflow(champion.settings.tracking)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlsys.stage"] == "drift"
    assert run.data.tags["mlsys.model"] == f"{MODEL}@{CHAMPION}"
    assert run.data.tags["mlsys.model_version"] == champion.version
    assert run.data.params["reference_feature_set"] == champion.feature_set.version
    assert run.data.params["current_feature_set"] == champion.feature_set.version
    assert run.data.params["window"] == outcome.summary.current_window
    assert run.data.metrics["share_drifted"] == pytest.approx(outcome.summary.share_drifted)
    assert run.data.metrics["drifted_columns"] == outcome.summary.drifted_columns
    assert run.data.metrics["dataset_drift"] == float(outcome.summary.dataset_drift)

    report = Path(outcome.report_path)
    names = {Path(f.path).name for f in client.list_artifacts(outcome.run_id, "drift")}
    assert names == {report.name, "summary.json"}
    assert outcome.report_uri.endswith(f"/drift/{report.name}")
    folder = Path(client.download_artifacts(outcome.run_id, "drift", str(tmp_path)))
    assert (folder / report.name).read_bytes() == report.read_bytes()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary == outcome.model_dump(mode="json")


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_drift_check_without_the_alias_is_a_lookup_error(champion: Champion) -> None:
    with pytest.raises(LookupError, match="no model version"):
        check(champion.settings, alias="no-such-alias")
    with pytest.raises(LookupError, match="no model version"):
        check(champion.settings, "never-registered")


def _log_rows(
    frame: pd.DataFrame, spec, version: str, probability: np.ndarray, start: datetime
) -> pd.DataFrame:  # noqa: ANN001
    """Prediction log rows as serving writes them: meta, keys, event time, model inputs."""
    n = len(frame)
    rows = model_input_frame(frame, spec)
    for key in spec.entity_keys:
        rows[key] = frame[key].to_numpy()
    return rows.assign(
        request_id=[f"r{i}" for i in range(n)],
        logged_at=[start + timedelta(hours=i % 72) for i in range(n)],
        model_name=MODEL,
        model_version=version,
        variant="champion",
        served=True,
        probability=probability,
        prediction=(probability >= 0.5).astype(int),
    )


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_drift_check_covers_served_predictions_and_delayed_labels(champion: Champion) -> None:
    settings, lake = champion.settings, Lake(champion.settings.lake_dir)
    frame, spec = load_feature_set(champion.feature_set, lake)
    served = frame[frame[SPLIT] == "test"].sample(1_500, random_state=0)
    client = tracking_client(settings.mlflow_uri)
    uri = f"models:/{MODEL}/{champion.version}"
    proba = predict_scores(client, uri, model_input_frame(served, spec))
    start = datetime.now(UTC) - timedelta(days=3)
    log = _log_rows(served, spec, champion.version, proba, start)
    # Predictions whose flights the base table does not hold (yet): pending, never scored.
    future = log.iloc[:100].assign(flight=99_999.0, request_id=lambda d: d.request_id + "f")
    # Another version's and shadow rows are not this version's served predictions.
    other = log.iloc[:50].assign(model_version="999")
    shadow = log.iloc[:50].assign(served=False, variant="challenger")
    append_predictions(lake, spec.name, pd.concat([log, future, other, shadow]))

    outcome = check(settings)

    pred = outcome.prediction
    assert pred is not None and pred.status == "ok"
    assert pred.current_rows == len(log) + len(future)
    by_column = {c.column: c for c in pred.columns}
    assert {"probability", "prediction", "distance", "carrier"} <= set(by_column)
    assert by_column["probability"].status == "ok"

    target = outcome.target
    assert target is not None
    labeled = served[spec.label.name].notna()
    assert target.labeled == int(labeled.sum())
    assert target.pending == len(future) + int((~labeled).sum())
    assert sum(p.predictions for p in target.periods) == len(log) + len(future)
    assert target.label is not None and target.label.status == "ok"
    # AUC per day against a reference computed another way (scikit-learn).
    days = pd.to_datetime(log["logged_at"], utc=True).dt.strftime("%Y-%m-%d")
    for period in target.periods:
        rows = (days == period.period).to_numpy() & labeled.to_numpy()
        y = served[spec.label.name].to_numpy()[rows].astype(int)
        if period.auc is not None:
            assert period.auc == pytest.approx(roc_auc_score(y, proba[rows]), rel=1e-9)
        assert period.labeled == int(rows.sum())


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_reference_is_cached_per_model_version_and_results_survive_a_failed_check(
    champion: Champion, outcome: DriftOutcome
) -> None:
    settings = champion.settings
    again = check(settings)
    assert again.reference_cached
    assert [c.model_dump() for c in again.summary.columns] == [
        c.model_dump() for c in outcome.summary.columns
    ]
    latest = load_latest(settings.root / "monitoring", MODEL)
    assert latest == again
    before = (settings.root / "monitoring" / MODEL / "latest.json").read_bytes()
    history = sorted((settings.root / "monitoring" / MODEL / "history").iterdir())

    # The report folder cannot be written: the check fails and changes nothing it published.
    reports = settings.reports_dir
    reports.rename(reports.with_name("reports-away"))
    reports.write_text("not a folder")
    try:
        with pytest.raises(OSError):
            check(settings, config=CheckConfig(months=2))
    finally:
        reports.unlink()
        reports.with_name("reports-away").rename(reports)
    assert (settings.root / "monitoring" / MODEL / "latest.json").read_bytes() == before
    assert sorted((settings.root / "monitoring" / MODEL / "history").iterdir()) == history


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_explicit_window_and_alerts(champion: Champion) -> None:
    window = DriftWindow(start=date(2013, 6, 1), end=date(2013, 11, 30))
    outcome = check(champion.settings, config=CheckConfig(window=window))
    assert outcome.summary.current_window.startswith("2013-06-")
    assert outcome.summary.current_window.endswith("2013-11-30")
    share = outcome.summary.share_drifted
    assert share > 0  # summer and autumn weather is not the training months' mix
    assert drift_alerts(outcome, share)[0].startswith("data drift")
    above = drift_alerts(outcome, min(1.0, share + 0.01))
    assert not any(r.startswith("data drift") for r in above)
    empty = DriftWindow(start=date(2014, 1, 1), end=date(2014, 1, 31))
    nothing = check(champion.settings, config=CheckConfig(window=empty))
    assert nothing.summary.status == "insufficient_data"
    assert nothing.summary.current_rows == 0
    assert not any(r.startswith("data drift") for r in drift_alerts(nothing, 0.01))


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_a_newer_feature_set_without_the_champions_inputs_is_passed_over(
    champion: Champion, tmp_path: Path
) -> None:
    """A retrain that dropped a feature built a newer set without it: its data would show
    that feature as missing (or a redefined one as drifted). The check reads the newest set
    that holds the champion's inputs as trained, and says which it passed over and why."""
    settings = copy_state(champion.settings, tmp_path / "state")  # a newer set, kept apart
    lake = Lake(settings.lake_dir)
    other, dropped = build_without_a_feature(lake, champion.feature_set)
    client = configure_mlflow(settings.tracking)
    inputs = load_check(client, lake, tmp_path / "monitoring", MODEL, CHAMPION, CheckConfig())
    assert inputs.current_set.version == champion.feature_set.version != other.version
    (why,) = inputs.passed_over
    assert other.version in why and f"{dropped}: not built" in why
