"""Move a registered model version to another lifecycle stage; Production waits for a person.

Testing runs a smoke test first, Staging runs the promotion gate, and Production pauses the
flow run until someone approves or rejects it in the Prefect UI (a typed form: approver,
approve, reason), unless ``auto_approve`` is set for CI and trusted pipelines.
"""

from __future__ import annotations

from typing import Annotated

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field

from flows.embedded import flow
from mlsys_core.config import Settings
from mlsys_core.datasets import resolve_model_name
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.lifecycle import Approval, AuditEvent, RegisteredVersion, Stage
from mlsys_core.registry.promotion import auto_approval, smoke_reason
from tasks.features import prepare_online_store
from tasks.metrics import metered
from tasks.registry import (
    check_transition,
    enter_production,
    move_stage,
    record_approval,
    resolve_version,
    run_gate,
    smoke_test,
)

# Where a version to move usually waits: the newest one in the stage before.
DEFAULT_SOURCE = {
    Stage.TESTING: "development",
    Stage.STAGING: "testing",
    Stage.PRODUCTION: "staging",
}


class ApprovalInput(RunInput):
    """Approve or reject moving this model version to Production."""

    approver: str = Field(min_length=1, description="Who decides (your name or id).")
    approve: bool = Field(default=False, description="Tick to approve; leave to reject.")
    reason: str = Field(min_length=1, description="Why: recorded in the audit history.")


class PromotionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    to_stage: Stage
    moved: bool
    reason: str
    gate: GateDecision | None = None
    approval: Approval | None = None
    event: AuditEvent | None = None


def ask_for_approval(name: str, version: str, reason: str, timeout_s: int, poll_s: int) -> Approval:
    """Pause this flow run until a person answers the form; no answer in time rejects."""
    form = ApprovalInput.with_initial_data(
        description=(
            f"Promote **{name} v{version}** to Production?\n\n{reason}\n\n"
            f"Check `mlsys lineage models:/{name}/{version}` for its data, gate and history."
        )
    )
    try:
        answer = pause_flow_run(
            wait_for_input=form,
            timeout=timeout_s,
            poll_interval=poll_s,
            key=f"approve-{name}-{version}",
        )
    except FlowPauseTimeout:
        return Approval(approver="nobody", approve=False, reason=f"no answer in {timeout_s}s")
    return Approval(approver=answer.approver, approve=answer.approve, reason=answer.reason)


def _moved(name: str, event: AuditEvent | None, **decision: object) -> PromotionOutcome:
    assert event is not None and event.to_stage is not None
    print(f"{name} v{event.version}: {event.from_stage} -> {event.to_stage} by {event.actor}")
    return PromotionOutcome(
        name=name,
        version=event.version,
        to_stage=event.to_stage,
        moved=True,
        reason=event.reason,
        event=event,
        **decision,
    )


def _not_moved(
    name: str, version: str, to_stage: Stage, reason: str, **decision: object
) -> PromotionOutcome:
    return PromotionOutcome(
        name=name, version=version, to_stage=to_stage, moved=False, reason=reason, **decision
    )


@flow(name="promote", log_prints=True)
@metered()
def promote(
    to_stage: Stage = Stage.PRODUCTION,
    version: str | None = None,
    model_name: str | None = None,
    reason: str = "",
    actor: str = "prefect",
    auto_approve: bool = False,
    promotion_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
    significance: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05,
    n_bootstrap: Annotated[int, Field(ge=100, le=100_000)] = 1000,
    approval_timeout_s: Annotated[int, Field(ge=1)] = 24 * 3600,
    approval_poll_s: Annotated[int, Field(ge=1, le=60)] = 5,
) -> PromotionOutcome:
    """Move ``version`` (default: the newest in the stage before ``to_stage``) of the model
    to ``to_stage``, if the lifecycle allows it and its check passes."""
    settings = Settings()
    name = resolve_model_name(model_name or settings.model_name, settings.dataset)
    version = resolve_version(name, version, DEFAULT_SOURCE.get(to_stage, ""), settings)
    candidate = RegisteredVersion(name=name, version=version, run_id="")
    config = GateConfig(margin=promotion_margin, alpha=significance, n_bootstrap=n_bootstrap)
    gate = None
    if to_stage == Stage.TESTING:
        check_transition(name, version, to_stage, settings, legal_only=True)
        reason = reason or smoke_reason(smoke_test(candidate, settings))
    elif to_stage == Stage.STAGING:
        check_transition(name, version, Stage.STAGING, settings, legal_only=True)
        gate = run_gate(candidate, config, actor, settings)
        if not gate.promote:
            print(f"{name} v{version} stays out of staging: {gate.reason}")
            return _not_moved(name, version, to_stage, gate.reason, gate=gate)
        reason = reason or gate.reason
    elif to_stage == Stage.PRODUCTION:
        # A gate that a newer champion made stale runs again in enter_production.
        check_transition(name, version, Stage.PRODUCTION, settings, allow_stale=True)
        if auto_approve:
            approval = auto_approval(actor)
        else:
            approval = ask_for_approval(name, version, reason, approval_timeout_s, approval_poll_s)
        record_approval(name, version, approval, settings)
        if not approval.approve:
            print(f"{name} v{version} not promoted: rejected by {approval.approver}")
            return _not_moved(name, version, to_stage, approval.reason, approval=approval)
        prepare_online_store(name, version, to_stage, settings)  # a champion sees its features
        move = enter_production(candidate, approval, reason or approval.reason, config, settings)
        if not move.moved:
            assert move.gate is not None
            print(f"{name} v{version} stays in staging: {move.gate.reason}")
            return _not_moved(name, version, to_stage, move.gate.reason, gate=move.gate)
        return _moved(name, move.event, gate=move.gate, approval=approval)
    event = move_stage(name, version, to_stage, actor, reason or "manual", settings, gate=gate)
    return _moved(name, event, gate=gate)
