"""Stage 5: register the model and take it as far through the lifecycle as the evidence goes.

Development (registered) -> Testing (loads and scores its held-out rows) -> Staging (the
gate: better than the champion by the margin, and significantly) -> Production (approved:
automatically when ``auto_approve``, else by a person in the Prefect UI).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from flows.embedded import flow
from flows.promote import promote
from mlsys_core.config import Settings
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.lifecycle import Approval, RegisteredVersion, Stage
from mlsys_core.registry.promotion import smoke_reason
from mlsys_core.training.run import TrainedModel
from tasks.metrics import metered
from tasks.registry import move_stage, register_model, run_gate, smoke_test
from tasks.training import latest_trained


class RegistrationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: RegisteredVersion
    decision: GateDecision
    stage: Stage
    approval: Approval | None = None


@flow(name="register", log_prints=True)
@metered()
def register(
    trained: TrainedModel | None = None,
    model_name: str | None = None,
    promotion_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
    auto_approve: bool = True,
    significance: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05,
    n_bootstrap: Annotated[int, Field(ge=100, le=100_000)] = 1000,
    actor: str = "ml-pipeline",
    approval_timeout_s: Annotated[int, Field(ge=1)] = 24 * 3600,
) -> RegistrationResult:
    """Register ``trained`` (default: the newest training run), test it, gate it against
    the champion on the same held-out rows, and promote it if it wins and is approved.

    The same walk as ``promotion.walk`` (which the CLI and the tests use), step by step as
    tasks, with the move to Production in the ``promote`` flow, where a person can approve.
    """
    settings = Settings()
    trained = trained or latest_trained(settings)
    # A model trained on a dataset's feature set registers under that dataset's model name.
    name = model_name or settings.model_name or trained.feature_set.model_name
    version = register_model(trained, name, actor, settings)
    auc = smoke_test(version, settings)
    move_stage(name, version.version, Stage.TESTING, actor, smoke_reason(auc), settings)
    config = GateConfig(margin=promotion_margin, alpha=significance, n_bootstrap=n_bootstrap)
    decision = run_gate(version, config, actor, settings)
    if not decision.promote:
        print(f"{name} v{version.version} ({version.semver}) stays in testing: {decision.reason}")
        return RegistrationResult(version=version, decision=decision, stage=Stage.TESTING)
    move_stage(
        name, version.version, Stage.STAGING, actor, decision.reason, settings, gate=decision
    )
    outcome = promote(
        Stage.PRODUCTION,
        version.version,
        name,
        reason=decision.reason,
        actor=actor,
        auto_approve=auto_approve,
        promotion_margin=promotion_margin,
        significance=significance,
        n_bootstrap=n_bootstrap,
        approval_timeout_s=approval_timeout_s,
    )
    stage = Stage.PRODUCTION if outcome.moved else Stage.STAGING
    print(f"{name} v{version.version} ({version.semver}) is in {stage}: {outcome.reason}")
    return RegistrationResult(
        version=version,
        decision=outcome.gate or decision,  # a gate that went stale ran again
        stage=stage,
        approval=outcome.approval,
    )
