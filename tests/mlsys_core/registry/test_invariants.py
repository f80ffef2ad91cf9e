"""The registry's invariants on states built by hand (no store), then ``mlsys registry
check`` (and ``--repair``) on a real store damaged the ways a cut-short change or a writer
outside mlsys damages it."""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
import pytest

from mlsys_core.cli import main
from mlsys_core.registry import lifecycle
from mlsys_core.registry.invariants import check_registry, check_state
from mlsys_core.registry.lifecycle import (
    AUDIT_PREFIX,
    AuditEvent,
    RegistryState,
    Stage,
    VersionState,
    expected_aliases,
    replay,
)
from mlsys_core.registry.locking import RegistryLock
from mlsys_core.registry.promotion import register_version

DEV, TEST, STAGING, PROD, RETIRED = (
    Stage.DEVELOPMENT,
    Stage.TESTING,
    Stage.STAGING,
    Stage.PRODUCTION,
    Stage.RETIRED,
)


def ev(n: int, action: str, version: str, **fields: object) -> AuditEvent:
    key = f"{AUDIT_PREFIX}20260101T000000.{n:06d}Z.0000000{n % 10}"
    at = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    return AuditEvent(at=at, actor="t", action=action, version=version, key=key, **fields)


def state(
    stages: dict[str, Stage | str | None],
    events: list[AuditEvent],
    aliases: dict[str, str] | None = None,
    semvers: dict[str, str] | None = None,
) -> RegistryState:
    versions = {
        v: VersionState(
            version=v,
            tag=None if s is None else str(s),
            tags={"mlsys.semver": (semvers or {}).get(v, f"1.{int(v)}.0")},
        )
        for v, s in stages.items()
    }
    as_stages = {v: vs.stage for v, vs in versions.items()}
    held = expected_aliases(as_stages) if aliases is None else aliases
    return RegistryState(name="m", versions=versions, aliases=held, history=events)


def register_events(n: int, semvers: dict[str, str] | None = None) -> list[AuditEvent]:
    semvers = semvers or {}
    return [
        ev(i, "register", str(i), to_stage=DEV, semver=semvers.get(str(i), f"1.{i}.0"))
        for i in range(1, n + 1)
    ]


def test_a_consistent_history_with_promotions_and_a_rollback_holds() -> None:
    events = [
        *register_events(3),
        ev(10, "transition", "1", from_stage=DEV, to_stage=TEST),
        ev(11, "transition", "1", from_stage=TEST, to_stage=STAGING),
        ev(12, "transition", "1", from_stage=STAGING, to_stage=PROD),
        ev(13, "transition", "2", from_stage=DEV, to_stage=TEST),
        ev(14, "transition", "2", from_stage=TEST, to_stage=STAGING),
        ev(15, "transition", "2", from_stage=STAGING, to_stage=PROD, from_version="1"),
        ev(16, "rollback", "1", from_version="2", to_version="1"),
    ]
    assert replay(events) == {"1": PROD, "2": RETIRED, "3": DEV}
    stages = {"1": PROD, "2": RETIRED, "3": DEV}
    assert expected_aliases(stages) == {
        "production": "1",
        "champion": "1",
        "development": "3",
        "challenger": "3",
    }
    assert check_state(state(stages, events)) == []


def test_the_reported_concurrent_damage_is_found() -> None:
    """Issue 19: after 8 concurrent flows, champion = production = v4, seven versions tagged
    staging but no staging alias, and semvers in lock order (v4 1.2.3, v8 1.1.2)."""
    stages = {str(v): STAGING for v in range(1, 9)} | {"4": PROD}
    semvers = {"4": "1.2.3", "8": "1.1.2"}
    events = [*register_events(8, semvers)]
    for i, v in enumerate(str(v) for v in range(1, 9)):
        events.append(ev(20 + i, "transition", v, from_stage=DEV, to_stage=TEST))
        events.append(ev(40 + i, "transition", v, from_stage=TEST, to_stage=STAGING))
    events.append(ev(60, "transition", "4", from_stage=STAGING, to_stage=PROD))
    aliases = {"challenger": "8", "champion": "4", "production": "4"}
    found = check_state(state(stages, events, aliases, semvers))
    assert {(v.invariant, v.version) for v in found} == {
        ("alias", "8"),  # @staging is on nothing, v8 is the newest in staging
        ("semver", "4"),  # 1.2.3 is not above v3's 1.3.0
        ("semver", "8"),  # 1.1.2 is not above v7's 1.7.0
    }
    (alias,) = [v for v in found if v.invariant == "alias"]
    assert alias.detail == "@staging is on nothing, the newest version for it is v8"


def test_stage_tags_history_and_aliases_disagreeing_are_each_reported() -> None:
    events = [*register_events(3), ev(10, "transition", "2", from_stage=DEV, to_stage=TEST)]
    stages = {"1": "shipping", "2": DEV, "3": None, "4": PROD, "5": PROD}
    found = {(v.invariant, v.version, v.detail) for v in check_state(state(stages, events))}
    assert ("stage_tag", "1", "unknown stage 'shipping'") in found
    assert ("stage_tag", "3", "no stage tag") in found
    assert ("stage_tag", None, "2 in production: v4, v5") in found
    assert ("history", "2", "the history leaves it in testing, its tag says development") in found
    assert ("history", "4", "not in the audit history") in found
    assert ("history", "5", "not in the audit history") in found
    # Two in production: the newest holds the alias, as the rule says; nothing else to add.
    assert not any(v[0] == "alias" for v in found)


@pytest.mark.slow  # the shared fixture trains real models
def test_repair_mends_a_store_damaged_outside_the_lifecycle(
    trained_pair, client, tmp_path, monkeypatch, capsys
):
    name = f"repair-{tmp_path.name}"
    lock = RegistryLock(client, name)
    first = register_version(client, name, trained_pair.models[0], lock)
    second = register_version(client, name, trained_pair.models[1], lock)
    assert check_registry(client, name).ok
    # A change cut short after its audit event: the history says testing, the tag did not
    # follow; an alias moved by hand; a version registered with plain MLflow.
    lifecycle.append_audit(
        client,
        name,
        lifecycle.audit_event("ci", "transition", first.version, from_stage=DEV, to_stage=TEST),
        lifecycle.history(client, name),
    )
    client.set_registered_model_alias(name, "development", first.version)
    outside = mlflow.register_model(trained_pair.models[0].model_uri, name)
    report = check_registry(client, name)
    assert {(v.invariant, v.version) for v in report.violations} == {
        ("history", first.version),
        ("alias", first.version),  # development should be on the newest in development
        ("alias", second.version),  # challenger should be on the outside version
        ("stage_tag", str(outside.version)),
        ("history", str(outside.version)),
    }

    monkeypatch.setenv("MLSYS_STATE_DIR", str(trained_pair.settings.root))
    monkeypatch.delenv("MLSYS_TRACKING_URI", raising=False)
    assert main(["registry", "check", name]) == 1
    assert "5 violation(s)" in capsys.readouterr().out
    assert main(["registry", "check", name, "--repair"]) == 0
    assert "all invariants hold" in capsys.readouterr().out

    after = lifecycle.read_state(client, name)
    assert after.versions[first.version].tag == "testing"
    assert after.versions[str(outside.version)].tag == "development"
    assert after.aliases["development"] == str(outside.version)
    assert after.aliases["challenger"] == str(outside.version)
    assert after.aliases["testing"] == first.version
    repaired = [e for e in after.history if e.action == "repair"]
    assert [e.version for e in repaired] == [str(outside.version)]


def test_audit_keys_follow_the_history_even_from_a_slow_clock() -> None:
    future = ev(1, "register", "1").model_copy(
        update={"key": f"{AUDIT_PREFIX}29990101T000000.000000Z.abcdef01"}
    )
    key = lifecycle._audit_key([future])
    assert key > future.key and key.startswith(f"{AUDIT_PREFIX}29990101T000000.000001Z.")
