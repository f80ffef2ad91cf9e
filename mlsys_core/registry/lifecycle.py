"""The model lifecycle on MLflow aliases and tags, never the deprecated stage API.

Each version's stage is the version tag ``mlsys.lifecycle``; the newest version in each stage
also holds that stage's alias (``development``, ``testing``, ``staging``, ``production``), and
``champion`` always equals ``production`` (the drift check and ``mlflow models serve`` use
it). ``challenger`` marks the newest registration. Every stage change and gate decision is
appended to the registered model's audit history: one tag per event under a unique, sortable
key, never rewritten.

Read-check-move of an alias runs under the caller's ``lock`` (a ``RegistryLock`` or a Prefect
global concurrency limit), because MLflow cannot compare-and-set an alias.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field

from mlsys_core.registry.gate import GateDecision


class Stage(StrEnum):
    DEVELOPMENT = "development"
    TESTING = "testing"
    STAGING = "staging"
    PRODUCTION = "production"
    RETIRED = "retired"


# Every move a version may make. Production is reached only through Staging (which needs a
# passed gate) and Retired is final: a retired model comes back only as a new registration.
LEGAL: dict[Stage, frozenset[Stage]] = {
    Stage.DEVELOPMENT: frozenset({Stage.TESTING, Stage.RETIRED}),
    Stage.TESTING: frozenset({Stage.STAGING, Stage.DEVELOPMENT, Stage.RETIRED}),
    Stage.STAGING: frozenset({Stage.PRODUCTION, Stage.TESTING, Stage.RETIRED}),
    Stage.PRODUCTION: frozenset({Stage.STAGING, Stage.RETIRED}),
    Stage.RETIRED: frozenset(),
}
CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES: dict[Stage, tuple[str, ...]] = {
    Stage.DEVELOPMENT: ("development",),
    Stage.TESTING: ("testing",),
    Stage.STAGING: ("staging",),
    Stage.PRODUCTION: ("production", CHAMPION),
    Stage.RETIRED: (),
}

TAG_LIFECYCLE = "mlsys.lifecycle"
TAG_SEMVER = "mlsys.semver"
TAG_SEMVER_BUMP = "mlsys.semver_bump"
TAG_INPUT_SCHEMA = "mlsys.input_schema"
TAG_SPEC = "mlsys.spec_fingerprint"
TAG_RUN = "mlsys.run_id"
TAG_GATE = "mlsys.gate"
TAG_APPROVAL = "mlsys.approval"
AUDIT_PREFIX = "mlsys.audit."
# Run tags that describe the run, not the version: never copied onto a version.
_RUN_ONLY_TAGS = {"mlsys.stage", "mlsys.model_uri"}


class IllegalTransition(ValueError):
    """A stage move the lifecycle forbids, or whose preconditions do not hold."""


class StaleGate(IllegalTransition):
    """Production changed since the gate compared against it: run the gate again."""


class RegisteredVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str
    semver: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class Approval(BaseModel):
    """A person's (or a trusted pipeline's) decision on a move to Production."""

    model_config = ConfigDict(frozen=True)

    approver: str = Field(min_length=1)
    approve: bool
    reason: str = ""
    auto: bool = False
    at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())


class AuditEvent(BaseModel):
    """One entry of a registered model's append-only history."""

    model_config = ConfigDict(frozen=True)

    at: str
    actor: str
    action: Literal["register", "gate", "approval", "transition", "rollback"]
    version: str
    from_stage: Stage | None = None
    to_stage: Stage | None = None
    from_version: str | None = None  # who held the target stage before
    to_version: str | None = None
    reason: str = ""
    semver: str | None = None
    gate: GateDecision | None = None
    approval: Approval | None = None
    key: str = Field(default="", exclude=True)


class VersionFacts(BaseModel):
    """What decides a version's semantic version."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    input_schema: str
    spec_fingerprint: str
    semver: str | None = None


def _parse_semver(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in text.split("."))
    return major, minor, patch


def next_semver(earlier: Iterable[VersionFacts], current: VersionFacts) -> tuple[str, str]:
    """The semantic version of ``current`` after the ``earlier`` versions, and why.

    Major when the input schema or the spec (feature definitions, joins, label, split)
    differs from the newest version; patch when the same run is registered again; minor for
    any other retrain.
    """
    versioned = [f for f in earlier if f.semver]
    if not versioned:
        return "1.0.0", "first"
    newest = max(versioned, key=lambda f: _parse_semver(f.semver or ""))
    major, minor, patch = _parse_semver(newest.semver or "")
    if any(f.run_id == current.run_id for f in versioned):
        return f"{major}.{minor}.{patch + 1}", "patch: same run registered again"
    if (newest.input_schema, newest.spec_fingerprint) != (
        current.input_schema,
        current.spec_fingerprint,
    ):
        return f"{major + 1}.0.0", "major: input schema or feature definitions changed"
    return f"{major}.{minor + 1}.0", "minor: retrained"


def input_schema_hash(model_uri: str) -> str:
    """A hash of the model signature's inputs (column names, types, required)."""
    signature = mlflow.models.get_model_info(model_uri).signature
    text = signature.inputs.to_json() if signature and signature.inputs else "none"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _not_found(err: MlflowException) -> bool:
    return err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if _not_found(err):
            return None
        raise


def version_in(client: MlflowClient, name: str, stage: Stage) -> str | None:
    """The version holding ``stage``'s alias (the newest to enter it), if any."""
    aliases = ALIASES[stage]
    return alias_version(client, name, aliases[0]) if aliases else None


def stage_of(client: MlflowClient, name: str, version: str) -> Stage:
    """A version's stage; one registered before the lifecycle existed counts as Development."""
    try:
        tags = client.get_model_version(name, version).tags
    except MlflowException as err:
        if _not_found(err):
            raise LookupError(f"no model version {name} v{version}") from err
        raise
    return Stage(tags.get(TAG_LIFECYCLE, Stage.DEVELOPMENT))


def _append_audit(client: MlflowClient, name: str, event: AuditEvent) -> AuditEvent:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"{AUDIT_PREFIX}{stamp}.{uuid.uuid4().hex[:8]}"  # never an existing key
    client.set_registered_model_tag(name, key, event.model_dump_json(exclude_none=True))
    return event.model_copy(update={"key": key})


def history(client: MlflowClient, name: str) -> list[AuditEvent]:
    """The registered model's audit events, oldest first."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as err:
        if _not_found(err):
            raise LookupError(f"no registered model {name!r}") from err
        raise
    return [
        AuditEvent.model_validate(json.loads(tags[key])).model_copy(update={"key": key})
        for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))
    ]


def _event(actor: str, action: str, version: str, **fields: object) -> AuditEvent:
    at = datetime.now(UTC).isoformat()
    return AuditEvent(at=at, actor=actor, action=action, version=version, **fields)


def _move_alias_if_newer(client: MlflowClient, name: str, alias: str, version: str) -> None:
    held = alias_version(client, name, alias)
    if held is None or int(held) < int(version):
        client.set_registered_model_alias(name, alias, version)


def register(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    actor: str,
    lock: AbstractContextManager,
    extra_tags: dict[str, str] | None = None,
) -> RegisteredVersion:
    """Register ``model_uri`` as a new Development version with lineage and a semver.

    The run's ``mlsys.*`` tags (data snapshots, feature set, spec, code version, tuning
    study) are copied onto the version. Registration itself runs unlocked (the store numbers
    concurrent versions); the semver is assigned under ``lock`` so two versions never share
    one.
    """
    run = client.get_run(run_id)
    tags = {
        k: v for k, v in run.data.tags.items() if k.startswith("mlsys.") and k not in _RUN_ONLY_TAGS
    }
    facts = VersionFacts(
        run_id=run_id,
        input_schema=input_schema_hash(model_uri),
        spec_fingerprint=tags.get(TAG_SPEC, ""),
    )
    tags |= {
        TAG_RUN: run_id,
        TAG_INPUT_SCHEMA: facts.input_schema,
        TAG_LIFECYCLE: Stage.DEVELOPMENT.value,
        **(extra_tags or {}),
    }
    mv = mlflow.register_model(model_uri, name, tags=tags)
    version = str(mv.version)
    with lock:
        earlier = [
            VersionFacts(
                run_id=v.tags.get(TAG_RUN, v.run_id or ""),
                input_schema=v.tags.get(TAG_INPUT_SCHEMA, ""),
                spec_fingerprint=v.tags.get(TAG_SPEC, ""),
                semver=v.tags.get(TAG_SEMVER),
            )
            for v in client.search_model_versions(f"name = '{name}'")
            if str(v.version) != version
        ]
        semver, bump = next_semver(earlier, facts)
        client.set_model_version_tag(name, version, TAG_SEMVER, semver)
        client.set_model_version_tag(name, version, TAG_SEMVER_BUMP, bump)
        for alias in (CHALLENGER, *ALIASES[Stage.DEVELOPMENT]):
            _move_alias_if_newer(client, name, alias, version)
        _append_audit(
            client,
            name,
            _event(
                actor,
                "register",
                version,
                to_stage=Stage.DEVELOPMENT,
                to_version=version,
                semver=semver,
                reason=f"registered from run {run_id} ({bump})",
            ),
        )
    return RegisteredVersion(name=name, version=version, run_id=run_id, semver=semver)


def recorded_gate(client: MlflowClient, name: str, version: str) -> GateDecision | None:
    tag = client.get_model_version(name, version).tags.get(TAG_GATE)
    return GateDecision.model_validate_json(tag) if tag else None


def record_gate(
    client: MlflowClient, name: str, version: str, decision: GateDecision, actor: str
) -> AuditEvent:
    """Keep the gate's decision on the version and in the history, passed or not."""
    client.set_model_version_tag(name, version, TAG_GATE, decision.model_dump_json())
    return _append_audit(
        client,
        name,
        _event(actor, "gate", version, gate=decision, reason=decision.reason),
    )


def record_approval(
    client: MlflowClient, name: str, version: str, approval: Approval
) -> AuditEvent:
    """Keep an approver's answer, also a rejection, before anything moves."""
    client.set_model_version_tag(name, version, TAG_APPROVAL, approval.model_dump_json())
    verdict = "approved" if approval.approve else "rejected"
    return _append_audit(
        client,
        name,
        _event(
            approval.approver,
            "approval",
            version,
            approval=approval,
            to_stage=Stage.PRODUCTION,
            reason=f"{verdict}: {approval.reason}",
        ),
    )


def check_transition(
    client: MlflowClient,
    name: str,
    version: str,
    to_stage: Stage,
    gate: GateDecision | None = None,
    legal_only: bool = False,
) -> Stage:
    """Raise ``IllegalTransition`` unless ``version`` may move to ``to_stage`` now; returns
    its current stage. Flows call it before running a gate or waiting for a person
    (``legal_only``: the move itself, not yet its gate)."""
    current = stage_of(client, name, version)
    if to_stage not in LEGAL[current]:
        allowed = ", ".join(sorted(LEGAL[current])) or "nothing (retired is final)"
        raise IllegalTransition(
            f"{name} v{version}: {current} -> {to_stage} is not allowed; from {current} "
            f"it may move to {allowed}"
        )
    if legal_only:
        return current
    if to_stage in (Stage.STAGING, Stage.PRODUCTION):
        gate = gate or recorded_gate(client, name, version)
        if gate is None or not gate.promote:
            raise IllegalTransition(
                f"{name} v{version}: {to_stage} needs a passed promotion gate, "
                f"{'it failed: ' + gate.reason if gate else 'none is recorded'}"
            )
        if gate.challenger_version not in (None, version):
            raise IllegalTransition(
                f"{name} v{version}: the gate decision is for v{gate.challenger_version}"
            )
    if to_stage == Stage.PRODUCTION:
        production = version_in(client, name, Stage.PRODUCTION)
        assert gate is not None  # checked above
        if gate.champion_version != production:
            raise StaleGate(
                f"{name} v{version}: the gate compared against "
                f"{'v' + gate.champion_version if gate.champion_version else 'no champion'}, "
                f"but production is now "
                f"{'v' + production if production else 'empty'}; run the gate again"
            )
    return current


def _set_stage(client: MlflowClient, name: str, version: str, stage: Stage) -> None:
    client.set_model_version_tag(name, version, TAG_LIFECYCLE, stage.value)


def _leave(client: MlflowClient, name: str, version: str, stage: Stage) -> None:
    for alias in ALIASES[stage]:
        if alias_version(client, name, alias) == version:
            client.delete_registered_model_alias(name, alias)


def transition(
    client: MlflowClient,
    name: str,
    version: str,
    to_stage: Stage,
    actor: str,
    reason: str,
    lock: AbstractContextManager,
    gate: GateDecision | None = None,
    approval: Approval | None = None,
) -> AuditEvent:
    """Move ``version`` to ``to_stage`` if the lifecycle allows it, and record who and why.

    Staging needs a passed gate for this version. Production needs that gate to have
    compared against the version now in production (else ``StaleGate``) and an approval;
    the version it replaces goes back to Staging, where a rollback can find it.
    """
    to_stage = Stage(to_stage)
    if to_stage == Stage.PRODUCTION and (approval is None or not approval.approve):
        raise IllegalTransition(f"{name} v{version}: production needs an approval")
    with lock:
        current = check_transition(client, name, version, to_stage, gate)
        if gate is not None:
            client.set_model_version_tag(name, version, TAG_GATE, gate.model_dump_json())
        if approval is not None:
            client.set_model_version_tag(name, version, TAG_APPROVAL, approval.model_dump_json())
        gate = gate or recorded_gate(client, name, version)
        replaced = version_in(client, name, to_stage)
        _leave(client, name, version, current)
        _set_stage(client, name, version, to_stage)
        for alias in ALIASES[to_stage]:
            client.set_registered_model_alias(name, alias, version)
        if to_stage == Stage.PRODUCTION and replaced not in (None, version):
            _set_stage(client, name, replaced, Stage.STAGING)
        return _append_audit(
            client,
            name,
            _event(
                actor,
                "transition",
                version,
                from_stage=current,
                to_stage=to_stage,
                from_version=replaced,
                to_version=version,
                reason=reason,
                gate=gate if to_stage in (Stage.STAGING, Stage.PRODUCTION) else None,
                approval=approval,
            ),
        )


def production_stack(events: Iterable[AuditEvent]) -> list[str]:
    """Versions that served in production, oldest first, minus those rolled back or moved
    out: the last is the current one, the one before it is where a rollback goes."""
    stack: list[str] = []
    for e in events:
        if e.action == "transition" and e.to_stage == Stage.PRODUCTION:
            stack.append(e.version)
        elif e.action == "transition" and e.from_stage == Stage.PRODUCTION:
            stack = [v for v in stack if v != e.version]
        elif e.action == "rollback" and stack:
            stack.pop()
    return stack


def rollback(
    client: MlflowClient, name: str, actor: str, reason: str, lock: AbstractContextManager
) -> AuditEvent:
    """Put the previous production version back; the current one is retired."""
    with lock:
        current = version_in(client, name, Stage.PRODUCTION)
        if current is None:
            raise IllegalTransition(f"{name}: nothing is in production to roll back")
        stack = production_stack(history(client, name))
        if not stack or stack[-1] != current:
            raise IllegalTransition(
                f"{name}: production v{current} is not the last promotion in the audit "
                "history; the aliases were moved outside the lifecycle"
            )
        if len(stack) < 2:
            raise IllegalTransition(f"{name}: v{current} is the first production version")
        target = stack[-2]
        if (target_stage := stage_of(client, name, target)) == Stage.RETIRED:
            raise IllegalTransition(f"{name}: the previous production v{target} is retired")
        _leave(client, name, target, target_stage)
        _set_stage(client, name, current, Stage.RETIRED)
        _set_stage(client, name, target, Stage.PRODUCTION)
        for alias in ALIASES[Stage.PRODUCTION]:
            client.set_registered_model_alias(name, alias, target)
        return _append_audit(
            client,
            name,
            _event(
                actor,
                "rollback",
                target,
                from_stage=Stage.PRODUCTION,
                to_stage=Stage.PRODUCTION,
                from_version=current,
                to_version=target,
                reason=reason,
            ),
        )
