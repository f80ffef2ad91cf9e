"""Where a registered model came from and where it went, from one ``models:/`` URI.

Everything is read from tags written along the way: the training run's lineage tags (copied
onto the version at registration), the gate and approval tags, the audit history, and one
``mlsys.served_by.<deployment>`` tag per deployment that used the version. A version's
dataset and feature-set tags (or else its run's) name the feature set it was trained on,
whose manifest holds the exact spec (``version_spec``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from mlsys_core.crashpoints import crash_point
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import (
    TAG_DATASET,
    TAG_FEATURE_SET,
    FeatureSetRef,
    feature_set_of,
    spec_of,
)
from mlsys_core.registry import lifecycle
from mlsys_core.registry.gate import GateDecision
from mlsys_core.registry.lifecycle import Approval, AuditEvent, Stage
from mlsys_core.spec import DatasetSpec

SERVED_BY_PREFIX = "mlsys.served_by."
TAG_CANARY_ROLLBACK = "mlsys.serving.canary_rollback"
TAG_TUNING_STUDY = "mlsys.tuning.study"
TAG_TUNING_STORAGE = "mlsys.tuning.storage"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    """The version's lineage tags, falling back to its training run's tags."""
    mv = client.get_model_version(name, version)
    tags = dict(mv.tags)
    if not {TAG_FEATURE_SET, TAG_DATASET} <= tags.keys() and mv.run_id:
        try:
            tags = dict(client.get_run(mv.run_id).data.tags) | tags
        except MlflowException:
            pass  # a deleted run: nothing more to learn
    return tags


def version_feature_set(
    client: MlflowClient, lake: Lake, name: str, version: str
) -> FeatureSetRef | None:
    """The feature set ``name`` v``version`` was trained on; None when its lineage names none
    (a model logged outside the pipeline)."""
    tags = version_tags(client, name, version)
    if TAG_FEATURE_SET not in tags or TAG_DATASET not in tags:
        return None
    try:
        return feature_set_of(tags, lake)
    except LookupError as err:
        raise LookupError(f"{name} v{version}: {err}") from None


def trained_feature_set(client: MlflowClient, lake: Lake, name: str, version: str) -> FeatureSetRef:
    """The feature set ``name`` v``version`` was trained on, for a caller that needs one."""
    ref = version_feature_set(client, lake, name, version)
    if ref is None:
        raise LookupError(f"{name} v{version} names no feature set in its lineage")
    return ref


def version_spec(client: MlflowClient, lake: Lake, name: str, version: str) -> DatasetSpec | None:
    """The exact spec ``name`` v``version`` was trained with (None: no lineage)."""
    ref = version_feature_set(client, lake, name, version)
    if ref is None:
        return None
    return spec_of(ref, lake)


class ServedBy(BaseModel):
    model_config = ConfigDict(frozen=True)

    deployment: str
    first_seen: str
    last_seen: str


class TuningStudy(BaseModel):
    model_config = ConfigDict(frozen=True)

    study: str
    storage: str | None = None


class Lineage(BaseModel):
    """The answer to "what is this model, and what made it?"."""

    model_config = ConfigDict(frozen=True)

    uri: str
    name: str
    version: str
    aliases: list[str]
    stage: Stage
    semver: str | None
    dataset: str | None
    raw_snapshots: dict[str, str]
    clean_snapshots: dict[str, str]
    feature_set: str | None
    spec_fingerprint: str | None
    code_version: str | None
    run_id: str | None
    run_params: dict[str, str]
    run_metrics: dict[str, float]
    tuning: TuningStudy | None
    gate: GateDecision | None
    approval: Approval | None
    served_by: list[ServedBy]
    history: list[AuditEvent]


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> (name, alias, version)."""
    match = _URI.match(uri.strip())
    if match is None:
        raise ValueError(f"{uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


def _resolve(client: MlflowClient, uri: str):  # noqa: ANN202 -- an MLflow ModelVersion
    name, alias, version = parse_model_uri(uri)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as err:
        raise LookupError(f"no model version at {uri}: {err.message}") from err


def _slug(deployment: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", deployment)[:200]


def record_served_by(client: MlflowClient, name: str, version: str, deployment: str) -> ServedBy:
    """Note that ``deployment`` used this version (first and last time seen)."""
    key = SERVED_BY_PREFIX + _slug(deployment)
    now = datetime.now(UTC).isoformat()
    tags = client.get_model_version(name, version).tags
    first = json.loads(tags[key])["first_seen"] if key in tags else now
    served = ServedBy(deployment=deployment, first_seen=first, last_seen=now)
    crash_point("registry.served_by")  # one tag, set in one call: there or not
    client.set_model_version_tag(name, version, key, served.model_dump_json())
    return served


def record_canary_rollback(
    client: MlflowClient, name: str, version: str, deployment: str, reason: str
) -> dict[str, str]:
    """Mark ``version`` as rolled back from canary by ``deployment``: every replica that
    loads it again sends it no traffic."""
    record = {"at": datetime.now(UTC).isoformat(), "deployment": deployment, "reason": reason}
    crash_point("registry.canary_rollback")  # one tag, set in one call: there or not
    client.set_model_version_tag(name, version, TAG_CANARY_ROLLBACK, json.dumps(record))
    return record


def lineage(client: MlflowClient, uri: str) -> Lineage:
    """Data snapshots, feature set, training run and params, tuning study, gate decision,
    approval, deployments and audit history of the version ``uri`` points at."""
    mv = _resolve(client, uri)
    name, version, tags = mv.name, str(mv.version), mv.tags
    run_id = tags.get(lifecycle.TAG_RUN) or mv.run_id or None
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    run_tags: dict[str, str] = {}
    if run_id:
        try:
            run = client.get_run(run_id)
            params, metrics, run_tags = dict(run.data.params), dict(run.data.metrics), run.data.tags
        except MlflowException:
            pass  # a deleted run: the version's copied tags still tell the lineage
    # The tuning helper tags the final training run; registration copies run tags, so
    # either place may hold it.
    study = tags.get(TAG_TUNING_STUDY) or run_tags.get(TAG_TUNING_STUDY)
    storage = tags.get(TAG_TUNING_STORAGE) or run_tags.get(TAG_TUNING_STORAGE)
    gate = tags.get(lifecycle.TAG_GATE)
    approval = tags.get(lifecycle.TAG_APPROVAL)
    served = sorted(
        (ServedBy.model_validate_json(v) for k, v in _prefixed(tags, SERVED_BY_PREFIX).items()),
        key=lambda s: s.first_seen,
    )
    events = [e for e in lifecycle.history(client, name) if version in (e.version, e.from_version)]
    return Lineage(
        uri=uri,
        name=name,
        version=version,
        aliases=sorted(mv.aliases or []),
        stage=Stage(tags.get(lifecycle.TAG_LIFECYCLE, Stage.DEVELOPMENT)),
        semver=tags.get(lifecycle.TAG_SEMVER),
        dataset=tags.get("mlsys.dataset"),
        raw_snapshots=_prefixed(tags, "mlsys.raw."),
        clean_snapshots=_prefixed(tags, "mlsys.clean."),
        feature_set=tags.get("mlsys.feature_set"),
        spec_fingerprint=tags.get(lifecycle.TAG_SPEC),
        code_version=tags.get("mlsys.code_version"),
        run_id=run_id,
        run_params=params,
        run_metrics=metrics,
        tuning=TuningStudy(study=study, storage=storage) if study else None,
        gate=GateDecision.model_validate_json(gate) if gate else None,
        approval=Approval.model_validate_json(approval) if approval else None,
        served_by=served,
        history=events,
    )


def _prefixed(tags: dict[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in sorted(tags.items()) if k.startswith(prefix)}
