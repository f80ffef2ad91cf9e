"""The lifecycle walk of a trained model: register, smoke test, gate, promote.

Each step is one function here, and every caller walks with them: the ``register`` and
``promote`` flows run them as tasks, ``mlsys registry register`` and the tests through
``walk``, which is the same sequence without an orchestrator:

    register (Development) -> smoke test -> Testing -> gate -> Staging -> approval -> Production

Every model is read through the ``client`` passed in (``tracking.download_model``), never
through the process's MLflow registry, which may point at another store.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from mlsys_core.data.lake import Lake
from mlsys_core.features.store import UnscorableFeatureSetError
from mlsys_core.registry import gate as gate_core
from mlsys_core.registry import lifecycle
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.lifecycle import (
    CHAMPION,
    Approval,
    AuditEvent,
    RegisteredVersion,
    Stage,
    StaleGate,
)
from mlsys_core.registry.lineage import trained_feature_set, version_spec
from mlsys_core.registry.locking import RegistryLock
from mlsys_core.tracking import download_model
from mlsys_core.training.run import HeldOut, TrainedModel, held_out

# MLflow loads a models-from-code model through a module global (``set_model``), so two
# threads loading at once can swap models; loading is serialized, predicting is not.
_LOAD_LOCK = threading.Lock()
# How often a move to Production re-runs a gate that a concurrent promotion made stale.
STALE_RETRIES = 3


def register_version(
    client: MlflowClient,
    name: str,
    trained: TrainedModel,
    lock: AbstractContextManager | None = None,
    actor: str = "mlsys",
    request_id: str | None = None,
) -> RegisteredVersion:
    """Register the run's model as a Development version with lineage tags and a semver,
    under ``lock`` (default: the model's ``RegistryLock`` in ``client``'s store);
    ``request_id``: a retry with the same one finishes the first attempt's version."""
    return lifecycle.register(
        client,
        name,
        trained.model_uri,
        trained.run_id,
        actor,
        lock or RegistryLock(client, name),
        extra_tags={"mlsys.test_auc": f"{trained.metrics['test_auc']:.6f}"},
        request_id=request_id,
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


def predict_scores(client: MlflowClient, model_uri: str, features: pd.DataFrame) -> np.ndarray:
    """A registered model's probabilities on held-out rows, through its pyfunc as served,
    loaded from ``client``'s stores."""
    with tempfile.TemporaryDirectory() as tmp:  # the model's files live while it predicts
        with _LOAD_LOCK:
            model = mlflow.pyfunc.load_model(download_model(client, model_uri, tmp))
        proba = model.predict(features)
    return np.asarray(proba, dtype=float).reshape(-1)


def held_out_rows(client: MlflowClient, lake: Lake, candidate: RegisteredVersion) -> HeldOut:
    """The test split of the feature set the version was trained on."""
    return held_out(trained_feature_set(client, lake, candidate.name, candidate.version), lake)


def smoke_test(client: MlflowClient, lake: Lake, candidate: RegisteredVersion) -> float:
    """Load the registered version as serving would and score its own held-out rows:
    probabilities in [0, 1] for every row. Returns the held-out AUC."""
    held = held_out_rows(client, lake, candidate)
    scores, labels = predict_scores(client, candidate.uri, held.inputs()), held.labels
    if scores.shape != labels.shape or not np.all((scores >= 0) & (scores <= 1)):
        raise ValueError(f"{candidate.uri} returned {scores.shape} scores outside [0, 1]")
    return float(gate_core.auc(labels, scores)[0])


def challenge_champion(
    client: MlflowClient,
    candidate: RegisteredVersion,
    features: pd.DataFrame,
    labels: np.ndarray,
    config: GateConfig | None = None,
    held_out: str | None = None,
    champion_inputs: Callable[[str], pd.DataFrame] | None = None,
) -> GateDecision:
    """Score candidate and champion on the same held-out rows and run the gate; each takes
    them as its own inputs when ``champion_inputs`` gives the champion version's."""
    config = config or GateConfig()
    challenger = predict_scores(client, candidate.uri, features)
    champion = current_champion(client, candidate.name)
    if champion is None or champion.version == candidate.version:
        return gate_core.decide(
            labels, challenger, None, config, candidate.version, held_out=held_out
        )
    try:
        rows = features if champion_inputs is None else champion_inputs(champion.version)
        champion_scores = predict_scores(client, champion.uri, rows)
    except (MlflowException, UnscorableFeatureSetError) as err:
        # The input schema changed since the champion, or these rows lack an input it was
        # trained on (its scores would be of imputed values): no fair comparison.
        challenger_auc = float(gate_core.auc(labels, challenger)[0])
        why = err.message if isinstance(err, MlflowException) else err.reason
        return gate_core.incomparable(
            challenger_auc, champion.version, why, config, candidate.version
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


def run_gate(
    client: MlflowClient,
    lake: Lake,
    candidate: RegisteredVersion,
    config: GateConfig,
    actor: str,
) -> GateDecision:
    """Score candidate and champion on the candidate's held-out rows; record the decision."""
    held = held_out_rows(client, lake, candidate)

    def champion_inputs(version: str) -> pd.DataFrame:
        try:
            trained = version_spec(client, lake, candidate.name, version)
        except LookupError:  # its feature set left the lake: the rows' own inputs, as before
            trained = None
        return held.inputs(trained, f"champion v{version}")

    decision = challenge_champion(
        client, candidate, held.inputs(), held.labels, config, held.where, champion_inputs
    )
    lifecycle.record_gate(client, candidate.name, candidate.version, decision, actor)
    return decision


class ProductionMove(BaseModel):
    """How a move to Production ended: the event if it moved, else the refusing gate."""

    model_config = ConfigDict(frozen=True)

    moved: bool
    gate: GateDecision | None = None
    event: AuditEvent | None = None


def enter_production(
    client: MlflowClient,
    lake: Lake,
    candidate: RegisteredVersion,
    approval: Approval,
    actor: str,
    reason: str,
    lock: AbstractContextManager,
    config: GateConfig,
) -> ProductionMove:
    """Move an approved Staging version to Production. When a concurrent promotion made its
    gate stale, the gate runs again against the new champion: the version moves only if it
    still wins, else it stays in Staging with the refusal recorded."""
    gate = None
    for _ in range(STALE_RETRIES):
        try:
            event = lifecycle.transition(
                client,
                candidate.name,
                candidate.version,
                Stage.PRODUCTION,
                actor,
                reason,
                lock,
                gate=gate,
                approval=approval,
            )
            return ProductionMove(moved=True, gate=event.gate, event=event)
        except StaleGate:
            gate = run_gate(client, lake, candidate, config, actor)
            if not gate.promote:
                return ProductionMove(moved=False, gate=gate)
    raise StaleGate(
        f"{candidate.name} v{candidate.version}: production changed during each of "
        f"{STALE_RETRIES} tries; run the promote flow again"
    )


def auto_approval(actor: str) -> Approval:
    """The approval of a trusted pipeline (CI, the demo): recorded as automatic."""
    return Approval(approver=actor, approve=True, reason="auto_approve", auto=True)


def smoke_reason(auc: float) -> str:
    return f"smoke test: held-out AUC {auc:.4f}"


class WalkResult(BaseModel):
    """Where a registration ended, and the evidence that put it there."""

    model_config = ConfigDict(frozen=True)

    version: RegisteredVersion
    smoke_auc: float
    decision: GateDecision
    stage: Stage
    approval: Approval | None = None


def walk(
    client: MlflowClient,
    lake: Lake,
    trained: TrainedModel,
    name: str,
    actor: str,
    lock: AbstractContextManager | None,
    config: GateConfig,
    approval: Approval | None = None,
    before_production: Callable[[str], object] | None = None,
) -> WalkResult:
    """Register ``trained`` and take it as far as the evidence goes: Testing if it loads
    and scores, Staging if the gate passes, Production if ``approval`` approves (none: it
    waits in Staging for ``promote``). ``lock``: default the model's ``RegistryLock``.
    ``before_production(version)`` runs just before the move to Production, as the promote
    flow fills the online store there (``serving.lineage.materialize_for_version``; the
    registry does not import serving, which reads the registry)."""
    lock = lock or RegistryLock(client, name)
    version = register_version(client, name, trained, lock, actor)
    auc = smoke_test(client, lake, version)
    lifecycle.transition(
        client, name, version.version, Stage.TESTING, actor, smoke_reason(auc), lock
    )
    decision = run_gate(client, lake, version, config, actor)
    result = WalkResult(version=version, smoke_auc=auc, decision=decision, stage=Stage.TESTING)
    if not decision.promote:
        return result
    lifecycle.transition(
        client, name, version.version, Stage.STAGING, actor, decision.reason, lock, gate=decision
    )
    result = result.model_copy(update={"stage": Stage.STAGING, "approval": approval})
    if approval is None:
        return result
    lifecycle.record_approval(client, name, version.version, approval)
    if not approval.approve:
        return result
    if before_production is not None:
        before_production(version.version)
    moved = enter_production(
        client, lake, version, approval, approval.approver, decision.reason, lock, config
    )
    if not moved.moved:
        return result.model_copy(update={"decision": moved.gate})
    return result.model_copy(update={"stage": Stage.PRODUCTION, "decision": moved.gate})
