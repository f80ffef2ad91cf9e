"""The model lifecycle on MLflow aliases and tags, never the deprecated stage API.

Each version's stage is the version tag ``mlsys.lifecycle``; the newest version (the highest
number) in each stage also holds that stage's alias (``development``, ``testing``,
``staging``, ``production``), and ``champion`` always equals ``production`` (the drift check,
serving and ``mlflow models serve`` use it). ``challenger`` marks the newest registration.
Every registration, stage change, gate decision and approval is appended to the registered
model's audit history: one tag per event under a unique, sortable key, never rewritten.

Every change of stages runs under the model's ``RegistryLock`` (MLflow cannot compare-and-set
an alias) and in one order: read the whole state, check, append the audit event, set the
stage tags, then derive every alias from the tags. The history is the log the rest follows
from, so a change cut short anywhere is visible to ``check_registry`` and mended by
``repair`` (both in ``invariants``). A version becomes champion in one place only:
``_become_champion``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME
from pydantic import BaseModel, ConfigDict, Field

from mlsys_core.crashpoints import crash_point
from mlsys_core.registry.gate import GateDecision
from mlsys_core.tracking import download_model, logged_model_id, model_source


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
TAG_REQUEST = "mlsys.request_id"  # a registration's idempotency key: a retry finds it
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
    action: Literal["register", "gate", "approval", "transition", "rollback", "repair"]
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


def parse_semver(text: str) -> tuple[int, int, int]:
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
    newest = max(versioned, key=lambda f: parse_semver(f.semver or ""))
    major, minor, patch = parse_semver(newest.semver or "")
    if any(f.run_id == current.run_id for f in versioned):
        return f"{major}.{minor}.{patch + 1}", "patch: same run registered again"
    if (newest.input_schema, newest.spec_fingerprint) != (
        current.input_schema,
        current.spec_fingerprint,
    ):
        return f"{major + 1}.0.0", "major: input schema or feature definitions changed"
    return f"{major}.{minor + 1}.0", "minor: retrained"


def input_schema_hash(client: MlflowClient, model_uri: str) -> str:
    """A hash of the model signature's inputs (column names, types, required)."""
    with tempfile.TemporaryDirectory() as tmp:
        signature = Model.load(download_model(client, model_uri, tmp, MLMODEL_FILE_NAME)).signature
    text = signature.inputs.to_json() if signature and signature.inputs else "none"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _create_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: Mapping[str, str]
) -> str:
    """``mlflow.register_model`` in ``client``'s registry (the fluent call uses the
    process's, which may be another store's)."""
    crash_point("registry.register")
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    model_id = logged_model_id(model_uri)
    source = model_uri
    if model_id is not None and not client.tracking_uri.startswith(("http://", "https://")):
        # A local (SQL) registry resolves ``models:/<id>`` with the process's default client
        # (MLflow's own TODO in SqlAlchemyStore.create_model_version): resolve it here.
        source = model_source(client, model_uri)
    mv = client.create_model_version(
        name, source, run_id=run_id, tags=dict(tags), model_id=model_id
    )
    return str(mv.version)


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
    """The version holding ``stage``'s alias (the newest in it), if any."""
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


# -- the state: one read of the registered model and its versions -------------------------------


class VersionState(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    tag: str | None  # the raw lifecycle tag: None when missing
    tags: dict[str, str]

    @property
    def stage(self) -> Stage:
        """The stage the lifecycle acts on: a missing (pre-lifecycle) tag is Development."""
        try:
            return Stage(self.tag or Stage.DEVELOPMENT)
        except ValueError:
            return Stage.DEVELOPMENT

    @property
    def semver(self) -> str | None:
        return self.tags.get(TAG_SEMVER)

    def facts(self) -> VersionFacts:
        return VersionFacts(
            run_id=self.tags.get(TAG_RUN, ""),
            input_schema=self.tags.get(TAG_INPUT_SCHEMA, ""),
            spec_fingerprint=self.tags.get(TAG_SPEC, ""),
            semver=self.semver,
        )


class RegistryState(BaseModel):
    """A registered model as the lifecycle sees it: versions, aliases, audit history."""

    model_config = ConfigDict(frozen=True)

    name: str
    versions: dict[str, VersionState]
    aliases: dict[str, str]
    history: list[AuditEvent]

    def stages(self) -> dict[str, Stage]:
        return {v: s.stage for v, s in self.versions.items()}

    def newest_in(self, stage: Stage) -> str | None:
        return newest(v for v, s in self.stages().items() if s == stage)

    def get(self, version: str) -> VersionState:
        try:
            return self.versions[str(version)]
        except KeyError:
            raise LookupError(f"no model version {self.name} v{version}") from None


def newest(versions: Iterable[str]) -> str | None:
    return max(versions, key=int, default=None)


def _all_versions(client: MlflowClient, name: str) -> list:  # MLflow ModelVersion objects
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def _events(name: str, tags: Mapping[str, str]) -> list[AuditEvent]:
    return [
        AuditEvent.model_validate(json.loads(tags[key])).model_copy(update={"key": key})
        for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))
    ]


def read_state(client: MlflowClient, name: str, missing_ok: bool = False) -> RegistryState:
    """Versions with their tags, the aliases and the history; ``missing_ok``: an unknown
    model reads as empty (its first registration)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if _not_found(err):
            if missing_ok:
                return RegistryState(name=name, versions={}, aliases={}, history=[])
            raise LookupError(f"no registered model {name!r}") from err
        raise
    versions = {
        str(v.version): VersionState(
            version=str(v.version), tag=v.tags.get(TAG_LIFECYCLE), tags=dict(v.tags)
        )
        for v in _all_versions(client, name)
    }
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    return RegistryState(
        name=name, versions=versions, aliases=aliases, history=_events(name, model.tags)
    )


def history(client: MlflowClient, name: str) -> list[AuditEvent]:
    """The registered model's audit events, oldest first."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as err:
        if _not_found(err):
            raise LookupError(f"no registered model {name!r}") from err
        raise
    return _events(name, tags)


# -- what the state implies: aliases from stages, stages from the history --------------------


MANAGED_ALIASES = (CHALLENGER, *(a for names in ALIASES.values() for a in names))


def expected_aliases(stages: Mapping[str, Stage]) -> dict[str, str]:
    """Each stage's aliases on the newest version in it; ``challenger`` on the newest
    registration."""
    wanted = {}
    for stage, names in ALIASES.items():
        held = newest(v for v, s in stages.items() if s == stage)
        if held is not None:
            wanted |= dict.fromkeys(names, held)
    if stages:
        wanted[CHALLENGER] = newest(stages) or ""
    return wanted


def replay(events: Iterable[AuditEvent]) -> dict[str, Stage]:
    """The stage of every version the history knows, by replaying its moves in order."""
    stages: dict[str, Stage] = {}
    for e in events:
        if e.action in ("register", "repair", "transition") and e.to_stage is not None:
            stages[e.version] = e.to_stage
            demoted = e.action == "transition" and e.to_stage == Stage.PRODUCTION
            if demoted and e.from_version not in (None, e.version):
                stages[e.from_version] = Stage.STAGING  # type: ignore[index]
        elif e.action == "rollback" and e.from_version and e.to_version:
            stages[e.from_version] = Stage.RETIRED
            stages[e.to_version] = Stage.PRODUCTION
    return stages


# -- writing: audit first, then tags, then aliases ----------------------------------------------


_STAMP = "%Y%m%dT%H%M%S.%fZ"


def _audit_key(after: list[AuditEvent]) -> str:
    """A unique key that sorts after every event in ``after``: under the lock, the history's
    order is the order of the changes even if the writers' clocks disagree."""
    stamp = datetime.now(UTC)
    if after:
        last = datetime.strptime(after[-1].key.removeprefix(AUDIT_PREFIX)[:23], _STAMP)
        stamp = max(stamp, last.replace(tzinfo=UTC) + timedelta(microseconds=1))
    return f"{AUDIT_PREFIX}{stamp.strftime(_STAMP)}.{uuid.uuid4().hex[:8]}"


def append_audit(
    client: MlflowClient, name: str, event: AuditEvent, after: list[AuditEvent] | None = None
) -> AuditEvent:
    key = _audit_key(after or [])
    crash_point("registry.audit")
    client.set_registered_model_tag(name, key, event.model_dump_json(exclude_none=True))
    return event.model_copy(update={"key": key})


def audit_event(actor: str, action: str, version: str, **fields: object) -> AuditEvent:
    at = datetime.now(UTC).isoformat()
    return AuditEvent(at=at, actor=actor, action=action, version=version, **fields)


def set_stage(client: MlflowClient, name: str, version: str, stage: Stage) -> None:
    crash_point("registry.stage_tag")
    client.set_model_version_tag(name, version, TAG_LIFECYCLE, stage.value)


def sync_aliases(
    client: MlflowClient, name: str, held: Mapping[str, str], stages: Mapping[str, Stage]
) -> None:
    """Move, set or delete the lifecycle's aliases so they match ``stages``; other aliases
    are left alone."""
    wanted = expected_aliases(stages)
    for alias in MANAGED_ALIASES:
        if alias in wanted and held.get(alias) != wanted[alias]:
            crash_point("registry.alias")  # readers see each alias before or after its move
            client.set_registered_model_alias(name, alias, wanted[alias])
        elif alias not in wanted and alias in held:
            crash_point("registry.alias")
            client.delete_registered_model_alias(name, alias)


def register(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    actor: str,
    lock: AbstractContextManager,
    extra_tags: dict[str, str] | None = None,
    request_id: str | None = None,
) -> RegisteredVersion:
    """Register ``model_uri`` as a new Development version with lineage and a semver.

    The run's ``mlsys.*`` tags (data snapshots, feature set, spec, code version, tuning
    study) are copied onto the version. The version is created under ``lock``, so version
    numbers and semantic versions grow in the same order.

    ``request_id`` makes a retry safe: the version carries it (in one call with its
    creation), and a registration with a ``request_id`` some version already carries
    finishes that one (its audit event, its aliases) instead of creating another.
    """
    run = client.get_run(run_id)
    tags = {
        k: v for k, v in run.data.tags.items() if k.startswith("mlsys.") and k not in _RUN_ONLY_TAGS
    }
    facts = VersionFacts(
        run_id=run_id,
        input_schema=input_schema_hash(client, model_uri),
        spec_fingerprint=tags.get(TAG_SPEC, ""),
    )
    with lock:
        state = read_state(client, name, missing_ok=True)
        if request_id is not None and (done := _registered_by(state, request_id)):
            return _finish_registration(client, state, done, run_id, actor)
        semver, bump = next_semver([v.facts() for v in state.versions.values()], facts)
        tags |= {
            TAG_RUN: run_id,
            TAG_INPUT_SCHEMA: facts.input_schema,
            TAG_LIFECYCLE: Stage.DEVELOPMENT.value,
            TAG_SEMVER: semver,
            TAG_SEMVER_BUMP: bump,
            **(extra_tags or {}),
            **({TAG_REQUEST: request_id} if request_id is not None else {}),
        }
        # The version and all its tags are one insert: it exists whole or not at all.
        version = _create_version(client, name, model_uri, run_id, tags)
        crash_point("registry.registered")  # a version the history does not know yet
        event = audit_event(
            actor,
            "register",
            version,
            to_stage=Stage.DEVELOPMENT,
            to_version=version,
            semver=semver,
            reason=f"registered from run {run_id} ({bump})",
        )
        append_audit(client, name, event, state.history)
        sync_aliases(client, name, state.aliases, state.stages() | {version: Stage.DEVELOPMENT})
    return RegisteredVersion(name=name, version=version, run_id=run_id, semver=semver)


def _registered_by(state: RegistryState, request_id: str) -> str | None:
    return newest(v for v, vs in state.versions.items() if vs.tags.get(TAG_REQUEST) == request_id)


def _finish_registration(
    client: MlflowClient, state: RegistryState, version: str, run_id: str, actor: str
) -> RegisteredVersion:
    """What a registration cut short after creating ``version`` left undone."""
    vs = state.get(version)
    if version not in replay(state.history):
        event = audit_event(
            actor,
            "register",
            version,
            to_stage=vs.stage,
            to_version=version,
            semver=vs.semver,
            reason=f"registered from run {run_id} (finished by a retry)",
        )
        append_audit(client, state.name, event, state.history)
    sync_aliases(client, state.name, state.aliases, state.stages())
    return RegisteredVersion(
        name=state.name, version=version, run_id=run_id, semver=vs.semver or ""
    )


def recorded_gate(client: MlflowClient, name: str, version: str) -> GateDecision | None:
    tag = client.get_model_version(name, version).tags.get(TAG_GATE)
    return GateDecision.model_validate_json(tag) if tag else None


def record_gate(
    client: MlflowClient, name: str, version: str, decision: GateDecision, actor: str
) -> AuditEvent:
    """Keep the gate's decision on the version and in the history, passed or not."""
    crash_point("registry.gate")
    client.set_model_version_tag(name, version, TAG_GATE, decision.model_dump_json())
    return append_audit(
        client,
        name,
        audit_event(actor, "gate", version, gate=decision, reason=decision.reason),
    )


def record_approval(
    client: MlflowClient, name: str, version: str, approval: Approval
) -> AuditEvent:
    """Keep an approver's answer, also a rejection, before anything moves."""
    crash_point("registry.approval")
    client.set_model_version_tag(name, version, TAG_APPROVAL, approval.model_dump_json())
    verdict = "approved" if approval.approve else "rejected"
    return append_audit(
        client,
        name,
        audit_event(
            approval.approver,
            "approval",
            version,
            approval=approval,
            to_stage=Stage.PRODUCTION,
            reason=f"{verdict}: {approval.reason}",
        ),
    )


def _check(
    state: RegistryState,
    version: str,
    to_stage: Stage,
    gate: GateDecision | None,
    legal_only: bool,
    allow_stale: bool = False,
) -> Stage:
    name = state.name
    current = state.get(version).stage
    if to_stage not in LEGAL[current]:
        allowed = ", ".join(sorted(LEGAL[current])) or "nothing (retired is final)"
        raise IllegalTransition(
            f"{name} v{version}: {current} -> {to_stage} is not allowed; from {current} "
            f"it may move to {allowed}"
        )
    if legal_only:
        return current
    if to_stage in (Stage.STAGING, Stage.PRODUCTION):
        tag = state.get(version).tags.get(TAG_GATE)
        gate = gate or (GateDecision.model_validate_json(tag) if tag else None)
        if gate is None or not gate.promote:
            raise IllegalTransition(
                f"{name} v{version}: {to_stage} needs a passed promotion gate, "
                f"{'it failed: ' + gate.reason if gate else 'none is recorded'}"
            )
        if gate.challenger_version not in (None, version):
            raise IllegalTransition(
                f"{name} v{version}: the gate decision is for v{gate.challenger_version}"
            )
    if to_stage == Stage.PRODUCTION and not allow_stale:
        production = state.newest_in(Stage.PRODUCTION)
        assert gate is not None  # checked above
        if gate.champion_version != production:
            raise StaleGate(
                f"{name} v{version}: the gate compared against "
                f"{'v' + gate.champion_version if gate.champion_version else 'no champion'}, "
                f"but production is now "
                f"{'v' + production if production else 'empty'}; run the gate again"
            )
    return current


def check_transition(
    client: MlflowClient,
    name: str,
    version: str,
    to_stage: Stage,
    gate: GateDecision | None = None,
    legal_only: bool = False,
    allow_stale: bool = False,
) -> Stage:
    """Raise ``IllegalTransition`` unless ``version`` may move to ``to_stage`` now; returns
    its current stage. Flows call it before running a gate or waiting for a person
    (``legal_only``: the move itself, not yet its gate; ``allow_stale``: a gate that
    compared against an earlier champion will simply run again)."""
    state = read_state(client, name)
    return _check(state, str(version), Stage(to_stage), gate, legal_only, allow_stale)


def _become_champion(
    client: MlflowClient, name: str, version: str, stages: dict[str, Stage]
) -> dict[str, Stage]:
    """The one place a version becomes champion (Production): it takes the stage, and the
    version it replaces steps back to Staging. Returns the stages after the move; the
    aliases follow them."""
    for other in [v for v, s in stages.items() if s == Stage.PRODUCTION and v != version]:
        set_stage(client, name, other, Stage.STAGING)
        stages[other] = Stage.STAGING
    set_stage(client, name, version, Stage.PRODUCTION)
    stages[version] = Stage.PRODUCTION
    return stages


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
    to_stage, version = Stage(to_stage), str(version)
    if to_stage == Stage.PRODUCTION and (approval is None or not approval.approve):
        raise IllegalTransition(f"{name} v{version}: production needs an approval")
    with lock:
        state = read_state(client, name)
        current = _check(state, version, to_stage, gate, legal_only=False)
        if gate is None and (tag := state.get(version).tags.get(TAG_GATE)):
            gate = GateDecision.model_validate_json(tag)
        replaced = state.newest_in(to_stage)
        event = append_audit(
            client,
            name,
            audit_event(
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
            state.history,
        )
        tags = state.get(version).tags
        evidence = {
            TAG_GATE: gate if to_stage in (Stage.STAGING, Stage.PRODUCTION) else None,
            TAG_APPROVAL: approval,
        }
        for key, value in evidence.items():
            if value is not None and tags.get(key) != (text := value.model_dump_json()):
                crash_point("registry.evidence")
                client.set_model_version_tag(name, version, key, text)
        stages = state.stages()
        if to_stage == Stage.PRODUCTION:
            stages = _become_champion(client, name, version, stages)
        else:
            set_stage(client, name, version, to_stage)
            stages[version] = to_stage
        sync_aliases(client, name, state.aliases, stages)
        return event


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
        state = read_state(client, name)
        current = state.newest_in(Stage.PRODUCTION)
        if current is None:
            raise IllegalTransition(f"{name}: nothing is in production to roll back")
        stack = production_stack(state.history)
        if not stack or stack[-1] != current:
            raise IllegalTransition(
                f"{name}: production v{current} is not the last promotion in the audit "
                "history; the aliases were moved outside the lifecycle"
            )
        if len(stack) < 2:
            raise IllegalTransition(f"{name}: v{current} is the first production version")
        target = stack[-2]
        if state.get(target).stage == Stage.RETIRED:
            raise IllegalTransition(f"{name}: the previous production v{target} is retired")
        event = append_audit(
            client,
            name,
            audit_event(
                actor,
                "rollback",
                target,
                from_stage=Stage.PRODUCTION,
                to_stage=Stage.PRODUCTION,
                from_version=current,
                to_version=target,
                reason=reason,
            ),
            state.history,
        )
        set_stage(client, name, current, Stage.RETIRED)
        stages = _become_champion(client, name, target, state.stages() | {current: Stage.RETIRED})
        sync_aliases(client, name, state.aliases, stages)
        return event
