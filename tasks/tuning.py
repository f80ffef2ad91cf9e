"""Tuning tasks: prepare the study's data once, then one task per trial."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, State

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.tracking import configure_mlflow, tracking_client
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import TrainedModel, train_and_log
from mlsys_core.tuning import data, report, study, trial
from mlsys_core.tuning.data import PreparedRef
from mlsys_core.tuning.report import StudyReport
from mlsys_core.tuning.study import StudyJob
from mlsys_core.tuning.trial import TrialOutcome
from tasks.base import task

# Every trial task carries this tag, so `prefect concurrency-limit create mlsys-tuning-trial N`
# caps trials across all tuning flow runs and machines at once.
TRIAL_TAG = "mlsys-tuning-trial"


@task
def prepare_tuning_data(features: FeatureSetRef, settings: Settings) -> PreparedRef:
    """Fit preprocessing on the training split once and cache the matrices for every trial."""
    return data.prepare_data(features, Lake(settings.lake_dir), settings.root / "tuning" / "data")


@task
def start_tuning_study(job: StudyJob, settings: Settings) -> StudyJob:
    """Create or resume the Optuna study and its MLflow parent run."""
    client = configure_mlflow(settings.tracking)
    experiment_id = client.get_experiment_by_name(settings.experiment).experiment_id
    return study.start_study(job, client, experiment_id)


# No cache: every call must run a new trial, though its inputs are the same.
@task(cache_policy=NO_CACHE, tags=[TRIAL_TAG])
def run_trial(job: StudyJob, settings: Settings, slot: int) -> TrialOutcome | State | None:
    """One trial against the shared study (None: the run's epoch budget was spent before
    it could start; Cancelled: the flow run was stopped); ``slot`` only tells the task runs
    apart."""
    try:
        return trial.run_trial(job, tracking_client(settings.mlflow_uri))
    except trial.TrialStopped as stop:
        return Cancelled(message=str(stop))


def trials_stop_on_exit(job: StudyJob, settings: Settings) -> AbstractContextManager[None]:
    """Not a task: the flow's ``with`` around waiting for its trials. A stopped flow run
    (SIGTERM, cancellation) stops them at their next epoch, their runs KILLED."""
    return trial.trials_stop_on_exit(job, tracking_client(settings.mlflow_uri))


@task
def finish_tuning_study(job: StudyJob, settings: Settings) -> StudyReport:
    """Pick the best trial, log the plots on the parent run, and summarize the best trials
    as a Prefect table."""
    result = report.finish_study(job, tracking_client(settings.mlflow_uri))
    key = re.sub(r"[^a-z0-9-]+", "-", f"tuning-{job.name}".lower()).strip("-")[:100]
    rows = [
        {
            "trial": r.number,
            "val_auc": round(r.val_auc, 5) if r.val_auc is not None else None,
            "n_params": r.n_params,
            "epochs": r.epochs,
            **{k: round(v, 6) if isinstance(v, float) else v for k, v in r.params.items()},
        }
        for r in result.top
    ]
    counts = ", ".join(f"{v} {k.lower()}" for k, v in result.counts.items())
    create_table_artifact(
        rows, key=key, description=f"Best trials of study {job.name!r} ({counts})"
    )
    create_markdown_artifact(
        "\n".join(
            [
                f"# Study `{job.name}`",
                f"- trials: {counts}",
                f"- best: trial {result.best_number}, val AUC {result.best_values[0]:.4f}",
                f"- best config: `{result.best_config.model_dump_json()}`",
                f"- MLflow parent run: `{result.parent_run_id}` "
                f"(plots: {', '.join(result.plots) or 'none'})",
                *(f"- plot skipped: {p}: {why}" for p, why in result.skipped_plots.items()),
            ]
        ),
        key=f"{key}-summary"[:100],
    )
    return result


@task
def train_best(
    features: FeatureSetRef,
    config: TrainConfig,
    job: StudyJob,
    result: StudyReport,
    settings: Settings,
) -> TrainedModel:
    """Train the best config as a normal training run, tagged with its study's lineage."""
    trained = train_and_log(
        features, config, Lake(settings.lake_dir), settings.tracking, run_name=f"tuned-{job.name}"
    )
    report.tag_final_run(tracking_client(settings.mlflow_uri), trained.run_id, job, result)
    return trained
