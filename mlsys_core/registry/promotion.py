"""Registering a trained model and letting the gate decide whether it replaces the champion.

A thin layer over ``lifecycle`` (stages, aliases, audit) and ``gate`` (margin plus paired
bootstrap) for callers that want the whole path in three calls: ``register_version``,
``challenge_champion``, ``apply_decision``. Loading goes through MLflow's fluent API, so
pass the client that ``tracking.configure_mlflow`` returned: it also points the fluent API
at the same store.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlsys_core.registry import gate as gate_core
from mlsys_core.registry import lifecycle
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.lifecycle import (
    CHALLENGER,
    CHAMPION,
    Approval,
    RegisteredVersion,
    Stage,
)
from mlsys_core.training.run import TrainedModel

# MLflow loads a models-from-code model through a module global (``set_model``), so two
# threads loading at once can swap models; loading is serialized, predicting is not.
_LOAD_LOCK = threading.Lock()

# The gate's decision; the old name stays for callers of the walking skeleton.
PromotionDecision = GateDecision

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GateConfig",
    "PromotionDecision",
    "RegisteredVersion",
    "apply_decision",
    "challenge_champion",
    "current_champion",
    "predict_scores",
    "register_version",
    "score_auc",
]


def register_version(
    client: MlflowClient,
    name: str,
    trained: TrainedModel,
    lock: AbstractContextManager | None = None,
    actor: str = "mlsys",
) -> RegisteredVersion:
    """Register the run's model as a Development version with lineage tags and a semver.

    Pass a ``RegistryLock`` when several processes register the same model at once; without
    one, two concurrent registrations may get the same semantic version.
    """
    return lifecycle.register(
        client,
        name,
        trained.model_uri,
        trained.run_id,
        actor,
        lock or nullcontext(),
        extra_tags={"mlsys.test_auc": f"{trained.metrics['test_auc']:.6f}"},
    )


def current_champion(client: MlflowClient, name: str) -> RegisteredVersion | None:
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return RegisteredVersion(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        semver=mv.tags.get(lifecycle.TAG_SEMVER),
    )


def predict_scores(model_uri: str, features: pd.DataFrame) -> np.ndarray:
    """A registered model's probabilities on held-out rows, through its pyfunc as served."""
    with _LOAD_LOCK:
        model = mlflow.pyfunc.load_model(model_uri)
    proba = model.predict(features)
    return np.asarray(proba, dtype=float).reshape(-1)


def score_auc(model_uri: str, features: pd.DataFrame, labels: np.ndarray) -> float:
    return float(gate_core.auc(labels, predict_scores(model_uri, features))[0])


def challenge_champion(
    client: MlflowClient,
    candidate: RegisteredVersion,
    features: pd.DataFrame,
    labels: np.ndarray,
    margin: float = 0.0,
    config: GateConfig | None = None,
    held_out: str | None = None,
) -> GateDecision:
    """Score candidate and champion on the same held-out rows and run the gate."""
    config = (config or GateConfig()).model_copy(update={"margin": margin})
    challenger = predict_scores(candidate.uri, features)
    champion = current_champion(client, candidate.name)
    if champion is None or champion.version == candidate.version:
        return gate_core.decide(
            labels, challenger, None, config, candidate.version, held_out=held_out
        )
    try:
        champion_scores = predict_scores(champion.uri, features)
    except MlflowException as err:  # e.g. the input schema changed since the champion
        challenger_auc = float(gate_core.auc(labels, challenger)[0])
        return gate_core.incomparable(
            challenger_auc, champion.version, str(err), config, candidate.version
        )
    return gate_core.decide(
        labels,
        challenger,
        champion_scores,
        config,
        candidate.version,
        champion.version,
        held_out,
    )


def apply_decision(
    client: MlflowClient,
    candidate: RegisteredVersion,
    decision: GateDecision,
    lock: AbstractContextManager | None = None,
    actor: str = "mlsys",
) -> Stage:
    """Record the gate's decision and, if it passed, walk the version through Testing and
    Staging to Production with an automatic approval (a trusted pipeline). Returns the stage
    the version ends in."""
    lock = lock or nullcontext()
    name, version = candidate.name, candidate.version
    lifecycle.record_gate(client, name, version, decision, actor)
    stage = lifecycle.stage_of(client, name, version)
    if not decision.promote or stage == Stage.PRODUCTION:
        return stage
    approval = Approval(approver=actor, approve=True, reason="auto-approved", auto=True)
    path = [Stage.DEVELOPMENT, Stage.TESTING, Stage.STAGING, Stage.PRODUCTION]
    if stage not in path:
        raise lifecycle.IllegalTransition(f"{name} v{version} is {stage}: it cannot be promoted")
    for step in path[path.index(stage) + 1 :]:
        lifecycle.transition(
            client,
            name,
            version,
            step,
            actor,
            decision.reason,
            lock,
            gate=decision if step != Stage.TESTING else None,
            approval=approval if step == Stage.PRODUCTION else None,
        )
    return Stage.PRODUCTION
