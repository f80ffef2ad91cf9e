"""One training run end to end: fit preprocessing and network on the training split, evaluate
on validation and test, and log everything to MLflow as one run with a pyfunc model."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema
from pydantic import BaseModel, ConfigDict

from mlsys_core.config import Tracking
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import (
    TAG_DATASET,
    TAG_FEATURE_SET,
    FeatureSetRef,
    check_scorable,
    feature_set_of,
    load_feature_set,
)
from mlsys_core.spec import DatasetSpec
from mlsys_core.tracking import code_version, configure_mlflow
from mlsys_core.training.calibration import log_calibration
from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.config import ModelConfig, TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.matrices import fit_matrices, labeled_splits
from mlsys_core.training.metrics import (
    auc_interval,
    binary_metrics,
    expected_calibration_error,
)
from mlsys_core.training.pyfunc import (
    MODEL_CODE,
    pip_requirements,
    write_model_artifacts,
)
from mlsys_core.training.signals import run_killed_on_sigterm
from mlsys_core.training.trainer import EpochMetrics, Trainer

# Run tags that carry lineage from the data to the model version (the feature set's two,
# TAG_DATASET and TAG_FEATURE_SET, are the feature store's).
TAG_SPEC = "mlsys.spec_fingerprint"
TAG_CODE = "mlsys.code_version"
TAG_STAGE = "mlsys.stage"
TAG_MODEL_URI = "mlsys.model_uri"
TAG_RESUMED_FROM = "mlsys.resumed_from_step"
TAG_JOB = "mlsys.train_job"


class TrainedModel(BaseModel):
    """What a training run hands to registration: references, not objects."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    model_uri: str
    feature_set: FeatureSetRef
    metrics: dict[str, float]
    resumed_from_step: int | None = None  # the checkpoint's optimizer step, if one was used


def split_rows(
    feature_set: FeatureSetRef, lake: Lake, split: str = "test"
) -> tuple[pd.DataFrame, DatasetSpec]:
    """The labeled feature rows of one split, and the spec they were built with."""
    frame, spec = load_feature_set(feature_set, lake)
    return labeled_splits(frame, spec)[split], spec


@dataclass(frozen=True)
class HeldOut:
    """One split of a feature set: the rows a model is scored on, in whichever spec's terms
    the model was trained with."""

    rows: pd.DataFrame
    spec: DatasetSpec  # the spec the rows were built with
    feature_set: FeatureSetRef
    split: str = "test"

    @property
    def where(self) -> str:
        return f"{self.feature_set.version}/{self.split}"

    @property
    def labels(self) -> np.ndarray:
        return self.rows[self.spec.label.name].to_numpy(np.float64)

    def inputs(self, model: DatasetSpec | None = None, who: str = "the model") -> pd.DataFrame:
        """The rows as a model trained with ``model`` takes them (default: the rows' own
        spec); refused when the rows lack an input of it or compute one otherwise."""
        if model is None:
            return model_input_frame(self.rows, self.spec)
        check_scorable(model, self.feature_set, self.spec, who)
        return model_input_frame(self.rows, model)


def held_out(feature_set: FeatureSetRef, lake: Lake, split: str = "test") -> HeldOut:
    """The labeled rows of one split, for scoring registered models alike."""
    rows, spec = split_rows(feature_set, lake, split)
    return HeldOut(rows, spec, feature_set, split)


def train_and_log(
    feature_set: FeatureSetRef,
    config: TrainConfig,
    lake: Lake,
    tracking: Tracking,
    run_name: str | None = None,
    launch: LaunchConfig | None = None,
    checkpoint_dir: Path | None = None,
    job_key: str | None = None,
) -> TrainedModel | None:
    """Train on a feature-set version and log params, curves, plots and the model.

    In-process, or as one rank of a torchrun group (the worker calls this): every rank trains,
    rank 0 alone talks to MLflow and returns the result; the other ranks return None.
    """
    launch = launch or LaunchConfig()
    frame, spec = load_feature_set(feature_set, lake)
    splits = labeled_splits(frame, spec)
    label = spec.label.name
    matrices = fit_matrices(splits, spec)  # deterministic: every rank fits the same
    preprocessor, x, y = matrices.preprocessor, matrices.x, matrices.y
    model_config = matrices.model_config(config)
    store = CheckpointStore(checkpoint_dir, launch.keep_checkpoints) if checkpoint_dir else None
    trainer = Trainer(config, model_config, launch, store)
    trainer.setup(x["train"], y["train"], x["valid"], y["valid"])
    if not trainer.ctx.is_main:
        trainer.train()
        return None

    configure_mlflow(tracking)
    tags = {
        TAG_STAGE: "train",
        TAG_FEATURE_SET: feature_set.version,
        TAG_DATASET: spec.name,
        TAG_SPEC: spec.fingerprint(),
        TAG_CODE: code_version(),
        **{f"mlsys.raw.{t}": i for t, i in feature_set.raw_snapshots.items()},
        **{f"mlsys.clean.{t}": i for t, i in feature_set.clean_snapshots.items()},
    }
    if trainer.resumed_from is not None:
        tags[TAG_RESUMED_FROM] = str(trainer.resumed_from)
    if job_key is not None:
        tags[TAG_JOB] = job_key
    with run_killed_on_sigterm(run_name=run_name, tags=tags) as run:
        mlflow.log_params(
            {
                **config.model_dump(),
                "device": str(trainer.device),
                "feature_set": feature_set.version,
                "n_inputs": x["train"].shape[1],
                **_launch_params(launch, trainer.ctx.world_size),
            }
        )
        mlflow.log_metrics({f"rows_{n}": float(len(p)) for n, p in splits.items()})
        mlflow.log_metric("rows_unlabeled", float(frame[label].isna().sum()))

        def log_epoch(m: EpochMetrics) -> None:
            mlflow.log_metrics(
                {"train_loss": m.train_loss, "val_loss": m.val_loss, "val_auc": m.val_auc},
                step=m.epoch,
            )

        started = time.perf_counter()
        result = trainer.train(on_epoch=log_epoch)
        metrics = {
            "best_epoch": float(result.best_epoch),
            "train_seconds": time.perf_counter() - started,
        }
        proba = {}
        for name in ("valid", "test"):
            proba[name] = trainer.predict_proba(x[name])
            metrics |= {f"{name}_{k}": v for k, v in binary_metrics(y[name], proba[name]).items()}
        low, high = auc_interval(y["test"], proba["test"], metrics["test_auc"])
        metrics |= {"test_auc_low": low, "test_auc_high": high}
        calibrated = log_calibration(y["valid"], proba["valid"]).apply(proba["test"])
        metrics["test_ece_calibrated"] = expected_calibration_error(y["test"], calibrated)
        mlflow.log_metrics(metrics)
        _log_figures(result.history, y["test"], proba["test"], metrics)
        _log_feature_artifacts(preprocessor)
        model_uri = _log_model(trainer, preprocessor, model_config, splits["train"], spec)
        mlflow.set_tag(TAG_MODEL_URI, model_uri)
    if store is not None:
        store.clear()  # the model is logged: a rerun of this job trains afresh
    return TrainedModel(
        run_id=run.info.run_id,
        model_uri=model_uri,
        feature_set=feature_set,
        metrics=metrics,
        resumed_from_step=trainer.resumed_from,
    )


def _launch_params(launch: LaunchConfig, world_size: int) -> dict[str, object]:
    params: dict[str, object] = {"strategy": launch.strategy, "world_size": world_size}
    if launch.strategy == "ddp":
        params["sync"] = launch.sync
        if launch.sync == "local_sgd":
            params |= {
                "local_sgd_period": launch.local_sgd_period,
                "local_sgd_warmup": launch.local_sgd_warmup,
            }
    return params


def latest_trained(client: MlflowClient, experiment: str, lake: Lake) -> TrainedModel:
    """The newest finished training run, for running registration on its own."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(
            f"no finished training run in MLflow (no experiment {experiment!r}); run the "
            "train flow first"
        )
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{TAG_STAGE}` = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise LookupError("no finished training run in MLflow; run the train flow first")
    run = runs[0]
    return TrainedModel(
        run_id=run.info.run_id,
        model_uri=run.data.tags[TAG_MODEL_URI],
        feature_set=feature_set_of(run.data.tags, lake),
        metrics=dict(run.data.metrics),
    )


def _log_figures(
    history: list[EpochMetrics], y_test: np.ndarray, proba_test: np.ndarray, metrics: dict
) -> None:
    # Imported here: matplotlib and sklearn.calibration cost every process that imports this
    # module (each rank, every flow) about a second, and only the logging rank draws.
    from mlsys_core.training import plots  # noqa: PLC0415

    figures = {
        "plots/loss_curves.png": plots.loss_curves(history),
        "plots/roc_test.png": plots.roc(y_test, proba_test, metrics["test_auc"]),
        "plots/calibration_test.png": plots.calibration(y_test, proba_test, metrics["test_ece"]),
    }
    for path, figure in figures.items():
        mlflow.log_figure(figure, path)
        plots.close(figure)  # pyplot keeps every figure alive until closed


def _log_feature_artifacts(preprocessor) -> None:  # noqa: ANN001
    """The model's input features by name and, with selectors, what each dropped and why."""
    mlflow.log_dict(
        {"features": [str(n) for n in preprocessor.get_feature_names_out()]},
        "features/feature_names.json",
    )
    if hasattr(preprocessor, "selection_report") and preprocessor.selectors_:
        mlflow.log_dict({"selectors": preprocessor.selection_report()}, "features/selection.json")


def _log_model(
    trainer: Trainer,
    preprocessor,
    model_config: ModelConfig,  # noqa: ANN001
    train: pd.DataFrame,
    spec: DatasetSpec,
) -> str:
    example = model_input_frame(train.head(200), spec)
    proba = trainer.predict_proba(preprocessor.transform(example)).astype(np.float64)
    inferred = infer_signature(example, proba)
    # Nulls are valid in every feature (the preprocessor imputes them); only the event time
    # must be present.
    inputs = Schema(
        [
            ColSpec(c.type, c.name, required=c.name == spec.event_timestamp)
            for c in inferred.inputs.inputs
        ]
    )
    signature = ModelSignature(inputs=inputs, outputs=inferred.outputs)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = write_model_artifacts(Path(tmp), preprocessor, model_config, trainer.model)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            signature=signature,
            input_example=example.head(3),
            pip_requirements=pip_requirements(getattr(preprocessor, "requirements", list)()),
        )
    return info.model_uri


def model_input_frame(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The raw feature columns a model takes, with the types its signature declares."""
    out = frame[spec.input_columns].copy()
    for col in spec.features.numeric:
        out[col] = out[col].astype("float64")
    for col in spec.features.categorical:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    for col in out.columns.difference([*spec.features.numeric, *spec.features.categorical]):
        values = out[col]
        if isinstance(values.dtype, pd.DatetimeTZDtype):  # naive UTC, as MLflow takes it
            out[col] = pd.to_datetime(values, utc=True).dt.tz_localize(None)
        elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out[col] = values.astype("float64")
        elif not pd.api.types.is_datetime64_dtype(values):
            out[col] = values.astype(object).where(values.notna(), None)
    return out
