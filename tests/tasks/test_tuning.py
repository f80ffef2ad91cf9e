"""Tuning tasks: the study summary becomes Prefect artifacts whatever the study is called."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter

from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training.config import TrainConfig
from mlsys_core.tuning.samplers import PrunerConfig, SearchConfig
from mlsys_core.tuning.space import Choice, SearchSpace
from mlsys_core.tuning.study import StudyJob
from tasks.tuning import finish_tuning_study, prepare_tuning_data, run_trial, start_tuning_study


def test_study_summary_artifacts_for_any_study_name(
    settings: Settings, make_feature_set: Callable[[Settings], FeatureSetRef]
):
    features = make_feature_set(settings)
    job = StudyJob(
        name="Flights Q4/2026_v2",  # not a valid artifact key as it stands
        storage=settings.optuna_url(),
        search=SearchConfig(pruner=PrunerConfig(name="none")),
        space=SearchSpace(width=Choice(choices=[16]), depth=None, batch_size=None),
        base=TrainConfig(epochs=1, batch_size=2048, device="cpu"),
        data=prepare_tuning_data.fn(features, settings),
    )
    job = start_tuning_study.fn(job, settings)
    outcome = run_trial.fn(job, settings, slot=0)
    report = finish_tuning_study.fn(job, settings)
    assert report.best_number == outcome.number

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key={"any_": ["tuning-flights-q4-2026-v2", "tuning-flights-q4-2026-v2-summary"]}
            )
        )
    kinds = {a.key: a.type for a in found}
    assert kinds == {
        "tuning-flights-q4-2026-v2": "table",
        "tuning-flights-q4-2026-v2-summary": "markdown",
    }
    summary = next(a for a in found if a.type == "markdown")
    assert f"trial {outcome.number}" in summary.data and report.parent_run_id in summary.data
