"""Human approval for real: a flow run pauses for the typed form, the test answers it
through the Prefect API, and the registry shows the outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from prefect.input.run_input import keyset_from_paused_state

from flows.promote import promote
from flows.register import register
from flows.rollback import rollback
from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.registry.gate import GateConfig
from mlsys_core.registry.invariants import check_registry
from mlsys_core.registry.lifecycle import IllegalTransition, Stage, alias_version, history
from mlsys_core.registry.promotion import auto_approval, walk
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import train_and_log

pytestmark = pytest.mark.slow


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = call()
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def paused_promote_run(version: str, timeout: float = 240) -> tuple[UUID, dict]:
    """Wait until a ``promote`` run for ``version`` is paused and has saved its form."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
            for run in runs:
                if run.parameters.get("version") not in (version, None):  # None: resolved
                    continue
                keyset = keyset_from_paused_state(run.state)
                try:
                    schema = json.loads(client.read_flow_run_input(run.id, keyset["schema"]))
                except Exception:  # the form is saved just after the pause
                    continue
                return run.id, schema
            time.sleep(0.5)
    raise TimeoutError(f"no paused promote run for v{version} after {timeout}s")


def test_production_waits_for_a_person_who_rejects_then_approves(
    settings: Settings, make_feature_set
) -> None:
    trained = train_and_log(
        make_feature_set(settings),
        TrainConfig(epochs=1),
        Lake(settings.lake_dir),
        settings.tracking,
    )
    client = tracking_client(settings.mlflow_uri)
    name = settings.model_name

    # The pipeline's register step pauses before production...
    thread, out = in_thread(lambda: register(trained=trained, auto_approve=False))
    run_id, form = paused_promote_run("1")
    assert {"approver", "approve", "reason"} <= set(form["properties"])
    assert alias_version(client, name, "staging") == "1"  # gated, waiting
    assert alias_version(client, name, "champion") is None
    # ... and a rejection keeps the version out of it.
    resume_flow_run(run_id, run_input={"approver": "bob", "approve": False, "reason": "hold"})
    thread.join(120)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result.stage == Stage.STAGING
    assert result.approval.approver == "bob" and not result.approval.approve
    assert alias_version(client, name, "champion") is None

    # Nobody answers in time: that is a rejection too.
    late = promote(Stage.PRODUCTION, auto_approve=False, approval_timeout_s=2, approval_poll_s=1)
    assert not late.moved and late.approval.approver == "nobody"
    assert alias_version(client, name, "champion") is None

    # The promote flow asks again; this time the answer is yes.
    thread, out = in_thread(
        lambda: promote(Stage.PRODUCTION, auto_approve=False, approval_poll_s=1)
    )
    run_id, _ = paused_promote_run("1")
    resume_flow_run(run_id, run_input={"approver": "alice", "approve": True, "reason": "ship"})
    thread.join(120)
    assert "error" not in out, out.get("error")
    assert out["result"].moved
    assert alias_version(client, name, "champion") == "1"
    assert alias_version(client, name, "production") == "1"

    events = history(client, name)
    approvals = [(e.actor, e.approval.approve, e.reason) for e in events if e.action == "approval"]
    assert approvals == [
        ("bob", False, "rejected: hold"),
        ("nobody", False, "rejected: no answer in 2s"),
        ("alice", True, "approved: ship"),
    ]
    (move,) = [e for e in events if e.to_stage == Stage.PRODUCTION and e.action == "transition"]
    assert move.actor == "alice" and move.gate.promote and move.approval.approver == "alice"

    # One production version so far: there is nothing to roll back to.
    with pytest.raises(IllegalTransition, match="first production version"):
        rollback(reason="try")


def test_promote_flow_refuses_an_illegal_move_before_asking_anyone(
    settings: Settings, make_feature_set
) -> None:
    trained = train_and_log(
        make_feature_set(settings),
        TrainConfig(epochs=1),
        Lake(settings.lake_dir),
        settings.tracking,
    )
    result = register(trained=trained)  # auto-approved: straight to production
    assert result.stage == Stage.PRODUCTION
    with pytest.raises(IllegalTransition, match="production -> testing is not allowed"):
        promote(Stage.TESTING, version=result.version.version)
    done = promote(Stage.RETIRED, version=result.version.version, reason="end of life")
    assert done.moved and done.event.from_stage == Stage.PRODUCTION
    client = tracking_client(settings.mlflow_uri)
    assert alias_version(client, settings.model_name, "champion") is None
    with pytest.raises(IllegalTransition, match="retired is final"):
        promote(Stage.PRODUCTION, version=result.version.version, auto_approve=True)


def test_the_register_flow_and_the_plain_walk_take_the_same_steps(
    settings: Settings, make_feature_set
) -> None:
    """One lifecycle walk: the flow's tasks and ``promotion.walk`` leave the same audit
    trail, the same stages and the same aliases for the same trained model."""
    trained = train_and_log(
        make_feature_set(settings),
        TrainConfig(epochs=1),
        Lake(settings.lake_dir),
        settings.tracking,
    )
    client = tracking_client(settings.mlflow_uri)
    config = GateConfig(n_bootstrap=200)
    flowed = register(trained=trained, model_name="by-flow", n_bootstrap=200, actor="ci")
    walked = walk(
        client,
        Lake(settings.lake_dir),
        trained,
        "by-walk",
        "ci",
        None,
        config,
        auto_approval("ci"),
    )
    assert flowed.stage == walked.stage == Stage.PRODUCTION

    def trail(name: str) -> list[tuple]:
        return [(e.action, e.version, e.from_stage, e.to_stage) for e in history(client, name)]

    assert trail("by-flow") == trail("by-walk")
    assert [e.action for e in history(client, "by-flow")] == [
        "register",
        "transition",  # testing, after the smoke test
        "gate",
        "transition",  # staging
        "approval",
        "transition",  # production
    ]
    for name in ("by-flow", "by-walk"):
        assert check_registry(client, name).violations == []
        assert alias_version(client, name, "champion") == "1"
