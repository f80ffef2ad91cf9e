"""Batch scoring writes a versioned scores table equal to the champion's own predictions."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import mlflow
import numpy as np
import pytest

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import (
    FeatureSetRef,
    UnscorableFeatureSetError,
    latest_feature_set,
    load_feature_set,
    scoring_feature_set,
)
from mlsys_core.registry import promotion
from mlsys_core.registry.lineage import version_spec
from mlsys_core.serving import batch
from mlsys_core.serving.batch import BatchScoreError
from mlsys_core.serving.models import load_version
from mlsys_core.tracking import configure_mlflow, tracking_client
from mlsys_core.training.run import model_input_frame
from tests.state import build_without_a_feature, copy_state


@dataclass(frozen=True)
class Served:
    settings: Settings
    feature_set: FeatureSetRef
    name: str
    version: str
    other_version: str  # the same run registered again: another version, same weights


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, make_champion) -> Served:
    settings = Settings(state_dir=tmp_path_factory.mktemp("batch_state"))
    champion = make_champion(settings)
    client = configure_mlflow(settings.tracking)
    second = promotion.register_version(client, champion.name, champion.trained)
    return Served(settings, champion.feature_set, champion.name, champion.version, second.version)


def test_scores_match_the_champion_and_rerun_is_a_noop(champion: Served) -> None:
    configure_mlflow(champion.settings.tracking)
    lake = Lake(champion.settings.lake_dir)
    client = tracking_client(champion.settings.mlflow_uri)
    version = batch.resolve_version(client, champion.name, "champion")
    assert version == champion.version

    # Small batches: several record batches stream into the one part.
    result = batch.score_feature_set(
        lake, champion.feature_set, champion.name, version, 1000, client
    )
    assert result.created
    assert result.snapshot.layer == "scores"
    assert result.rows == champion.feature_set.snapshot.rows > 3000

    # Reference: the whole feature set scored in one call by the registered pyfunc.
    frame, spec = load_feature_set(champion.feature_set, lake)
    model = mlflow.pyfunc.load_model(f"models:/{champion.name}/{version}")
    expected = np.asarray(model.predict(model_input_frame(frame, spec)), dtype=float)
    scores = lake.read(result.snapshot)
    np.testing.assert_allclose(scores["raw_probability"], expected, rtol=1e-5, atol=1e-6)
    # The probability is the version's calibration of it, as POST /predict answers.
    calibrated = load_version(client, champion.name, version).calibration.apply(expected)
    np.testing.assert_allclose(scores["probability"], calibrated, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores["prediction"], (calibrated >= 0.5).astype(int))
    for key in [*spec.entity_keys, SPLIT]:
        assert scores[key].tolist() == frame[key].tolist()
    assert set(scores["model_version"]) == {version}

    # Rows whose category the version never kept in training (rarer than its minimum count
    # in the training split, or only in later ones), counted per input as the service does.
    pre = load_version(client, champion.name, version).python_model.preprocessor
    inputs = model_input_frame(frame, spec)
    unseen = {
        c: int((inputs[c].notna() & ~inputs[c].astype(str).isin(pre.categories_[c])).sum())
        for c in pre.categorical_columns_
        if c in inputs.columns
    }
    assert result.unseen == {c: n for c, n in sorted(unseen.items()) if n}
    assert sum(result.unseen.values()) > 0  # a 3% sample's rare destinations and makers

    # Lineage: the scores name the feature set, which leads back to the raw ingests.
    manifest = lake.manifest(result.snapshot)
    assert manifest["parents"] == [f"features/{spec.name}/{champion.feature_set.version}"]
    assert manifest["model_uri"] == f"models:/{champion.name}/{version}"
    chain = [entry["snapshot"].split("/")[0] for entry in lake.lineage(result.snapshot)]
    assert chain[:2] == ["scores", "features"] and "raw" in chain

    # Same version, same snapshot: found, nothing rewritten.
    data = lake.root / lake.parts(result.snapshot)[0].file
    mtime = data.stat().st_mtime_ns
    again = batch.score_feature_set(
        lake, champion.feature_set, champion.name, version, 1000, client
    )
    assert not again.created
    assert again.snapshot == result.snapshot and again.unseen == result.unseen
    assert data.stat().st_mtime_ns == mtime
    # No temporary files were left in the lake.
    assert not [p for p in lake.root.rglob("*") if p.name.startswith(".tmp")]

    # Another model version is another table.
    other = batch.score_feature_set(
        lake, champion.feature_set, champion.name, champion.other_version, 65_536, client
    )
    assert other.created and other.snapshot.snapshot_id != result.snapshot.snapshot_id
    np.testing.assert_allclose(lake.read(other.snapshot)["raw_probability"], expected, rtol=1e-5)


def test_missing_alias_version_or_feature_set_fails_clearly(champion: Served) -> None:
    client = configure_mlflow(champion.settings.tracking)
    lake = Lake(champion.settings.lake_dir)
    with pytest.raises(BatchScoreError, match="holds @nobody"):
        batch.resolve_version(client, champion.name, "nobody")
    with pytest.raises(BatchScoreError, match="cannot load models:/"):
        batch.score_feature_set(lake, champion.feature_set, champion.name, "99", 1000, client)
    missing = batch.score_id(champion.name, "99", champion.feature_set)
    assert lake.find("scores", "nycflights13", missing) is None  # nothing half-written
    with pytest.raises(LookupError, match="no feature set nycflights13/nope"):
        scoring_feature_set(lake, "nycflights13", "nope", None)
    found = scoring_feature_set(lake, "nycflights13", None, None)
    assert found.feature_set.version == champion.feature_set.version
    assert found.passed_over == []


def test_a_newer_feature_set_without_the_models_inputs_is_passed_over_or_refused(
    champion: Served, tmp_path
) -> None:
    """A retrain that dropped a feature builds a newer feature set without it. Scored by
    the champion, its rows would have that input imputed without a word: the newest set
    that holds every input as trained is scored instead, and a set named outright that
    lacks one is refused with the feature's name."""
    settings = copy_state(champion.settings, tmp_path / "state")  # a newer set, kept apart
    lake = Lake(settings.lake_dir)
    client = configure_mlflow(settings.tracking)
    other, dropped = build_without_a_feature(lake, champion.feature_set)
    assert latest_feature_set(lake, other.snapshot.table) == other  # the newest
    trained = version_spec(client, lake, champion.name, champion.version)
    assert trained is not None and dropped in trained.input_columns

    found = scoring_feature_set(lake, other.snapshot.table, None, trained)
    assert found.feature_set.version == champion.feature_set.version
    (why,) = found.passed_over
    assert other.version in why and f"{dropped}: not built" in why
    with pytest.raises(UnscorableFeatureSetError, match=f"{dropped}: not built") as caught:
        scoring_feature_set(lake, other.snapshot.table, other.version, trained)
    # A task's failure is pickled into its state: the reason survives the round trip.
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)
    with pytest.raises(UnscorableFeatureSetError, match=f"v{champion.version} cannot score"):
        batch.score_feature_set(lake, other, champion.name, champion.version, 1000, client)
    refused = batch.score_id(champion.name, champion.version, other)
    assert lake.find("scores", other.snapshot.table, refused) is None
    # A set the model can take is scored with the model's own inputs, as served.
    result = batch.score_feature_set(
        lake, found.feature_set, champion.name, champion.version, 1000, client
    )
    frame, spec = load_feature_set(found.feature_set, lake)
    expected = load_version(client, champion.name, champion.version).predict(
        model_input_frame(frame, spec)
    )[1]
    np.testing.assert_allclose(lake.read(result.snapshot)["probability"], expected, atol=1e-6)
