"""Registry tasks: register, smoke test, gate, move stages, roll back, note who served a model.

Every change of stages holds the model's ``RegistryLock``, which lives in the MLflow store:
the same lock the ``mlsys`` CLI and plain Python take, so flows on any worker, commands and
notebooks exclude each other.
"""

from __future__ import annotations

from prefect.runtime import task_run

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.registry import lifecycle, lineage, promotion
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.lifecycle import Approval, AuditEvent, RegisteredVersion, Stage
from mlsys_core.registry.locking import RegistryLock
from mlsys_core.registry.promotion import ProductionMove
from mlsys_core.tracking import configure_mlflow
from mlsys_core.training.run import TrainedModel
from tasks.base import task


@task
def register_model(
    trained: TrainedModel, name: str, actor: str, settings: Settings
) -> RegisteredVersion:
    """Register the run's model as a Development version with lineage tags and a semver.
    A retry of this task run finishes its first attempt's version, never adds another."""
    client = configure_mlflow(settings.tracking)
    request_id = f"prefect-task-run:{task_run.id}" if task_run.id else None
    return promotion.register_version(
        client, name, trained, RegistryLock(client, name), actor, request_id=request_id
    )


@task
def smoke_test(candidate: RegisteredVersion, settings: Settings) -> float:
    """Load the version as serving would and score its held-out rows; the held-out AUC."""
    client = configure_mlflow(settings.tracking)
    return promotion.smoke_test(client, Lake(settings.lake_dir), candidate)


@task
def run_gate(
    candidate: RegisteredVersion, config: GateConfig, actor: str, settings: Settings
) -> GateDecision:
    """Score candidate and champion on the candidate's held-out rows; record the decision."""
    client = configure_mlflow(settings.tracking)
    return promotion.run_gate(client, Lake(settings.lake_dir), candidate, config, actor)


@task
def check_transition(
    name: str,
    version: str,
    to_stage: Stage,
    settings: Settings,
    legal_only: bool = False,
    allow_stale: bool = False,
) -> Stage:
    """Fail fast (before a gate or waiting for a person) if the move is not allowed now."""
    client = configure_mlflow(settings.tracking)
    return lifecycle.check_transition(
        client, name, version, to_stage, legal_only=legal_only, allow_stale=allow_stale
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
) -> AuditEvent:
    """Move a version to a stage under the registry lock, recording who and why."""
    client = configure_mlflow(settings.tracking)
    lock = RegistryLock(client, name)
    return lifecycle.transition(client, name, version, to_stage, actor, reason, lock, gate=gate)


@task
def enter_production(
    candidate: RegisteredVersion,
    approval: Approval,
    reason: str,
    config: GateConfig,
    settings: Settings,
) -> ProductionMove:
    """Move an approved version to Production (the gate runs again if it went stale)."""
    client = configure_mlflow(settings.tracking)
    lock = RegistryLock(client, candidate.name)
    return promotion.enter_production(
        client,
        Lake(settings.lake_dir),
        candidate,
        approval,
        approval.approver,
        reason,
        lock,
        config,
    )


@task
def record_approval(name: str, version: str, approval: Approval, settings: Settings) -> None:
    lifecycle.record_approval(configure_mlflow(settings.tracking), name, version, approval)


@task
def rollback_model(name: str, actor: str, reason: str, settings: Settings) -> AuditEvent:
    """Put the previous production version back under the registry lock."""
    client = configure_mlflow(settings.tracking)
    return lifecycle.rollback(client, name, actor, reason, RegistryLock(client, name))


@task
def record_served_by(name: str, version: str, deployment: str, settings: Settings) -> None:
    """Note on the version that ``deployment`` used it (for its lineage)."""
    lineage.record_served_by(configure_mlflow(settings.tracking), name, version, deployment)


@task
def resolve_version(name: str, version: str | None, from_alias: str, settings: Settings) -> str:
    """An explicit version, or the one holding ``from_alias``."""
    if version:
        return version
    found = lifecycle.alias_version(configure_mlflow(settings.tracking), name, from_alias)
    if found is None:
        raise LookupError(f"no version of {name} holds @{from_alias}; pass a version")
    return found
