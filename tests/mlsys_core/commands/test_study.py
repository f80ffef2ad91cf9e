"""``mlsys study`` reads a study from its storage, as a worker on another machine would."""

from __future__ import annotations

import json

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from mlsys_core.cli import main


def test_study_command_lists_and_describes_studies(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLSYS_STATE_DIR", str(tmp_path))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s1", storage=storage, direction="maximize")
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    for value, state in [
        (0.61, TrialState.COMPLETE),
        (0.67, TrialState.COMPLETE),
        (None, TrialState.FAIL),
    ]:
        study.add_trial(
            create_trial(
                params={"learning_rate": 1e-3},
                distributions={"learning_rate": lr},
                value=value,
                state=state,
            )
        )

    assert main(["study"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"study": "s1", "trials": 3}]

    assert main(["study", "s1", "--top", "1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["trials"] == {"COMPLETE": 2, "FAIL": 1}
    assert [row["val_auc"] for row in shown["best"]] == [0.67]

    assert main(["study", "missing"]) == 2
    assert "no study 'missing'" in capsys.readouterr().err
