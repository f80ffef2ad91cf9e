"""Batch inference: score a feature-set snapshot with a registered model, into the lake.

The output is a versioned table ``scores/<dataset>/<id>`` whose id hashes the model version
and the input snapshot, so scoring the same snapshot with the same version again finds the
existing table and does nothing (not even load the model). The model is loaded and applied
exactly as the inference service does (``serving/models.py``): ``probability`` is the
calibrated probability ``POST /predict`` answers, ``raw_probability`` the network's.

Rows stream through in record batches into one part file that is renamed into place only
when complete; the snapshot's manifest names the feature set it read (``parents``), so
``Lake.lineage`` follows a score back to the raw ingests, and the model URI and version it
was scored with.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from mlsys_core.data.lake import Lake, SnapshotRef
from mlsys_core.features.assemble import SPLIT
from mlsys_core.features.store import FeatureSetRef, check_scorable
from mlsys_core.registry.lineage import version_feature_set, version_spec
from mlsys_core.serving.models import LoadedModel, load_version
from mlsys_core.spec import DatasetSpec
from mlsys_core.training.run import model_input_frame

LAYER = "scores"
SCORES_VERSION = "2"  # bump when the output changes, so ids move with the code
PROBABILITY = "probability"
RAW_PROBABILITY = "raw_probability"
PREDICTION = "prediction"
THRESHOLD = 0.5  # a probability at or above it predicts the positive class


class BatchScoreError(ValueError):
    """The model cannot score this snapshot (no such version, incompatible inputs)."""


class ScoreResult(BaseModel):
    """What a batch-score run wrote (or found already written)."""

    model_config = ConfigDict(frozen=True)

    snapshot: SnapshotRef
    model_name: str
    model_version: str
    feature_set: str
    rows: int
    created: bool  # False: an identical table existed, nothing was scored
    seconds: float
    # Rows per categorical input whose value the version never saw in training (scored as
    # an unknown category): new values in new data, or ones written otherwise.
    unseen: dict[str, int] = {}


def resolve_version(client: MlflowClient, name: str, alias: str) -> str:
    """The version ``alias`` points at now; pinned before scoring, so an alias moved
    mid-run cannot mix two models in one table."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        raise BatchScoreError(f"no version of {name!r} holds @{alias}: {err.message}") from None


def scoring_dataset(
    client: MlflowClient,
    lake: Lake,
    name: str,
    version: str,
    given: str | None,
    default: str | None = None,
) -> str:
    """The dataset whose feature sets a version scores: the one given, else the one in its
    lineage (the feature set it was trained on), else ``default``."""
    if given:
        return given
    trained = version_feature_set(client, lake, name, version)
    if trained is not None:
        return trained.snapshot.table
    if default:
        return default
    raise BatchScoreError(
        f"{name} v{version} names no feature set in its lineage and no dataset was given"
    )


def score_id(model_name: str, model_version: str, feature_set: FeatureSetRef) -> str:
    key = f"{model_name}:{model_version}:{feature_set.version}:{SCORES_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _load(client: MlflowClient, name: str, version: str) -> LoadedModel:
    try:
        return load_version(client, name, version)
    except MlflowException as err:
        raise BatchScoreError(f"cannot load models:/{name}/{version}: {err.message}") from None


def score_feature_set(
    lake: Lake,
    feature_set: FeatureSetRef,
    model_name: str,
    model_version: str,
    batch_rows: int,
    client: MlflowClient,
) -> ScoreResult:
    """Score every row of ``feature_set`` with ``models:/<name>/<version>``.

    Output columns: the spec's entity keys and event timestamp (to join back), the split,
    the calibrated and raw probabilities, the 0/1 prediction, and the model name and version.
    """
    start = time.perf_counter()
    dataset = feature_set.snapshot.table
    snapshot_id = score_id(model_name, model_version, feature_set)
    if existing := lake.find(LAYER, dataset, snapshot_id):
        return _result(lake, existing, model_name, model_version, feature_set, False, start)

    meta = lake.manifest(feature_set.snapshot)
    spec = DatasetSpec.model_validate(meta["spec"])
    uri = f"models:/{model_name}/{model_version}"
    model = _load(client, model_name, model_version)
    # The model takes its own inputs, typed as in training: the spec it was trained with.
    trained = version_spec(client, lake, model_name, model_version) or spec
    check_scorable(trained, feature_set, spec, f"{model_name} v{model_version}")
    # The event time is in a feature set only when the model uses it (calendar features).
    stored = {field["name"] for field in meta["schema"]}
    keys = [
        k for k in dict.fromkeys([*spec.entity_keys, spec.event_timestamp, SPLIT]) if k in stored
    ]
    columns = list(dict.fromkeys([*keys, *trained.input_columns]))
    unseen: Counter[str] = Counter()
    # One part per snapshot, named after it: a failure before the manifest takes it back; a
    # killed run leaves a part that a rerun overwrites whole (or `mlsys lake gc` removes).
    with lake.writing():  # a failure takes back the part: nothing half-made stays
        with lake.part_writer(LAYER, dataset, f"score={snapshot_id}", "part-0") as writer:
            batches = lake.iter_batches(lake.parts(feature_set.snapshot), batch_rows, columns)
            for batch in batches:
                frame = batch.to_pandas()
                writer.write(_score_batch(frame, trained, keys, model, unseen))
        manifest = {
            "parents": [f"features/{dataset}/{feature_set.version}"],
            "model_uri": uri,
            "model_name": model_name,
            "model_version": model_version,
            "feature_set": feature_set.version,
            "threshold": THRESHOLD,
            "unseen": dict(sorted(unseen.items())),
        }
        snapshot = lake.write_snapshot(LAYER, dataset, snapshot_id, [writer.ref], manifest)
    return _result(lake, snapshot, model_name, model_version, feature_set, True, start)


def _score_batch(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    keys: list[str],
    model: LoadedModel,
    unseen: Counter[str],
) -> pa.Table:
    """One batch's scores; ``unseen`` counts its rows' categories the model never saw."""
    try:
        inputs = model_input_frame(frame, spec)
        raw, proba = model.predict(inputs)
    except (MlflowException, KeyError) as err:
        message = getattr(err, "message", str(err))
        raise BatchScoreError(
            f"{model.name} v{model.version} cannot score feature set rows: {message}"
        ) from None
    for names in model.unseen(inputs):
        unseen.update(names)
    out = frame[keys].reset_index(drop=True)
    out[PROBABILITY] = proba
    out[RAW_PROBABILITY] = raw
    out[PREDICTION] = (proba >= THRESHOLD).astype(np.int8)
    out["model_name"] = model.name
    out["model_version"] = model.version
    return pa.Table.from_pandas(out, preserve_index=False)


def _result(
    lake: Lake,
    snapshot: SnapshotRef,
    model_name: str,
    model_version: str,
    feature_set: FeatureSetRef,
    created: bool,
    start: float,
) -> ScoreResult:
    return ScoreResult(
        snapshot=snapshot,
        model_name=model_name,
        model_version=model_version,
        feature_set=feature_set.version,
        rows=snapshot.rows,
        created=created,
        seconds=time.perf_counter() - start,
        unseen=lake.manifest(snapshot).get("unseen", {}),
    )
