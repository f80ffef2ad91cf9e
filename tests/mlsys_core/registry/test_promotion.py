"""Registration with lineage, and the champion that moves only when the gate says so."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from mlsys_core.data.lake import Lake
from mlsys_core.features.store import load_feature_set
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.lifecycle import Stage, stage_of
from mlsys_core.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    apply_decision,
    challenge_champion,
    current_champion,
    register_version,
)
from mlsys_core.tracking import code_version
from mlsys_core.training.run import held_out

pytestmark = pytest.mark.slow  # the shared fixture trains and logs real models

# A lax significance level: two 2-epoch models differ by little on ~2.5k rows, and these
# tests are about which way the champion moves, not about the test's power.
LAX = GateConfig(alpha=0.49, n_bootstrap=300)


def scored_aucs(pair) -> list[float]:
    """Test AUC of each trained model, scored here through its pyfunc and scikit-learn."""
    features, labels = held_out(pair.feature_set, Lake(pair.settings.lake_dir))
    return [
        roc_auc_score(labels, np.asarray(mlflow.pyfunc.load_model(m.model_uri).predict(features)))
        for m in pair.models
    ]


def alias_version(client: MlflowClient, name: str, alias: str) -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def gate_tag(client: MlflowClient, name: str, version: str) -> GateDecision:
    tags = client.get_model_version(name, version).tags
    return GateDecision.model_validate_json(tags["mlsys.gate"])


def test_register_version_copies_lineage_and_marks_the_challenger(
    trained_pair, client: MlflowClient
) -> None:
    name = "reg-lineage"
    first, second = trained_pair.models
    registered = register_version(client, name, first)

    assert registered.name == name
    assert registered.run_id == first.run_id
    assert registered.uri == f"models:/{name}/{registered.version}"
    assert registered.semver == "1.0.0"
    assert alias_version(client, name, CHALLENGER) == registered.version

    tags = client.get_model_version(name, registered.version).tags
    fs = trained_pair.feature_set
    _, spec = load_feature_set(fs, Lake(trained_pair.settings.lake_dir))
    assert tags["mlsys.feature_set"] == fs.version
    assert tags["mlsys.dataset"] == spec.name
    assert tags["mlsys.spec_fingerprint"] == spec.fingerprint()
    for table in ("flights", "weather", "planes", "airports"):
        assert tags[f"mlsys.raw.{table}"] == fs.raw_snapshots[table]
        assert tags[f"mlsys.clean.{table}"] == fs.clean_snapshots[table]
    # The working tree may change while tests run: compare the commit, not the dirty mark.
    assert tags["mlsys.code_version"].removesuffix("-dirty") == code_version().removesuffix(
        "-dirty"
    )
    assert tags["mlsys.run_id"] == first.run_id
    assert float(tags["mlsys.test_auc"]) == pytest.approx(first.metrics["test_auc"], abs=1e-6)

    # The newest registration takes the challenger alias; no champion was named.
    newer = register_version(client, name, second)
    assert int(newer.version) == int(registered.version) + 1
    assert newer.semver == "1.1.0"
    assert alias_version(client, name, CHALLENGER) == newer.version
    assert current_champion(client, name) is None


def test_current_champion_of_an_unknown_model_is_none(client: MlflowClient) -> None:
    assert current_champion(client, "never-registered") is None


def test_champion_moves_only_when_the_gate_passes(trained_pair, client: MlflowClient) -> None:
    name = "reg-promotion"
    features, labels = held_out(trained_pair.feature_set, Lake(trained_pair.settings.lake_dir))
    aucs = scored_aucs(trained_pair)
    assert aucs[0] != aucs[1]  # the two seeds give two different models
    worse, better = sorted(range(2), key=lambda i: aucs[i])
    models = trained_pair.models

    def challenge(index: int):
        candidate = register_version(client, name, models[index])
        decision = challenge_champion(client, candidate, features, labels, 0.0, LAX)
        stage = apply_decision(client, candidate, decision)
        assert gate_tag(client, name, candidate.version) == decision
        return candidate, decision, stage

    # The first model promotes, whatever its score.
    v1, decision, stage = challenge(worse)
    assert decision.promote and stage == Stage.PRODUCTION
    assert decision.champion_auc is None
    assert decision.challenger_auc == pytest.approx(aucs[worse], abs=1e-9)
    assert alias_version(client, name, CHAMPION) == v1.version

    # A better model takes over; the old champion steps back to staging.
    v2, decision, stage = challenge(better)
    assert decision.promote, decision.reason
    assert decision.challenger_auc == pytest.approx(aucs[better], abs=1e-9)
    assert decision.champion_auc == pytest.approx(aucs[worse], abs=1e-9)
    assert decision.champion_version == v1.version
    assert decision.p_value < LAX.alpha
    assert alias_version(client, name, CHAMPION) == v2.version
    assert stage_of(client, name, v1.version) == Stage.STAGING

    # A worse one does not, and the refusal is recorded on it.
    v3, decision, stage = challenge(worse)
    assert not decision.promote and stage == Stage.DEVELOPMENT
    assert decision.champion_version == v2.version
    assert alias_version(client, name, CHAMPION) == v2.version
    assert alias_version(client, name, CHALLENGER) == v3.version

    # Nor does an equal one: the same model registered again.
    _, decision, _ = challenge(better)
    assert not decision.promote
    assert decision.challenger_auc == pytest.approx(decision.champion_auc, abs=1e-12)
    assert decision.p_value == 1.0
    assert alias_version(client, name, CHAMPION) == v2.version


def test_challenge_respects_the_margin(trained_pair, client: MlflowClient) -> None:
    name = "reg-margin"
    features, labels = held_out(trained_pair.feature_set, Lake(trained_pair.settings.lake_dir))
    aucs = scored_aucs(trained_pair)
    worse, better = sorted(range(2), key=lambda i: aucs[i])
    gap = aucs[better] - aucs[worse]
    champion = register_version(client, name, trained_pair.models[worse])
    apply_decision(client, champion, challenge_champion(client, champion, features, labels))
    candidate = register_version(client, name, trained_pair.models[better])

    decision = challenge_champion(client, candidate, features, labels, gap + 0.01, LAX)
    assert not decision.promote and "margin" in decision.reason
    assert decision.margin == gap + 0.01
    apply_decision(client, candidate, decision)
    assert alias_version(client, name, CHAMPION) == champion.version

    decision = challenge_champion(client, candidate, features, labels, 0.0, LAX)
    assert decision.promote, decision.reason
    apply_decision(client, candidate, decision)
    assert alias_version(client, name, CHAMPION) == candidate.version


def test_the_champion_challenged_by_itself_keeps_its_place(
    trained_pair, client: MlflowClient
) -> None:
    name = "reg-self"
    features, labels = held_out(trained_pair.feature_set, Lake(trained_pair.settings.lake_dir))
    version = register_version(client, name, trained_pair.models[0])
    apply_decision(client, version, challenge_champion(client, version, features, labels))
    decision = challenge_champion(client, version, features, labels)
    assert decision.champion_auc is None  # nothing else to compare with
    assert apply_decision(client, version, decision) == Stage.PRODUCTION
    assert alias_version(client, name, CHAMPION) == version.version
