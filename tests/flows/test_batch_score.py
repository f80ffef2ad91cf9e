"""The batch-score flow scores the newest feature set with the champion, once."""

from __future__ import annotations

import importlib
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from flows.batch_score import batch_score
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import UnscorableFeatureSetError, load_feature_set
from mlsys_core.registry.lineage import lineage
from mlsys_core.serving.batch import BatchScoreError
from mlsys_core.serving.models import load_version
from mlsys_core.tracking import configure_mlflow, tracking_client
from mlsys_core.training.run import model_input_frame
from tests.state import build_without_a_feature

REPO = Path(__file__).resolve().parents[2]


def test_batch_score_deployment_is_declared() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = [d for d in config["deployments"] if d["name"] == "batch-score"]
    path, name = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert getattr(module, name) is batch_score
    (schedule,) = deployment["schedules"]
    assert schedule["slug"] == "daily-batch-score" and schedule["cron"]
    assert schedule["timezone"] == "America/New_York"
    assert deployment["parameters"] == {
        "spec": "nycflights13",
        "model_name": "flight-delay",
        "alias": "champion",
    }


def test_batch_score_without_a_champion_fails_clearly(settings: Settings):
    with pytest.raises(BatchScoreError, match="holds @champion"):
        batch_score()


@pytest.mark.slow
def test_batch_score_flow_writes_once_and_records_lineage(
    settings: Settings, make_champion, monkeypatch
):
    made = make_champion(settings)
    features = made.feature_set
    client = configure_mlflow(settings.tracking)

    result = batch_score()
    assert result.created and result.model_version == made.version
    assert result.feature_set == features.version
    lake = Lake(settings.lake_dir)
    scores = lake.read(result.snapshot)
    assert len(scores) == features.snapshot.rows
    # The test rows (labelled or not) score as the champion scores them directly.
    frame, spec = load_feature_set(features, lake)
    test_rows = model_input_frame(frame[frame["_split"] == "test"], spec)
    champion = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    expected = np.asarray(champion.predict(test_rows), dtype=float)
    test_scores = scores[scores["_split"] == "test"]
    np.testing.assert_allclose(test_scores["raw_probability"], expected, rtol=1e-5, atol=1e-6)
    # The probability is calibrated, as POST /predict answers it.
    calibration = load_version(client, settings.model_name, made.version).calibration
    np.testing.assert_allclose(
        test_scores["probability"], calibration.apply(expected), rtol=1e-5, atol=1e-6
    )
    assert calibration.method != "identity"

    found = lineage(tracking_client(settings.mlflow_uri), f"models:/{settings.model_name}@champion")
    assert [s.deployment for s in found.served_by] == ["prefect-flow/batch-score"]

    again = batch_score()
    assert not again.created and again.snapshot == result.snapshot
    # No dataset given or configured: the version's lineage names it.
    monkeypatch.delenv("MLSYS_DATASET")
    assert batch_score().snapshot == result.snapshot


@pytest.mark.slow
def test_batch_score_scores_the_newest_feature_set_that_holds_the_champions_inputs(
    settings: Settings, make_champion, caplog
):
    """A retrain that dropped a feature built a newer feature set without it; until that
    retrain is the champion, the batch job scores the newest set that gives the champion
    every input as it was trained, and says which newer set it passed over and why."""
    made = make_champion(settings)
    lake = Lake(settings.lake_dir)
    other, dropped = build_without_a_feature(lake, made.feature_set)

    result = batch_score()
    assert result.feature_set == made.feature_set.version != other.version
    assert f"passed over: feature set {other.version}" in caplog.text
    frame, spec = load_feature_set(made.feature_set, lake)
    assert dropped in spec.input_columns
    champion = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    expected = np.asarray(champion.predict(model_input_frame(frame, spec)), dtype=float)
    scores = lake.read(result.snapshot)
    np.testing.assert_allclose(scores["raw_probability"], expected, rtol=1e-5, atol=1e-6)
    # Named outright, the set without the feature is refused with its name.
    with pytest.raises(UnscorableFeatureSetError, match=f"{dropped}: not built"):
        batch_score(feature_set=other.version)
