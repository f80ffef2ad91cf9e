"""train_and_log against a real MLflow SQLite store: params, curves, metrics, plots and a
pyfunc model that carries its own preprocessing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from sklearn.metrics import log_loss, roc_auc_score

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.columns import preprocessor_for
from mlsys_core.features.store import FeatureSetRef, load_feature_set
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.config import ModelConfig, TrainConfig
from mlsys_core.training.run import (
    TrainedModel,
    held_out,
    labeled_splits,
    latest_trained,
    train_and_log,
)
from mlsys_core.training.trainer import Trainer

CONFIG = TrainConfig(epochs=2)
PLOTS = {"loss_curves.png", "roc_test.png", "calibration_test.png"}


@dataclass(frozen=True)
class Trained:
    settings: Settings
    feature_set: FeatureSetRef
    frame: pd.DataFrame
    spec: DatasetSpec
    first: TrainedModel
    second: TrainedModel
    cwd: Path  # the folder training ran in

    @property
    def lake(self) -> Lake:
        return Lake(self.settings.lake_dir)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> Trained:
    """Two finished training runs (seeds 0 and 1) on one feature set, in one store."""
    settings = Settings(state_dir=tmp_path_factory.mktemp("run_state"))
    cwd = tmp_path_factory.mktemp("run_cwd")
    feature_set = make_feature_set(settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        first = train_and_log(
            feature_set, CONFIG, Lake(settings.lake_dir), settings.tracking, run_name="first"
        )
        second = train_and_log(
            feature_set,
            CONFIG.model_copy(update={"seed": 1}),
            Lake(settings.lake_dir),
            settings.tracking,
            run_name="second",
        )
    frame, spec = load_feature_set(feature_set, Lake(settings.lake_dir))
    return Trained(settings, feature_set, frame, spec, first, second, cwd)


@pytest.fixture
def client(trained: Trained) -> MlflowClient:
    """MLflow pointed at the module's store (other tests may have pointed it elsewhere)."""
    return configure_mlflow(trained.settings.tracking)


def labeled(t: Trained, split: str) -> pd.DataFrame:
    label = t.spec.label.name
    return t.frame[(t.frame[SPLIT] == split) & t.frame[label].notna()]


def reference_ece(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> float:
    """ECE with pandas: bin by floor(p * n_bins), top edge in the last bin."""
    frame = pd.DataFrame({"y": y, "p": proba})
    frame["bin"] = np.minimum(np.floor(frame["p"] * n_bins), n_bins - 1)
    per_bin = frame.groupby("bin").agg(n=("y", "size"), y=("y", "mean"), p=("p", "mean"))
    return float((per_bin["n"] * (per_bin["y"] - per_bin["p"]).abs()).sum() / len(frame))


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logs_the_training_config_as_params(trained: Trained, client: MlflowClient) -> None:
    params = client.get_run(trained.first.run_id).data.params
    for key, value in CONFIG.model_dump(exclude={"device"}).items():
        assert params[key] == str(value), key
    # The device actually used, not the "auto" that was asked for.
    assert params["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert params["feature_set"] == trained.feature_set.version
    n_inputs = preprocessor_for(trained.spec).fit(labeled(trained, "train"))
    assert int(params["n_inputs"]) == len(n_inputs.get_feature_names_out())


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logs_lineage_tags(trained: Trained, client: MlflowClient) -> None:
    tags = client.get_run(trained.first.run_id).data.tags
    fs = trained.feature_set
    assert tags["mlsys.stage"] == "train"
    assert tags["mlsys.feature_set"] == fs.version
    assert tags["mlsys.dataset"] == trained.spec.name
    assert tags["mlsys.spec_fingerprint"] == fs.spec_fingerprint == trained.spec.fingerprint()
    assert tags["mlsys.model_uri"] == trained.first.model_uri
    for table in ("flights", "weather", "planes", "airports"):
        assert tags[f"mlsys.raw.{table}"] == fs.raw_snapshots[table]
        assert tags[f"mlsys.clean.{table}"] == fs.clean_snapshots[table]


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logs_one_curve_point_per_epoch(trained: Trained, client: MlflowClient) -> None:
    run_id = trained.first.run_id
    histories = {
        key: client.get_metric_history(run_id, key) for key in ("train_loss", "val_loss", "val_auc")
    }
    # epochs=2 is below the patience of 3, so no early stop: exactly two points each.
    for key, history in histories.items():
        assert sorted(m.step for m in history) == [1, 2], key
    val_losses = {m.step: m.value for m in histories["val_loss"]}
    best_epoch = int(trained.first.metrics["best_epoch"])
    assert val_losses[best_epoch] == pytest.approx(min(val_losses.values()), abs=1e-5)
    # valid_* metrics are computed after training, on the restored best weights.
    assert trained.first.metrics["valid_log_loss"] == pytest.approx(
        val_losses[best_epoch], rel=1e-5
    )


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logs_row_counts_and_never_trains_on_unlabeled_rows(
    trained: Trained, client: MlflowClient
) -> None:
    metrics = client.get_run(trained.first.run_id).data.metrics
    label = trained.spec.label.name
    for split in ("train", "valid", "test"):
        assert metrics[f"rows_{split}"] == len(labeled(trained, split))
    unlabeled = int(trained.frame[label].isna().sum())
    assert unlabeled > 0  # the slice has cancelled flights
    assert metrics["rows_unlabeled"] == unlabeled


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_test_metrics_recompute_from_the_logged_model(
    trained: Trained, client: MlflowClient
) -> None:
    logged = client.get_run(trained.first.run_id).data.metrics
    assert {k: logged[k] for k in trained.first.metrics} == pytest.approx(trained.first.metrics)

    held = held_out(trained.feature_set, Lake(trained.settings.lake_dir))
    features, labels = held.inputs(), held.labels
    proba = np.asarray(mlflow.pyfunc.load_model(trained.first.model_uri).predict(features))
    assert logged["test_rows"] == len(labels)
    assert logged["test_auc"] == pytest.approx(roc_auc_score(labels, proba), abs=1e-6)
    assert logged["test_log_loss"] == pytest.approx(log_loss(labels, proba), rel=1e-5)
    assert logged["test_ece"] == pytest.approx(reference_ece(labels, proba), abs=1e-5)
    assert logged["test_auc"] > 0.55  # two epochs already beat chance on this slice


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logs_the_three_plots_as_png(
    trained: Trained, client: MlflowClient, tmp_path: Path
) -> None:
    run_id = trained.first.run_id
    names = {Path(f.path).name for f in client.list_artifacts(run_id, "plots")}
    assert names == PLOTS
    folder = Path(client.download_artifacts(run_id, "plots", str(tmp_path)))
    for name in PLOTS:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_model_signature_takes_the_spec_input_columns(
    trained: Trained, client: MlflowClient
) -> None:
    signature = mlflow.models.get_model_info(trained.first.model_uri).signature
    columns = signature.inputs.inputs
    assert [c.name for c in columns] == trained.spec.input_columns
    # Nulls are imputed, so only the event time is required.
    assert {c.name for c in columns if c.required} == {trained.spec.event_timestamp}


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_logged_model_carries_an_input_example_it_serves(
    trained: Trained, client: MlflowClient, tmp_path: Path
) -> None:
    """What the MLflow UI shows as the request to send; MLflow predicts it at logging."""
    local = mlflow.artifacts.download_artifacts(trained.first.model_uri, dst_path=str(tmp_path))
    logged = mlflow.models.Model.load(local)
    example = logged.load_input_example(local)
    assert list(example.columns) == trained.spec.input_columns and len(example) == 3
    serving = json.loads(logged.get_serving_input(local))
    assert serving["dataframe_split"]["columns"] == trained.spec.input_columns
    proba = np.asarray(mlflow.pyfunc.load_model(local).predict(example))
    assert proba.shape == (3,) and np.all((proba > 0) & (proba < 1))


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_model_is_stored_under_the_state_dir(trained: Trained, client: MlflowClient) -> None:
    model_id = trained.first.model_uri.rsplit("/", 1)[-1]
    location = mlflow.get_logged_model(model_id).artifact_location
    assert location.startswith(trained.settings.artifact_dir.as_uri() + "/")
    assert list(trained.cwd.iterdir()) == []  # no ./mlruns where training ran


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_served_model_equals_the_trainer_on_held_out_rows(
    trained: Trained, client: MlflowClient
) -> None:
    """Raw rows into the pyfunc give what the trainer computes from transformed rows:
    the preprocessing travels inside the model."""
    # The trainer side, rebuilt: training is seeded, so this is the model that was logged.
    splits = labeled_splits(trained.frame, trained.spec)
    preprocessor = preprocessor_for(trained.spec).fit(splits["train"])
    label = trained.spec.label.name
    trainer = Trainer(
        CONFIG,
        ModelConfig(
            cardinalities=preprocessor.cardinalities_,
            n_numeric=preprocessor.n_numeric_,
            hidden=CONFIG.hidden,
            dropout=CONFIG.dropout,
            max_embedding_dim=CONFIG.max_embedding_dim,
        ),
    )
    trainer.setup(
        preprocessor.transform(splits["train"]),
        splits["train"][label].to_numpy(np.float32),
        preprocessor.transform(splits["valid"]),
        splits["valid"][label].to_numpy(np.float32),
    )
    trainer.train()
    expected = trainer.predict_proba(preprocessor.transform(splits["test"]))

    features = held_out(trained.feature_set, Lake(trained.settings.lake_dir)).inputs()
    served = np.asarray(mlflow.pyfunc.load_model(trained.first.model_uri).predict(features))
    assert served.shape == (len(splits["test"]),)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_served_model_treats_unseen_categories_as_missing(
    trained: Trained, client: MlflowClient
) -> None:
    features = held_out(trained.feature_set, Lake(trained.settings.lake_dir), "valid").inputs()
    rows = features.head(20).reset_index(drop=True)
    model = mlflow.pyfunc.load_model(trained.first.model_uri)
    unseen = rows.assign(carrier="ZZ", dest="NOWHERE")
    missing = rows.assign(carrier=None, dest=None)
    no_numbers = rows.assign(distance=np.nan, origin_temp=np.nan)
    unseen_proba = np.asarray(model.predict(unseen))
    np.testing.assert_allclose(unseen_proba, np.asarray(model.predict(missing)), atol=1e-7)
    for proba in (unseen_proba, np.asarray(model.predict(no_numbers))):
        assert proba.shape == (20,)
        assert np.all((proba > 0) & (proba < 1))


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_held_out_returns_model_inputs_and_labels(trained: Trained) -> None:
    lake = Lake(trained.settings.lake_dir)
    label = trained.spec.label.name
    ts = trained.spec.event_timestamp
    for split in ("test", "valid"):
        held = held_out(trained.feature_set, lake, split)
        features, labels = held.inputs(), held.labels
        expected = labeled(trained, split)
        assert list(features.columns) == trained.spec.input_columns
        assert len(features) == len(expected)
        np.testing.assert_array_equal(labels, expected[label].to_numpy(np.float64))
        assert set(np.unique(labels)) == {0.0, 1.0}
        # MLflow schemas take naive datetimes: the same instants, as naive UTC.
        assert features[ts].dt.tz is None
        utc = pd.to_datetime(expected[ts], utc=True).dt.tz_localize(None)
        np.testing.assert_array_equal(features[ts].to_numpy(), utc.to_numpy())


def test_labeled_splits_needs_both_classes_in_every_split(small_spec: DatasetSpec) -> None:
    label = small_spec.label.name
    frame = pd.DataFrame(
        {
            label: [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, np.nan],
            SPLIT: ["train", "train", "valid", "valid", "test", "test", "valid"],
        }
    )
    with pytest.raises(ValueError, match="valid"):
        labeled_splits(frame, small_spec)
    frame.loc[3, label] = 0.0
    splits = labeled_splits(frame, small_spec)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [2, 2, 2]  # NaN row dropped


def latest(client: MlflowClient, trained: Trained) -> TrainedModel:
    return latest_trained(client, trained.settings.experiment, trained.lake)


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_latest_trained_is_the_newest_finished_training_run(
    trained: Trained, client: MlflowClient
) -> None:
    found = latest(client, trained)
    assert found.run_id == trained.second.run_id
    assert found.model_uri == trained.second.model_uri
    assert found.feature_set == trained.feature_set
    assert found.metrics["test_auc"] == pytest.approx(trained.second.metrics["test_auc"])

    # Newer runs that are not finished training runs do not count.
    experiment = client.get_experiment_by_name(trained.settings.experiment).experiment_id
    other_stage = client.create_run(experiment, tags={"mlsys.stage": "drift"})
    client.set_terminated(other_stage.info.run_id, "FINISHED")
    tags = {
        "mlsys.stage": "train",
        "mlsys.dataset": trained.spec.name,
        "mlsys.feature_set": trained.feature_set.version,
    }
    running = client.create_run(experiment, tags=tags)
    try:
        assert latest(client, trained).run_id == trained.second.run_id
    finally:
        client.set_terminated(running.info.run_id, "FAILED")
    assert latest(client, trained).run_id == trained.second.run_id


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_latest_trained_without_a_training_run(trained: Trained) -> None:
    client = configure_mlflow(trained.settings.tracking)
    with pytest.raises(LookupError, match="no finished training run"):
        latest_trained(client, "no-runs-here", trained.lake)
    client.create_experiment("no-runs-yet")
    with pytest.raises(LookupError, match="no finished training run"):
        latest_trained(client, "no-runs-yet", trained.lake)


@pytest.mark.slow  # its shared fixture trains and logs real models
def test_latest_trained_with_a_feature_set_missing_from_the_lake(
    trained: Trained, tmp_path: Path
) -> None:
    # Same store, an empty lake: the run's feature set cannot be found.
    other = trained.settings.model_copy(update={"experiment": "lost-lake"})
    client = configure_mlflow(other.tracking)
    experiment = client.get_experiment_by_name("lost-lake").experiment_id
    tags = {
        "mlsys.stage": "train",
        "mlsys.dataset": trained.spec.name,
        "mlsys.feature_set": "0" * 20,
        "mlsys.model_uri": "models:/m-none",
    }
    run = client.create_run(experiment, tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")
    with pytest.raises(LookupError, match="not in"):
        latest_trained(client, "lost-lake", Lake(tmp_path / "empty-lake"))
