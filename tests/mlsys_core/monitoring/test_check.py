"""The scheduled drift check end to end: a registered champion's training data against the
newest month, logged to MLflow with the HTML report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import FeatureSetRef, load_feature_set
from mlsys_core.monitoring.check import DriftOutcome, check_model_drift
from mlsys_core.registry.promotion import CHAMPION, register_version
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.run import train_and_log
from mlsys_core.training.trainer import TrainConfig

MODEL = "drift-model"


@dataclass(frozen=True)
class Champion:
    settings: Settings
    feature_set: FeatureSetRef
    version: str


@pytest.fixture(scope="module")
def champion(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> Champion:
    """One trained model, registered with its lineage and named champion."""
    settings = Settings(state_dir=tmp_path_factory.mktemp("drift_state"))
    feature_set = make_feature_set(settings)
    trained = train_and_log(feature_set, TrainConfig(epochs=1), settings)
    client = configure_mlflow(settings)
    version = register_version(client, MODEL, trained)
    client.set_registered_model_alias(MODEL, CHAMPION, version.version)
    return Champion(settings, feature_set, version.version)


@pytest.fixture(scope="module")
def outcome(champion: Champion) -> DriftOutcome:
    return check_model_drift(champion.settings, MODEL)


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
    client: MlflowClient = configure_mlflow(champion.settings)
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
    assert summary == outcome.summary.model_dump(mode="json")


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_drift_check_without_the_alias_is_a_lookup_error(champion: Champion) -> None:
    with pytest.raises(LookupError, match="no model version"):
        check_model_drift(champion.settings, MODEL, alias="no-such-alias")
    with pytest.raises(LookupError, match="no model version"):
        check_model_drift(champion.settings, "never-registered")
