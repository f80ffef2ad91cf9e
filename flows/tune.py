"""Tune: an Optuna study whose trials run as parallel Prefect tasks, then the best config as
a normal training run, registered through the register flow.

Rerunning with the same study name (the default derives it from the feature-set version)
continues the study. Workers elsewhere join it by running this flow with the same
``study_name`` and a shared ``storage`` URL (Postgres, for many machines).

With ``epoch_budget``, the run trains at most that many epochs over all its trials (the
trial that would pass it stops before that epoch) and starts no trial once it is spent.
"""

from __future__ import annotations

import time
from typing import Annotated

from prefect.futures import PrefectFuture, as_completed, wait
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from flows.embedded import embedded_run, flow
from flows.register import RegistrationResult, register
from mlsys_core.config import Settings
from mlsys_core.datasets import SpecRef, spec_or_default
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.run import TrainedModel
from mlsys_core.tuning.report import StudyReport
from mlsys_core.tuning.samplers import (
    Objectives,
    PrunerConfig,
    PrunerName,
    SamplerConfig,
    SamplerName,
    SearchConfig,
)
from mlsys_core.tuning.space import SearchSpace
from mlsys_core.tuning.study import StudyJob, redacted
from mlsys_core.tuning.trial import TrialOutcome
from tasks.features import latest_feature_set
from tasks.metrics import metered
from tasks.tuning import (
    finish_tuning_study,
    prepare_tuning_data,
    run_trial,
    start_tuning_study,
    train_best,
    trials_stop_on_exit,
)

MAX_PARALLELISM = 32


class TuningResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    study: str
    storage: str
    trials: list[TrialOutcome] = Field(description="Trials this flow run finished.")
    failed: int = Field(description="Trials of this flow run that crashed (marked FAIL).")
    trials_seconds: float
    report: StudyReport
    trained: TrainedModel | None
    registration: RegistrationResult | None


@flow(name="tune", log_prints=True)
@metered(rows=lambda r: r.trained.feature_set.snapshot.rows if r.trained else None)
def tune(
    features: FeatureSetRef | None = None,
    sampler: SamplerName = "tpe",
    pruner: PrunerName = "hyperband",
    n_trials: Annotated[int, Field(ge=1, le=1000)] = 20,
    parallelism: Annotated[int, Field(ge=1, le=MAX_PARALLELISM)] = 2,
    epoch_budget: Annotated[int | None, Field(ge=1)] = None,
    objectives: Objectives = "auc",
    space: SearchSpace = SearchSpace(),
    base_config: TrainConfig = TrainConfig(),
    study_name: str | None = None,
    storage: str | None = None,
    seed: int | None = 0,
    min_resource: Annotated[int, Field(ge=1)] = PrunerConfig().min_resource,
    reduction_factor: Annotated[int, Field(ge=2, le=10)] = PrunerConfig().reduction_factor,
    train_final: bool = True,
    register_final: bool = True,
    model_name: str | None = None,
    spec: SpecRef | None = None,
) -> TuningResult:
    """Run up to ``n_trials`` more trials, at most ``parallelism`` at once and at most
    ``epoch_budget`` training epochs in all, then train and register the best config
    (``base_config.epochs`` is also the pruners' maximum resource; ``min_resource`` and
    ``reduction_factor`` shape Hyperband and successive halving)."""
    settings = Settings()
    search = SearchConfig(
        sampler=SamplerConfig(name=sampler, seed=seed),
        pruner=PrunerConfig(
            name=pruner, min_resource=min_resource, reduction_factor=reduction_factor
        ),
        objectives=objectives,
    )
    if features is None:
        features = latest_feature_set(spec_or_default(spec, settings.dataset).name, settings)
    name = study_name or f"{features.snapshot.table}-{features.version[:12]}" + (
        "" if objectives == "auc" else f"-{objectives}"
    )
    prepared = prepare_tuning_data(features, settings)
    job = StudyJob(
        name=name,
        storage=settings.optuna_url(storage),
        search=search,
        space=space,
        base=base_config,
        data=prepared,
        epoch_budget=epoch_budget,
    )
    job = start_tuning_study(job, settings)

    start = time.perf_counter()
    futures: list[PrefectFuture[TrialOutcome | None]] = []
    # Leaving by a signal stops the trials first; the runner's exit then waits for them.
    with (
        ThreadPoolTaskRunner(max_workers=parallelism) as runner,
        trials_stop_on_exit(job, settings),
    ):
        running: list[PrefectFuture[TrialOutcome | None]] = []
        spent = False
        for slot in range(n_trials):
            # A new trial only when a worker is free and the budget is not known spent.
            while len(running) >= parallelism and not spent:
                done = next(as_completed(running))
                running.remove(done)
                spent = _budget_spent(done)
            if spent:
                break
            future = runner.submit(run_trial, {"job": job, "settings": settings, "slot": slot})
            futures.append(future)
            running.append(future)
        wait(futures)
    trials_seconds = time.perf_counter() - start
    # A crashed trial is FAIL in the study; the others stand (failure isolation). When every
    # trial of this run crashed the cause is systematic: fail with the first trial's error.
    finished = [f.result() for f in futures if f.state.is_completed()]
    failed = len(futures) - len(finished)
    outcomes = [o for o in finished if o is not None]  # None: the budget was spent first
    if failed and failed == len(futures):
        futures[0].result()
    report = finish_tuning_study(job, settings)
    print(
        f"study {name!r} ({redacted(job.storage)}): this run {len(outcomes)} trials done, "
        f"{failed} failed; best trial {report.best_number}, val AUC "
        f"{report.best_values[0]:.4f}; study counts {report.counts}"
    )

    trained = registration = None
    if train_final:
        trained = train_best(features, report.best_config, job, report, settings)
        print(f"final run {trained.run_id}: test AUC {trained.metrics['test_auc']:.4f}")
        if register_final:
            registration = register(trained, model_name)
    return TuningResult(
        study=name,
        storage=redacted(job.storage),
        trials=outcomes,
        failed=failed,
        trials_seconds=trials_seconds,
        report=report,
        trained=trained,
        registration=registration,
    )


def _budget_spent(future: PrefectFuture[TrialOutcome | None]) -> bool:
    """Whether a finished trial task says the run's epoch budget is spent."""
    future.wait()  # its final state from the thread, not the API's (which may lag behind)
    if not future.state.is_completed():
        return False
    outcome = future.result()
    return outcome is None or outcome.budget_left == 0


if __name__ == "__main__":
    with embedded_run():
        tune()
