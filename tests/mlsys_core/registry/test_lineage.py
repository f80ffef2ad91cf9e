"""One call, and one CLI command, answer where a registered model came from and went; the
model is registered and promoted through ``mlsys registry register``."""

from __future__ import annotations

import json

import pytest

from mlsys_core.cli import main
from mlsys_core.registry.lifecycle import Stage
from mlsys_core.registry.lineage import lineage, parse_model_uri, record_served_by
from mlsys_core.registry.promotion import WalkResult
from mlsys_core.tracking import tracking_client


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/flight-delay@champion") == ("flight-delay", "champion", None)
    assert parse_model_uri("models:/flight-delay/3") == ("flight-delay", None, "3")
    for bad in ("models:/x", "runs:/abc/model", "models:/x/latest", "flight-delay@champion"):
        with pytest.raises(ValueError, match="is not models:/"):
            parse_model_uri(bad)


@pytest.mark.slow
def test_lineage_of_the_champion_and_the_cli(
    backend, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    client = tracking_client(backend.settings.mlflow_uri)
    name = f"lin-{tmp_path.name}"
    trained, fs = backend.models[0], backend.feature_set
    monkeypatch.setenv("MLSYS_STATE_DIR", str(backend.settings.state_dir))
    if backend.settings.tracking_uri:
        monkeypatch.setenv("MLSYS_TRACKING_URI", backend.settings.tracking_uri)
    # The tuning helper tags the final training run with its study.
    client.set_tag(trained.run_id, "mlsys.tuning.study", "study-x")
    try:
        command = ["registry", "register", "--run", trained.run_id, "--model", name]
        assert main([*command, "--approve", "--actor", "ci", "--json"]) == 0
    finally:
        client.delete_tag(trained.run_id, "mlsys.tuning.study")
    walked = WalkResult.model_validate_json(capsys.readouterr().out.splitlines()[-1])
    version, decision = walked.version, walked.decision
    assert walked.stage == Stage.PRODUCTION
    first = record_served_by(client, name, version.version, "serving/canary")
    again = record_served_by(client, name, version.version, "serving/canary")
    assert again.first_seen == first.first_seen <= again.last_seen

    found = lineage(client, f"models:/{name}@champion")
    assert (found.name, found.version, found.semver) == (name, version.version, "1.0.0")
    assert found.stage == Stage.PRODUCTION
    assert {"champion", "production", "challenger"} <= set(found.aliases)
    assert found.raw_snapshots == fs.raw_snapshots
    assert found.clean_snapshots == fs.clean_snapshots
    assert found.feature_set == fs.version
    assert found.spec_fingerprint == fs.spec_fingerprint
    assert found.run_id == trained.run_id
    assert found.run_params["epochs"] == "2" and found.run_params["feature_set"] == fs.version
    assert found.run_metrics["test_auc"] == pytest.approx(trained.metrics["test_auc"])
    assert found.tuning is not None and found.tuning.study == "study-x"
    assert found.gate == decision
    assert found.approval is not None and found.approval.auto
    assert [s.deployment for s in found.served_by] == ["serving/canary"]
    assert [e.action for e in found.history] == [
        "register",
        "transition",
        "gate",
        "transition",
        "approval",
        "transition",
    ]
    assert lineage(client, f"models:/{name}/{version.version}").model_dump(
        exclude={"uri"}
    ) == found.model_dump(exclude={"uri"})

    assert main(["lineage", f"models:/{name}@champion"]) == 0
    text = capsys.readouterr().out
    for expected in (f"{name} v{version.version}", fs.version, trained.run_id, "study-x"):
        assert expected in text
    assert "serving/canary" in text and "production" in text
    assert main(["lineage", f"models:/{name}@champion", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == version.version
    assert main(["history", name]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["action"] for line in lines][:3] == ["register", "transition", "gate"]

    assert main(["lineage", f"models:/{name}@nope"]) == 2
    assert f"no model version at models:/{name}@nope" in capsys.readouterr().err
    assert main(["lineage", "flight-delay"]) == 2
    assert "is not models:/" in capsys.readouterr().err
