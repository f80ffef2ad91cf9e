"""The tune flow: parallel trial tasks under a concurrency limit, resume, failure isolation,
then the best config trained, tagged with its study and registered."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, TaskRunFilter
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from flows.tune import tune
from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.tracking import tracking_client
from mlsys_core.training.config import TrainConfig
from mlsys_core.tuning.space import Choice, SearchSpace
from mlsys_core.tuning.study import PARENT_RUN_TAG
from tasks.tuning import TRIAL_TAG

REPO = Path(__file__).resolve().parents[2]
BASE = TrainConfig(epochs=2, patience=2, device="cpu")


def _trial_task_runs(flow_run_id) -> list:  # noqa: ANN001
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}),
            task_run_filter=TaskRunFilter(tags={"all_": [TRIAL_TAG]}),
        )


def _max_overlap(runs: list) -> int:
    events = sorted(
        [(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


@pytest.mark.slow
def test_tune_runs_parallel_trials_resumes_and_registers_the_best(
    settings: Settings, make_feature_set: Callable[[Settings], FeatureSetRef]
):
    features = make_feature_set(settings)
    state = tune(
        features=features,
        sampler="tpe",
        pruner="hyperband",
        n_trials=4,
        parallelism=2,
        base_config=BASE,
        register_final=True,
        return_state=True,
    )
    result = state.result()
    assert len(result.trials) == 4 and result.failed == 0
    study = optuna.load_study(study_name=result.study, storage=settings.optuna_url())
    assert len(study.trials) == 4

    # Trials ran as Prefect task runs of this flow run, two at a time and never more.
    runs = _trial_task_runs(state.state_details.flow_run_id)
    assert len(runs) == 4 and all(r.state.is_completed() for r in runs)
    assert _max_overlap(runs) == 2

    # MLflow: every trial nested under the study's parent run, with per-epoch curves.
    mlflow = tracking_client(settings.mlflow_uri)
    parent = result.report.parent_run_id
    children = mlflow.search_runs(
        [mlflow.get_run(parent).info.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent}'",
    )
    assert len(children) == 4
    assert {o.mlflow_run_id for o in result.trials} == {r.info.run_id for r in children}
    for outcome in result.trials:
        history = mlflow.get_metric_history(outcome.mlflow_run_id, "val_auc")
        assert [m.step for m in history] == list(range(1, outcome.epochs + 1))
        if outcome.state == "COMPLETE":
            assert max(m.value for m in history) >= outcome.values[0] - 1e-12
    artifacts = {a.path for a in mlflow.list_artifacts(parent, "plots")}
    assert "plots/optimization_history.png" in artifacts
    assert "plots/parallel_coordinate.png" in artifacts

    # The best trial's config became a normal training run with lineage, then a version.
    best = study.best_trial
    assert result.report.best_number == best.number
    assert result.report.best_config.learning_rate == pytest.approx(best.params["learning_rate"])
    final = mlflow.get_run(result.trained.run_id)
    assert final.data.tags["mlsys.stage"] == "train"
    assert final.data.tags["mlsys.tuning.study"] == result.study
    assert final.data.tags["mlsys.tuning.parent_run"] == parent
    assert float(final.data.params["learning_rate"]) == pytest.approx(best.params["learning_rate"])
    assert result.registration.version.run_id == result.trained.run_id

    # A Prefect table of the best trials, best first.
    with get_client(sync_client=True) as client:
        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key={"any_": [f"tuning-{result.study}"]},
                flow_run_id={"any_": [state.state_details.flow_run_id]},
            )
        )
    assert len(tables) == 1 and tables[0].type == "table"
    rows = json.loads(tables[0].data)
    assert rows[0]["trial"] == best.number
    assert [r["val_auc"] for r in rows] == sorted((r["val_auc"] for r in rows), reverse=True)

    # Rerunning continues the same study under the same parent run.
    again = tune(features=features, n_trials=2, parallelism=2, base_config=BASE, train_final=False)
    assert again.study == result.study and again.report.parent_run_id == parent
    assert (
        len(optuna.load_study(study_name=result.study, storage=settings.optuna_url()).trials) == 6
    )
    assert sum(again.report.counts.values()) == 6
    assert again.trained is None and again.registration is None


def test_a_crashing_trial_is_failed_and_the_study_goes_on(
    settings: Settings, make_feature_set: Callable[[Settings], FeatureSetRef]
):
    # A batch size TrainConfig rejects: that grid point's trial crashes, the other trains.
    space = SearchSpace(
        learning_rate=None,
        width=None,
        depth=None,
        dropout=None,
        max_embedding_dim=None,
        weight_decay=None,
        batch_size=Choice(choices=[512, 4_000_000]),
    )
    result = tune(
        features=make_feature_set(settings),
        sampler="grid",
        pruner="none",
        n_trials=2,
        parallelism=1,
        space=space,
        base_config=TrainConfig(epochs=1, device="cpu"),
        train_final=False,
    )
    assert result.failed == 1 and len(result.trials) == 1
    assert result.trials[0].params == {"batch_size": 512}
    assert result.report.counts["FAIL"] == 1 and result.report.counts["COMPLETE"] == 1
    study = optuna.load_study(study_name=result.study, storage=settings.optuna_url())
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed[0].params == {"batch_size": 4_000_000}
    run = tracking_client(settings.mlflow_uri).get_run(failed[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert "batch_size" in run.data.tags["mlsys.tuning.error"]

    # When every trial of a run crashes, the cause is systematic: the flow fails with it.
    with pytest.raises(ValidationError, match="batch_size"):
        tune(
            features=make_feature_set(settings),
            sampler="random",
            pruner="none",
            n_trials=1,
            space=space.model_copy(update={"batch_size": Choice(choices=[4_000_000])}),
            study_name="all-crash",
            base_config=TrainConfig(epochs=1, device="cpu"),
            train_final=False,
        )


def test_tune_honours_its_epoch_budget_exactly(
    settings: Settings, make_feature_set: Callable[[Settings], FeatureSetRef]
):
    state = tune(
        features=make_feature_set(settings),
        sampler="random",
        pruner="none",
        n_trials=50,
        parallelism=2,
        epoch_budget=5,
        space=SearchSpace(width=Choice(choices=[16]), depth=None, batch_size=None),
        base_config=TrainConfig(epochs=2, patience=2, batch_size=2048, device="cpu"),
        study_name="budgeted",
        train_final=False,
        return_state=True,
    )
    result = state.result()
    # Two-epoch trials: two of them, then one that stops after the last epoch of the budget.
    assert sorted(t.epochs for t in result.trials) == [1, 2, 2]
    assert sum(t.epochs for t in result.trials) == 5
    assert result.failed == 0
    study = optuna.load_study(study_name="budgeted", storage=settings.optuna_url())
    assert len(study.trials) == 3
    # The flow stopped handing out trials once the budget was spent, long before n_trials.
    assert len(_trial_task_runs(state.state_details.flow_run_id)) <= 3 + 2


def test_tune_rejects_bad_parameters_before_running(settings: Settings):
    with pytest.raises(ParameterTypeError):
        tune(parallelism=0)
    with pytest.raises(ParameterTypeError):
        tune(sampler="annealing")


def test_tune_deployment_parameters_are_a_typed_form():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    deployment = next(d for d in deployments if d["name"] == "tune")
    assert deployment["entrypoint"] == "flows/tune.py:tune"
    tune.validate_parameters(deployment["parameters"])  # the defaults it ships are valid
    schema = parameter_schema(tune).model_dump()
    props = schema["properties"]
    enums = {
        name: schema["definitions"][props[name]["$ref"].split("/")[-1]].get("enum")
        if "$ref" in props[name]
        else props[name].get("enum")
        for name in ("sampler", "pruner")
    }
    assert set(enums["sampler"]) == {"grid", "random", "tpe", "gp", "cmaes", "nsga2"}
    assert set(enums["pruner"]) == {"none", "median", "successive_halving", "hyperband"}
    assert props["parallelism"]["minimum"] == 1 and props["n_trials"]["maximum"] == 1000
