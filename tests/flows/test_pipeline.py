"""ml_pipeline end to end on a 3% slice of the real data, under a real Prefect API."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.pipeline import describe, ml_pipeline
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("pipeline_state")
    mp.setenv("MLSYS_STATE_DIR", str(folder))
    yield Settings()
    mp.undo()


@pytest.fixture(scope="module")
def two_runs(state: Settings, small_spec: DatasetSpec):
    """The pipeline twice on the same data: the second run must reuse every snapshot."""
    config = TrainConfig(epochs=2, seed=0)
    first = ml_pipeline(spec=small_spec, train_config=config)
    second = ml_pipeline(spec=small_spec, train_config=TrainConfig(epochs=2, seed=1))
    return first, second


def test_pipeline_writes_versioned_stages(two_runs, state: Settings, small_spec: DatasetSpec):
    first, _ = two_runs
    lake = Lake(state.lake_dir)
    for table, snapshot_id in first.raw_snapshots.items():
        assert lake.find("raw", table, snapshot_id) is not None
    for table, snapshot_id in first.clean_snapshots.items():
        clean = lake.find("clean", table, snapshot_id)
        quarantine = lake.find("quarantine", table, snapshot_id)
        raw = lake.find("raw", table, first.raw_snapshots[table])
        assert clean.rows + quarantine.rows == raw.rows
    # The 1048 mph wind reading is quarantined, never trained on.
    assert first.quarantined_rows["weather"] >= 1
    assert lake.find("features", small_spec.name, first.feature_set) is not None


def test_rerun_on_same_data_reuses_snapshots(two_runs):
    first, second = two_runs
    assert second.raw_snapshots == first.raw_snapshots
    assert second.clean_snapshots == first.clean_snapshots
    assert second.feature_set == first.feature_set


def test_first_model_is_champion_and_second_moves_only_if_better(two_runs, state: Settings):
    first, second = two_runs
    client = tracking_client(state.mlflow_uri)
    name = first.registration.version.name
    assert first.registration.decision.promote
    assert first.registration.decision.champion_auc is None
    d = second.registration.decision
    assert d.champion_version == first.registration.version.version
    # The gate: a lead above the margin and significant; otherwise it stays in testing.
    assert d.promote == (d.challenger_auc > d.champion_auc and d.p_value < 0.05)
    assert second.registration.stage == ("production" if d.promote else "testing")
    champion = client.get_model_version_by_alias(name, "champion")
    expected = second if d.promote else first
    assert str(champion.version) == expected.registration.version.version
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert str(challenger.version) == second.registration.version.version
    tags = client.get_model_version(name, second.registration.version.version).tags
    assert tags["mlsys.feature_set"] == second.feature_set
    assert tags["mlsys.raw.flights"] == second.raw_snapshots["flights"]
    assert "mlsys.code_version" in tags and "mlsys.spec_fingerprint" in tags


def test_training_run_logged_to_mlflow(two_runs, state: Settings):
    first, _ = two_runs
    run = tracking_client(state.mlflow_uri).get_run(first.trained.run_id)
    for key in ("test_auc", "test_log_loss", "test_ece"):
        assert key in run.data.metrics
    assert 0.5 < run.data.metrics["test_auc"] <= 1.0
    artifacts = {
        a.path for a in tracking_client(state.mlflow_uri).list_artifacts(run.info.run_id, "plots")
    }
    assert {
        "plots/loss_curves.png",
        "plots/roc_test.png",
        "plots/calibration_test.png",
    } <= artifacts
    # The registered champion loads as a pyfunc and returns probabilities.
    mlflow.set_tracking_uri(state.mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{first.registration.version.name}@champion")
    assert model.metadata.get_input_schema() is not None


def test_drift_report_and_prefect_artifacts(two_runs):
    first, _ = two_runs
    assert Path(first.drift.report_path).is_file()
    assert "<html" in Path(first.drift.report_path).read_text()[:2000].lower()
    assert first.drift.summary.columns
    with get_client(sync_client=True) as client:
        keys = {"drift-columns", "drift-report", "data-quality"}
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys)))
        )
    assert keys <= {a.key for a in found}


def test_describe_points_at_everything(two_runs, state: Settings, tmp_path, monkeypatch):
    first, _ = two_runs
    text = describe(first, state)
    assert first.trained.run_id in text
    assert first.drift.report_path in text
    ece = first.trained.metrics["test_ece_calibrated"]
    assert f"({ece:.4f} calibrated, as served)" in text
    m = first.trained.metrics
    assert m["test_auc_low"] < m["test_auc"] < m["test_auc_high"]
    rows = int(m["test_rows"])
    assert f"AUC 95% interval {m['test_auc_low']:.3f} .. {m['test_auc_high']:.3f}" in text
    assert f"from {rows} test rows ({round(m['test_positive_rate'] * rows)} positive)" in text
    assert "mlflow ui" in text and "mlsys prefect-server up" in text
    assert f"mlsys serve --model-name {first.registration.version.name}" in text
    # Run from a project folder of the user's, the commands it prints still run there.
    monkeypatch.chdir(tmp_path)
    commands = re.findall(r"(\S+/(?:mlsys|mlflow)) ", describe(first, state))
    assert {Path(c).name for c in commands} == {"mlsys", "mlflow"}, commands
    assert all(Path(c).is_file() and os.access(c, os.X_OK) for c in commands), commands
