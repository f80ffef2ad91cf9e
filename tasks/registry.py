"""Registry tasks: register, test, gate, move stages, roll back, note who served a model.

Every read-check-move of an alias holds one slot of a Prefect global concurrency limit
named after the model (limit 1). It lives on the Prefect server, so it also serializes
flow runs on different workers that share one MLflow server, which a file lock could not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef, feature_set_ref
from mlsys_core.registry import gate as gate_core
from mlsys_core.registry import lifecycle, lineage, promotion
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.lifecycle import Approval, AuditEvent, RegisteredVersion, Stage
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.run import TAG_DATASET, TAG_FEATURE_SET, TrainedModel, held_out

LOCK_TIMEOUT_S = 300


def limit_name(model_name: str) -> str:
    return "mlsys-registry-" + re.sub(r"[^A-Za-z0-9_-]", "-", model_name)


@contextmanager
def registry_lock(model_name: str) -> Iterator[None]:
    """Hold the model's registry slot; the limit is created on first use (limit 1) and
    taken with ``strict=True``, because a missing limit would silently not lock."""
    name = limit_name(model_name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            except ObjectAlreadyExists:
                pass  # another run created it first
    with concurrency(name, occupy=1, strict=True, timeout_seconds=LOCK_TIMEOUT_S):
        yield


def _feature_set_of(name: str, version: str, settings: Settings) -> FeatureSetRef:
    """The feature set a version was trained on, from its lineage tags."""
    tags = configure_mlflow(settings).get_model_version(name, version).tags
    lake = Lake(settings.lake_dir)
    snapshot = lake.find("features", tags[TAG_DATASET], tags[TAG_FEATURE_SET])
    if snapshot is None:
        raise LookupError(
            f"{name} v{version} was trained on feature set {tags[TAG_FEATURE_SET]}, "
            f"which is not in {lake.root}"
        )
    return feature_set_ref(snapshot, lake)


@task
def register_model(
    trained: TrainedModel, name: str, actor: str, settings: Settings
) -> RegisteredVersion:
    """Register the run's model as a Development version with lineage tags and a semver."""
    return promotion.register_version(
        configure_mlflow(settings), name, trained, registry_lock(name), actor
    )


@task
def smoke_test(candidate: RegisteredVersion, settings: Settings) -> float:
    """Load the registered version as serving would and score its own held-out rows:
    probabilities in [0, 1] for every row. Returns the held-out AUC."""
    configure_mlflow(settings)
    fs = _feature_set_of(candidate.name, candidate.version, settings)
    features, labels = held_out(fs, Lake(settings.lake_dir))
    scores = promotion.predict_scores(candidate.uri, features)
    if scores.shape != labels.shape or not np.all((scores >= 0) & (scores <= 1)):
        raise ValueError(f"{candidate.uri} returned {scores.shape} scores outside [0, 1]")
    return float(gate_core.auc(labels, scores)[0])


@task
def run_gate(
    candidate: RegisteredVersion, config: GateConfig, actor: str, settings: Settings
) -> GateDecision:
    """Score candidate and champion on the candidate's held-out rows; record the decision."""
    client = configure_mlflow(settings)
    fs = _feature_set_of(candidate.name, candidate.version, settings)
    features, labels = held_out(fs, Lake(settings.lake_dir))
    decision = promotion.challenge_champion(
        client, candidate, features, labels, config.margin, config, f"{fs.version}/test"
    )
    lifecycle.record_gate(client, candidate.name, candidate.version, decision, actor)
    return decision


@task
def check_transition(
    name: str, version: str, to_stage: Stage, settings: Settings, legal_only: bool = False
) -> Stage:
    """Fail fast (before a gate or waiting for a person) if the move is not allowed now."""
    return lifecycle.check_transition(
        configure_mlflow(settings), name, version, to_stage, legal_only=legal_only
    )


@task
def move_stage(
    name: str,
    version: str,
    to_stage: Stage,
    actor: str,
    reason: str,
    settings: Settings,
    gate: GateDecision | None = None,
    approval: Approval | None = None,
) -> AuditEvent:
    """Move a version to a stage under the registry lock, recording who and why."""
    return lifecycle.transition(
        configure_mlflow(settings),
        name,
        version,
        to_stage,
        actor,
        reason,
        registry_lock(name),
        gate=gate,
        approval=approval,
    )


@task
def record_approval(name: str, version: str, approval: Approval, settings: Settings) -> None:
    lifecycle.record_approval(configure_mlflow(settings), name, version, approval)


@task
def rollback_model(name: str, actor: str, reason: str, settings: Settings) -> AuditEvent:
    """Put the previous production version back under the registry lock."""
    return lifecycle.rollback(configure_mlflow(settings), name, actor, reason, registry_lock(name))


@task
def record_served_by(name: str, version: str, deployment: str, settings: Settings) -> None:
    """Note on the version that ``deployment`` used it (for its lineage)."""
    lineage.record_served_by(configure_mlflow(settings), name, version, deployment)


@task
def resolve_version(name: str, version: str | None, from_alias: str, settings: Settings) -> str:
    """An explicit version, or the one holding ``from_alias``."""
    if version:
        return version
    found = lifecycle.alias_version(configure_mlflow(settings), name, from_alias)
    if found is None:
        raise LookupError(f"no version of {name} holds @{from_alias}; pass a version")
    return found
