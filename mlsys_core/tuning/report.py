"""After the trials: the best config, a summary of the best trials, and the study's plots on
the MLflow parent run."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # plots are written to files; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization.matplotlib as optuna_plots  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from pydantic import BaseModel, ConfigDict  # noqa: E402

from mlsys_core.training.config import TrainConfig  # noqa: E402
from mlsys_core.tuning.budget import drop_budget  # noqa: E402
from mlsys_core.tuning.space import config_from_params  # noqa: E402
from mlsys_core.tuning.study import (  # noqa: E402
    TAG_PARENT,
    TAG_STORAGE,
    TAG_STUDY,
    TAG_TRIAL,
    StudyJob,
    TuningError,
    open_storage,
    open_study,
    redacted,
)


class TrialRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: int
    state: str
    val_auc: float | None
    n_params: int | None
    epochs: int | None
    params: dict[str, Any]


class StudyReport(BaseModel):
    """The study after this run's trials: counts, the pick for the final run, the best rows."""

    model_config = ConfigDict(frozen=True)

    study: str
    parent_run_id: str
    counts: dict[str, int]
    best_number: int
    best_values: list[float]
    best_config: TrainConfig
    top: list[TrialRow]
    plots: list[str]
    skipped_plots: dict[str, str]


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The trial the final run trains: the best AUC, or on a Pareto front (AUC vs size) the
    front's highest-AUC trial, ties going to the smaller model."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not [t for t in complete if not math.isnan(t.values[0])]:
        raise TuningError(f"study {study.study_name!r} has no completed trial to pick from")
    if len(study.directions) == 1:
        return study.best_trial
    return max(study.best_trials, key=lambda t: (t.values[0], -t.values[1]))


def summarize(study: optuna.Study, top: int = 10) -> list[TrialRow]:
    """The ``top`` finished trials by validation AUC, best first."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not math.isnan(t.values[0])
    ]
    complete.sort(key=lambda t: -t.values[0])
    return [
        TrialRow(
            number=t.number,
            state=t.state.name,
            val_auc=t.values[0],
            n_params=t.user_attrs.get("n_params"),
            epochs=t.user_attrs.get("epochs"),
            params=t.params,
        )
        for t in complete[:top]
    ]


def finish_study(job: StudyJob, client: MlflowClient, top: int = 10) -> StudyReport:
    """Pick the best trial, log counts and plots on the parent run, and close it."""
    if job.parent_run_id is None:
        raise TuningError("finish_study needs a started job: call start_study first")
    if job.run_key is not None:
        drop_budget(job.run_key)
    study = open_study(job)
    best = best_trial(study)
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    stamp = int(time.time() * 1000)
    metrics = {f"trials_{k.lower()}": float(v) for k, v in counts.items()}
    metrics |= {"best_val_auc": best.values[0], "best_trial": float(best.number)}
    client.log_batch(
        job.parent_run_id, metrics=[Metric(k, v, stamp, 0) for k, v in metrics.items()]
    )
    client.set_tag(job.parent_run_id, "mlsys.tuning.best_params", str(best.params)[:4000])
    plots, skipped = log_plots(client, job.parent_run_id, study)
    client.set_terminated(job.parent_run_id, "FINISHED")
    return StudyReport(
        study=job.name,
        parent_run_id=job.parent_run_id,
        counts=counts,
        best_number=best.number,
        best_values=list(best.values),
        best_config=config_from_params(best.params, job.base),
        top=summarize(study, top),
        plots=plots,
        skipped_plots=skipped,
    )


def log_plots(
    client: MlflowClient, run_id: str, study: optuna.Study
) -> tuple[list[str], dict[str, str]]:
    """Optimization history, parallel coordinates and parameter importances as PNGs.

    A plot Optuna cannot draw yet (importances need two finished trials with different
    params) is skipped with its reason, not failed: the study's results stand without it.
    """
    target: dict[str, Any] = {}
    if len(study.directions) > 1:  # plot the AUC axis of a Pareto study
        target = {"target": lambda t: t.values[0], "target_name": "val AUC"}
    makers: dict[str, Callable[[], Any]] = {
        "plots/optimization_history.png": lambda: optuna_plots.plot_optimization_history(
            study, **target
        ),
        "plots/parallel_coordinate.png": lambda: optuna_plots.plot_parallel_coordinate(
            study, **target
        ),
        # fANOVA: variance-based, so it needs no "lower is better" convention (Optuna's
        # default evaluator ranks by what gives low values, wrong for an AUC target).
        "plots/param_importances.png": lambda: optuna_plots.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), **target
        ),
    }
    logged, skipped = [], {}
    for path, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                skipped[path] = f"{type(exc).__name__}: {exc}"
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(10, 6)
        figure.tight_layout()
        client.log_figure(run_id, figure, path)
        plt.close(figure)
        logged.append(path)
    return logged, skipped


def tag_final_run(client: MlflowClient, run_id: str, job: StudyJob, report: StudyReport) -> None:
    """Lineage from the final training run back to its study, parent run and best trial
    (registration copies ``mlsys.tuning.study`` onto the model version)."""
    tags = {
        TAG_STUDY: job.name,
        TAG_STORAGE: redacted(job.storage),
        TAG_PARENT: report.parent_run_id,
        TAG_TRIAL: str(report.best_number),
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def list_studies(storage: str) -> list[dict[str, Any]]:
    """Every study in a storage with its trial count."""
    summaries = optuna.get_all_study_summaries(open_storage(storage), include_best_trial=False)
    return [{"study": s.study_name, "trials": s.n_trials} for s in summaries]


def describe_study(storage: str, name: str, top: int = 5) -> dict[str, Any]:
    """A study's trial counts by state and its best trials, as plain data."""
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError as exc:
        raise LookupError(f"no study {name!r} in {redacted(storage)}") from exc
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return {
        "study": name,
        "storage": redacted(storage),
        "directions": [d.name.lower() for d in study.directions],
        "trials": counts,
        "best": [row.model_dump() for row in summarize(study, top)],
    }
