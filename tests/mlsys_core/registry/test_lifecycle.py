"""The lifecycle on a real MLflow store and a real tracking server: stages, semver, gate,
approval, audit history, rollback, and concurrent registrations."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sklearn.metrics import roc_auc_score

from mlsys_core.crashpoints import InjectedCrash, armed
from mlsys_core.data.cleaning import clean_snapshot
from mlsys_core.data.ingest import snapshot_source
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import build_feature_set
from mlsys_core.registry import lifecycle
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.invariants import check_registry
from mlsys_core.registry.lifecycle import (
    LEGAL,
    Approval,
    IllegalTransition,
    Stage,
    StaleGate,
    VersionFacts,
    alias_version,
    history,
    next_semver,
    rollback,
    stage_of,
    transition,
)
from mlsys_core.registry.locking import RegistryLock
from mlsys_core.registry.promotion import (
    challenge_champion,
    enter_production,
    predict_scores,
    register_version,
)
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import held_out, train_and_log

APPROVED = Approval(approver="alice", approve=True, reason="numbers look right")


def facts(run: str, schema: str = "s", spec: str = "f", semver: str | None = None):
    return VersionFacts(run_id=run, input_schema=schema, spec_fingerprint=spec, semver=semver)


@pytest.mark.parametrize(
    ("earlier", "current", "expected"),
    [
        ([], facts("a"), "1.0.0"),
        ([facts("a", semver="1.0.0")], facts("b"), "1.1.0"),  # retrain
        ([facts("a", semver="1.0.0")], facts("a"), "1.0.1"),  # same run again
        ([facts("a", semver="1.0.0")], facts("b", schema="t"), "2.0.0"),  # input schema
        ([facts("a", semver="1.0.0")], facts("b", spec="g"), "2.0.0"),  # feature definitions
        # The base is the highest semver, not the newest registration.
        ([facts("a", semver="1.3.0"), facts("b", semver="1.2.1")], facts("c"), "1.4.0"),
        ([facts("a", semver="2.0.0"), facts("b", semver="1.9.0")], facts("b"), "2.0.1"),
        ([facts("a")], facts("b"), "1.0.0"),  # versions from before semver are ignored
    ],
)
def test_next_semver(earlier, current, expected) -> None:
    assert next_semver(earlier, current)[0] == expected


def test_transition_table_forbids_shortcuts_and_leaving_retired() -> None:
    assert Stage.PRODUCTION not in LEGAL[Stage.DEVELOPMENT]
    assert Stage.PRODUCTION not in LEGAL[Stage.TESTING]
    assert Stage.STAGING not in LEGAL[Stage.DEVELOPMENT]
    assert LEGAL[Stage.RETIRED] == frozenset()
    assert all(Stage.RETIRED in LEGAL[s] for s in Stage if s != Stage.RETIRED)


def gate_for(client, version, pair, config: GateConfig | None = None) -> GateDecision:
    config = config or GateConfig()
    held = held_out(pair.feature_set, Lake(pair.settings.lake_dir))
    features, labels = held.inputs(), held.labels
    return challenge_champion(client, version, features, labels, config)


def to_staging(client, name, version, gate, lock) -> None:
    transition(client, name, version.version, Stage.TESTING, "ci", "smoke test", lock)
    lifecycle.record_gate(client, name, version.version, gate, "ci")
    transition(client, name, version.version, Stage.STAGING, "ci", gate.reason, lock, gate=gate)


def ranked(pair) -> tuple[int, int]:
    """Indices of the worse and the better trained model on the held-out rows."""
    held = held_out(pair.feature_set, Lake(pair.settings.lake_dir))
    features, labels = held.inputs(), held.labels
    client = tracking_client(pair.settings.mlflow_uri)
    scores = [predict_scores(client, m.model_uri, features) for m in pair.models]
    aucs = [roc_auc_score(labels, s) for s in scores]
    assert aucs[0] != aucs[1]
    return (0, 1) if aucs[0] < aucs[1] else (1, 0)


@pytest.mark.slow
def test_registration_sets_development_semver_and_lineage(backend, tmp_path) -> None:
    client = tracking_client(backend.settings.mlflow_uri)
    name = f"life-reg-{tmp_path.name}"
    lock = RegistryLock(client, name)
    a, b = backend.models
    v1 = register_version(client, name, a, lock)
    v2 = register_version(client, name, b, lock)
    v3 = register_version(client, name, a, lock)  # the same run again
    assert [v.semver for v in (v1, v2, v3)] == ["1.0.0", "1.1.0", "1.1.1"]
    assert all(stage_of(client, name, v.version) == Stage.DEVELOPMENT for v in (v1, v2, v3))
    assert alias_version(client, name, "challenger") == v3.version
    assert alias_version(client, name, "development") == v3.version
    tags = client.get_model_version(name, v1.version).tags
    assert tags["mlsys.feature_set"] == backend.feature_set.version
    assert tags["mlsys.raw.flights"] == backend.feature_set.raw_snapshots["flights"]
    assert tags["mlsys.run_id"] == a.run_id
    assert tags["mlsys.lifecycle"] == "development"
    assert "mlsys.stage" not in tags  # the run's pipeline-stage tag is not the lifecycle
    events = history(client, name)
    assert [(e.action, e.version, e.semver) for e in events] == [
        ("register", v.version, v.semver) for v in (v1, v2, v3)
    ]


def test_a_registration_retried_with_its_request_id_finishes_its_version(
    trained_pair, tmp_path
) -> None:
    """A retry after a crash between the version's creation and its audit event finishes
    that version (history, aliases): no second version, and every invariant holds."""
    client = tracking_client(trained_pair.settings.mlflow_uri)
    name = f"life-retry-{tmp_path.name}"
    lock = RegistryLock(client, name)
    a, _ = trained_pair.models
    with armed("registry.registered"), pytest.raises(InjectedCrash):
        register_version(client, name, a, lock, request_id="task-run-1")
    assert not check_registry(client, name).ok  # a version the history does not know
    retried = register_version(client, name, a, lock, request_id="task-run-1")
    again = register_version(client, name, a, lock, request_id="task-run-1")
    assert retried.version == again.version == "1"
    assert retried.semver == "1.0.0"
    report = check_registry(client, name)
    assert report.ok, report.violations
    assert report.versions == 1
    assert [(e.action, e.version) for e in history(client, name)] == [("register", "1")]
    assert alias_version(client, name, "challenger") == "1"
    assert register_version(client, name, a, lock, request_id="task-run-2").version == "2"


@pytest.mark.slow
def test_illegal_transitions_are_refused_clearly(backend, tmp_path) -> None:
    client = tracking_client(backend.settings.mlflow_uri)
    name = f"life-illegal-{tmp_path.name}"
    lock = RegistryLock(client, name)
    v = register_version(client, name, backend.models[0], lock)
    with pytest.raises(IllegalTransition, match="development -> production is not allowed"):
        transition(
            client, name, v.version, Stage.PRODUCTION, "eve", "yolo", lock, approval=APPROVED
        )
    with pytest.raises(IllegalTransition, match="development -> staging is not allowed"):
        transition(client, name, v.version, Stage.STAGING, "eve", "skip tests", lock)
    transition(client, name, v.version, Stage.TESTING, "ci", "smoke test", lock)
    with pytest.raises(IllegalTransition, match="needs a passed promotion gate"):
        transition(client, name, v.version, Stage.STAGING, "eve", "no gate", lock)
    failed = GateDecision(
        promote=False, reason="worse", challenger_auc=0.5, challenger_version=v.version
    )
    with pytest.raises(IllegalTransition, match="it failed: worse"):
        transition(client, name, v.version, Stage.STAGING, "eve", "bad gate", lock, gate=failed)
    transition(client, name, v.version, Stage.RETIRED, "ci", "superseded", lock)
    for stage in Stage:
        with pytest.raises(IllegalTransition, match="retired is final"):
            transition(client, name, v.version, stage, "eve", "revive", lock, approval=APPROVED)
    assert stage_of(client, name, v.version) == Stage.RETIRED
    assert alias_version(client, name, "testing") is None  # it left testing
    # Refused moves leave no trace in the history: only the two real moves are there.
    moves = [(e.from_stage, e.to_stage) for e in history(client, name) if e.action == "transition"]
    assert moves == [(Stage.DEVELOPMENT, Stage.TESTING), (Stage.TESTING, Stage.RETIRED)]


@pytest.mark.slow
def test_promotion_approval_audit_and_rollback(backend, tmp_path) -> None:
    client = tracking_client(backend.settings.mlflow_uri)
    name = f"life-path-{tmp_path.name}"
    lock = RegistryLock(client, name)
    worse, better = ranked(backend)
    first = register_version(client, name, backend.models[worse], lock)
    gate = gate_for(client, first, backend)
    assert gate.promote and gate.champion_version is None
    to_staging(client, name, first, gate, lock)
    with pytest.raises(IllegalTransition, match="needs an approval"):
        transition(client, name, first.version, Stage.PRODUCTION, "bob", "go", lock)
    rejected = Approval(approver="bob", approve=False, reason="not yet")
    with pytest.raises(IllegalTransition, match="needs an approval"):
        transition(
            client, name, first.version, Stage.PRODUCTION, "bob", "go", lock, approval=rejected
        )
    transition(
        client, name, first.version, Stage.PRODUCTION, "alice", "ok", lock, approval=APPROVED
    )
    assert alias_version(client, name, "champion") == first.version
    assert alias_version(client, name, "production") == first.version
    assert alias_version(client, name, "staging") is None

    # A challenger must beat the champion; a lax alpha lets a real lead through.
    second = register_version(client, name, backend.models[better], lock)
    gate2 = gate_for(client, second, backend, GateConfig(alpha=0.49, n_bootstrap=300))
    assert gate2.champion_version == first.version
    assert gate2.challenger_auc > gate2.champion_auc
    assert gate2.promote, gate2.reason
    to_staging(client, name, second, gate2, lock)
    event = transition(
        client, name, second.version, Stage.PRODUCTION, "alice", "better", lock, approval=APPROVED
    )
    assert (event.from_version, event.to_version) == (first.version, second.version)
    assert event.gate.p_value == gate2.p_value and event.approval.approver == "alice"
    assert alias_version(client, name, "champion") == second.version
    assert stage_of(client, name, first.version) == Stage.STAGING  # demoted, not retired

    # The worse model again: the gate refuses it and the champion stays.
    third = register_version(client, name, backend.models[worse], lock)
    gate3 = gate_for(client, third, backend)
    assert not gate3.promote and gate3.challenger_auc < gate3.champion_auc
    lifecycle.record_gate(client, name, third.version, gate3, "ci")
    assert alias_version(client, name, "champion") == second.version

    back = rollback(client, name, "carol", "p99 latency regression", lock)
    assert (back.from_version, back.to_version) == (second.version, first.version)
    assert alias_version(client, name, "champion") == first.version
    assert stage_of(client, name, first.version) == Stage.PRODUCTION
    assert stage_of(client, name, second.version) == Stage.RETIRED
    with pytest.raises(IllegalTransition, match="first production version"):
        rollback(client, name, "carol", "again", lock)

    events = history(client, name)
    assert [e.key for e in events] == sorted(e.key for e in events)
    alias_moves = [
        (e.action, e.actor, e.from_version, e.to_version, e.reason)
        for e in events
        if e.to_stage == Stage.PRODUCTION and e.action in ("transition", "rollback")
    ]
    assert alias_moves == [
        ("transition", "alice", None, first.version, "ok"),
        ("transition", "alice", first.version, second.version, "better"),
        ("rollback", "carol", second.version, first.version, "p99 latency regression"),
    ]
    gates = [e for e in events if e.action == "gate"]
    assert [g.gate.promote for g in gates] == [True, True, False]
    assert all(e.at and e.actor for e in events)
    assert check_registry(client, name).violations == []


@pytest.mark.slow
def test_a_gate_run_against_an_old_champion_is_stale(backend, tmp_path) -> None:
    client = tracking_client(backend.settings.mlflow_uri)
    name = f"life-stale-{tmp_path.name}"
    lock = RegistryLock(client, name)
    worse, better = ranked(backend)
    a = register_version(client, name, backend.models[worse], lock)
    b = register_version(client, name, backend.models[better], lock)
    gate_a, gate_b = gate_for(client, a, backend), gate_for(client, b, backend)
    assert gate_a.champion_version is None and gate_b.champion_version is None
    to_staging(client, name, a, gate_a, lock)
    to_staging(client, name, b, gate_b, lock)
    transition(client, name, a.version, Stage.PRODUCTION, "alice", "first", lock, approval=APPROVED)
    with pytest.raises(StaleGate, match="run the gate again"):
        transition(client, name, b.version, Stage.PRODUCTION, "alice", "x", lock, approval=APPROVED)
    assert alias_version(client, name, "champion") == a.version

    # enter_production runs the stale gate again, against the champion of now: the better
    # b still wins (a lax alpha lets a real lead through), so it moves and a steps back.
    lax = GateConfig(alpha=0.49, n_bootstrap=300)
    lake = Lake(backend.settings.lake_dir)
    moved = enter_production(client, lake, b, APPROVED, "alice", "x", lock, lax)
    assert moved.moved and moved.gate.champion_version == a.version
    assert moved.gate.challenger_auc > moved.gate.champion_auc
    assert alias_version(client, name, "champion") == b.version
    assert stage_of(client, name, a.version) == Stage.STAGING
    # The worse a, gated against no champion, is stale now too; run again it loses to b.
    stay = enter_production(client, lake, a, APPROVED, "alice", "y", lock, lax)
    assert not stay.moved and stay.gate.champion_version == b.version
    assert alias_version(client, name, "champion") == b.version
    assert check_registry(client, name).violations == []


@pytest.mark.slow
def test_parallel_registrations_get_distinct_versions_and_one_champion_move(
    backend, tmp_path
) -> None:
    """8 registrations of the same model at once: 8 versions; the first to reach the
    registry lock is promoted, the rest compare equal (or stale) and are refused."""
    client = tracking_client(backend.settings.mlflow_uri)
    name = f"life-par-{tmp_path.name}"
    lock = RegistryLock(client, name)
    trained = backend.models[0]
    held = held_out(backend.feature_set, Lake(backend.settings.lake_dir))
    features, labels = held.inputs(), held.labels
    start = threading.Barrier(8)

    def pipeline(i: int) -> str:
        start.wait()
        v = register_version(client, name, trained, lock, actor=f"worker-{i}")
        transition(client, name, v.version, Stage.TESTING, f"worker-{i}", "smoke", lock)
        gate = challenge_champion(client, v, features, labels, GateConfig(n_bootstrap=200))
        lifecycle.record_gate(client, name, v.version, gate, f"worker-{i}")
        if not gate.promote:
            return "refused"
        try:
            transition(client, name, v.version, Stage.STAGING, "w", gate.reason, lock, gate=gate)
            transition(
                client, name, v.version, Stage.PRODUCTION, "w", "auto", lock, approval=APPROVED
            )
        except StaleGate:
            return "stale"
        return "promoted"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(pipeline, range(8)))
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, 9))
    assert len({v.tags["mlsys.semver"] for v in versions}) == 8
    assert outcomes.count("promoted") == 1
    moves = [
        e
        for e in history(client, name)
        if e.to_stage == Stage.PRODUCTION and e.action == "transition"
    ]
    assert len(moves) == 1
    assert alias_version(client, name, "champion") == moves[0].version
    assert check_registry(client, name).violations == []


@pytest.mark.slow
def test_a_changed_feature_definition_is_a_major_version(trained_pair, small_spec, tmp_path):
    """The same data with one feature fewer: new input schema and spec -> 2.0.0."""
    settings = trained_pair.settings
    lake = Lake(settings.lake_dir)
    fewer = small_spec.features.model_copy(update={"numeric": small_spec.features.numeric[:-1]})
    spec = small_spec.model_copy(update={"features": fewer})
    clean = {
        s.name: clean_snapshot(snapshot_source(s, lake), spec.contracts[s.name], lake)
        for s in spec.sources
    }
    retrained = train_and_log(
        build_feature_set(clean, spec, lake),
        TrainConfig(epochs=1),
        Lake(settings.lake_dir),
        settings.tracking,
    )
    client = tracking_client(settings.mlflow_uri)
    name = f"life-major-{tmp_path.name}"
    lock = RegistryLock(client, name)
    first = register_version(client, name, trained_pair.models[0], lock)
    changed = register_version(client, name, retrained, lock)
    assert (first.semver, changed.semver) == ("1.0.0", "2.0.0")
    tags = client.get_model_version(name, changed.version).tags
    assert tags["mlsys.semver_bump"].startswith("major")
    assert (
        tags["mlsys.input_schema"] != client.get_model_version(name, "1").tags["mlsys.input_schema"]
    )
