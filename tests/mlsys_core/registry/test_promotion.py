"""Registration with lineage, and the lifecycle walk: the champion moves only when the
smoke test and the gate say so."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from mlsys_core.data.lake import Lake
from mlsys_core.features.store import TAG_FEATURE_SET, load_feature_set
from mlsys_core.registry import lifecycle
from mlsys_core.registry.gate import GateConfig, GateDecision
from mlsys_core.registry.invariants import check_registry
from mlsys_core.registry.lifecycle import (
    CHALLENGER,
    CHAMPION,
    Stage,
    stage_of,
)
from mlsys_core.registry.promotion import (
    auto_approval,
    challenge_champion,
    current_champion,
    register_version,
    run_gate,
    walk,
)
from mlsys_core.tracking import code_version, configure_mlflow
from mlsys_core.training.run import held_out, model_input_frame, split_rows
from tests.state import build_without_a_feature, copy_state

pytestmark = pytest.mark.slow  # the shared fixture trains and logs real models

# A lax significance level: two 2-epoch models differ by little on ~2.5k rows, and these
# tests are about which way the champion moves, not about the test's power.
LAX = GateConfig(alpha=0.49, n_bootstrap=300)


def scored_aucs(pair) -> list[float]:
    """Test AUC of each trained model, scored here through its pyfunc and scikit-learn."""
    held = held_out(pair.feature_set, Lake(pair.settings.lake_dir))
    features, labels = held.inputs(), held.labels
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
    lake = Lake(trained_pair.settings.lake_dir)
    aucs = scored_aucs(trained_pair)
    assert aucs[0] != aucs[1]  # the two seeds give two different models
    worse, better = sorted(range(2), key=lambda i: aucs[i])
    models = trained_pair.models
    prepared: list[tuple[str, str | None]] = []  # (version, the champion when the hook ran)

    def before_production(version: str) -> None:
        prepared.append((version, lifecycle.alias_version(client, name, CHAMPION)))

    def challenge(index: int):
        walked = walk(
            client, lake, models[index], name, "ci", None, LAX, auto_approval("ci"),
            before_production=before_production,
        )  # fmt: skip
        assert walked.smoke_auc == pytest.approx(aucs[index], abs=1e-9)
        assert gate_tag(client, name, walked.version.version) == walked.decision
        return walked.version, walked.decision, walked.stage

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
    assert alias_version(client, name, "staging") == v1.version

    # A worse one does not: it stays in testing, with the refusal recorded on it.
    v3, decision, stage = challenge(worse)
    assert not decision.promote and stage == Stage.TESTING
    assert decision.champion_version == v2.version
    assert alias_version(client, name, CHAMPION) == v2.version
    assert alias_version(client, name, CHALLENGER) == v3.version

    # Nor does an equal one: the same model registered again.
    _, decision, _ = challenge(better)
    assert not decision.promote
    assert decision.challenger_auc == pytest.approx(decision.champion_auc, abs=1e-12)
    assert decision.p_value == 1.0
    assert alias_version(client, name, CHAMPION) == v2.version
    assert check_registry(client, name).violations == []
    # The hook (the online store's fill) ran for the two that became champion, each time
    # before the alias moved; never for the refused ones.
    assert prepared == [(v1.version, None), (v2.version, v1.version)]


def test_without_an_approval_the_walk_stops_in_staging(trained_pair, client) -> None:
    name = "reg-unapproved"
    lake = Lake(trained_pair.settings.lake_dir)
    hooked: list[str] = []
    walked = walk(
        client, lake, trained_pair.models[0], name, "ci", None, LAX,
        before_production=hooked.append,
    )  # fmt: skip
    assert walked.stage == Stage.STAGING and walked.approval is None and hooked == []
    assert current_champion(client, name) is None
    assert alias_version(client, name, "staging") == walked.version.version


def test_challenge_respects_the_margin(trained_pair, client: MlflowClient) -> None:
    name = "reg-margin"
    lake = Lake(trained_pair.settings.lake_dir)
    held = held_out(trained_pair.feature_set, lake)
    features, labels = held.inputs(), held.labels
    aucs = scored_aucs(trained_pair)
    worse, better = sorted(range(2), key=lambda i: aucs[i])
    gap = aucs[better] - aucs[worse]
    models = trained_pair.models
    champion = walk(client, lake, models[worse], name, "ci", None, LAX, auto_approval("ci"))
    candidate = register_version(client, name, models[better])

    strict = LAX.model_copy(update={"margin": gap + 0.01})
    decision = challenge_champion(client, candidate, features, labels, strict)
    assert not decision.promote and "margin" in decision.reason
    assert decision.margin == gap + 0.01
    assert decision.champion_version == champion.version.version

    decision = challenge_champion(client, candidate, features, labels, LAX)
    assert decision.promote, decision.reason


def test_the_champion_challenged_by_itself_keeps_its_place(
    trained_pair, client: MlflowClient
) -> None:
    name = "reg-self"
    lake = Lake(trained_pair.settings.lake_dir)
    held = held_out(trained_pair.feature_set, lake)
    features, labels = held.inputs(), held.labels
    walked = walk(client, lake, trained_pair.models[0], name, "ci", None, LAX, auto_approval("ci"))
    decision = challenge_champion(client, walked.version, features, labels)
    assert decision.champion_auc is None  # nothing else to compare with
    assert decision.promote
    assert alias_version(client, name, CHAMPION) == walked.version.version


def test_the_gate_gives_each_model_its_own_inputs_or_says_it_cannot_compare(
    trained_pair, tmp_path
) -> None:
    """The gate scores champion and candidate on the candidate's held-out rows. Rows built
    with a spec that lacks an input of the champion would have it imputed: that is no
    comparison, and the decision says so, naming the input. Rows that hold every input of
    the champion are given to it as its own inputs, not the candidate's."""
    settings = copy_state(trained_pair.settings, tmp_path / "state")  # a newer set, apart
    client = configure_mlflow(settings.tracking)
    lake = Lake(settings.lake_dir)
    narrower, dropped = build_without_a_feature(lake, trained_pair.feature_set)
    first, second = trained_pair.models

    # The champion was trained with every input; the candidate's rows lack one.
    name = "reg-inputs-lacking"
    champion = walk(client, lake, first, name, "ci", None, LAX, auto_approval("ci")).version
    candidate = register_version(client, name, second)
    client.set_model_version_tag(name, candidate.version, TAG_FEATURE_SET, narrower.version)
    decision = run_gate(client, lake, candidate, LAX, "ci")
    assert decision.promote and decision.champion_auc is None
    assert f"champion v{champion.version} cannot score this data" in decision.reason
    assert decision.reason.count("cannot score") == 1  # said once, then why
    assert f"{dropped}: not built" in decision.reason

    # The champion was trained without that input; the candidate's rows hold every other.
    name = "reg-inputs-subset"
    client.set_tag(first.run_id, TAG_FEATURE_SET, narrower.version)  # in the copied registry
    champion = walk(client, lake, first, name, "ci", None, LAX, auto_approval("ci")).version
    assert champion.version == current_champion(client, name).version
    candidate = register_version(client, name, second)
    decision = run_gate(client, lake, candidate, LAX, "ci")
    rows, spec = split_rows(trained_pair.feature_set, lake)
    _, without = load_feature_set(narrower, lake)
    own = model_input_frame(rows, without)
    assert dropped not in own and dropped in model_input_frame(rows, spec)
    scores = np.asarray(mlflow.pyfunc.load_model(first.model_uri).predict(own), dtype=float)
    labels = rows[spec.label.name].to_numpy(np.float64)
    assert decision.champion_auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
