"""One trial: draw a config, train it on the study's cached matrices, report every epoch's
validation AUC to the pruner, and log it all as an MLflow run nested under the study's parent.

With an epoch budget, every epoch is taken from the run's ledger just before it trains: a
trial that finds the budget spent before its first epoch does not start, and one that finds
it spent later stops there (PRUNED, ``stopped_by`` = ``budget``).

A run that is stopped (a SIGTERM to the flow, a cancelled flow run) stops its trials at their
next epoch: each ends ``FAIL`` in the study and ``KILLED`` in MLflow, instead of training on
to the end while the stopped flow waits for it.

MLflow's fluent API keeps its active-run stack per thread, and trials run on many threads,
so everything here goes through ``MlflowClient`` with explicit run ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from mlsys_core.training.matrices import model_config_for
from mlsys_core.training.trainer import EpochMetrics, Trainer, TrainResult
from mlsys_core.tuning.budget import EpochBudget, budget_for, drop_budget
from mlsys_core.tuning.data import load_prepared
from mlsys_core.tuning.space import suggest
from mlsys_core.tuning.study import (
    PARENT_RUN_TAG,
    TAG_FEATURE_SET,
    TAG_STAGE,
    TAG_STUDY,
    TAG_TRIAL,
    StudyJob,
    TuningError,
    open_study,
)

log = logging.getLogger(__name__)

TAG_STATE = "mlsys.tuning.state"
FLUSH_SECONDS = 10.0
_SETUP_LOCK = threading.Lock()
# Run keys of the stopped runs of this process: a few short strings, kept, so that a trial
# thread that starts after its run was stopped is refused too.
_stopped: set[str] = set()


class TrialStopped(Exception):
    """The run this trial belongs to was stopped."""


def stop_trials(job: StudyJob, client: MlflowClient, status: str = "KILLED") -> None:
    """Stop this run's trials at their next epoch and end the study's parent run with
    ``status`` (a resumed or parallel run sets it running again)."""
    if job.run_key is None:  # not started: no trial of it can run
        return
    _stopped.add(job.run_key)
    drop_budget(job.run_key)  # its trials keep the ledger they hold
    try:
        client.set_terminated(str(job.parent_run_id), status)
    except MlflowException as err:
        # The stop itself must not fail: the caller is leaving on an exception of its own.
        log.warning("could not end the parent run of tuning run %s: %s", job.run_key, err)


@contextmanager
def trials_stop_on_exit(job: StudyJob, client: MlflowClient) -> Iterator[None]:
    """Around the wait for a run's trials, inside the executor's ``with``: leaving it by an
    exception stops the trials before the executor waits for them. A signal (Prefect turns
    SIGTERM into ``TerminationSignal``) ends the parent run KILLED, an error FAILED."""
    try:
        yield
    except BaseException as exc:
        stop_trials(job, client, "FAILED" if isinstance(exc, Exception) else "KILLED")
        raise


class TrialOutcome(BaseModel):
    """What one trial did, for the flow's summary and the benchmark's accounting."""

    model_config = ConfigDict(frozen=True)

    number: int
    state: Literal["COMPLETE", "PRUNED", "FAIL"]
    values: list[float] | None
    params: dict[str, Any]
    epochs: int
    train_seconds: float
    trial_seconds: float
    mlflow_run_id: str | None
    budget_left: int | None = None  # epochs the run may still train after this trial


def run_trial(job: StudyJob, client: MlflowClient) -> TrialOutcome | None:
    """Run one trial of the job's study (``study.optimize(n_trials=1)``), logging to MLflow
    through ``client``; None, without starting a trial, when the run's epoch budget is spent.

    A crash marks the trial FAIL in the study and its MLflow run FAILED, then propagates:
    the caller decides whether the study goes on (the tune flow does). Pruning is not a
    crash: the trial is PRUNED and this returns normally.
    """
    if job.experiment_id is None or job.parent_run_id is None or job.run_key is None:
        raise TuningError("run_trial needs a started job: call start_study first")
    if job.run_key in _stopped:
        raise TrialStopped(f"tuning run {job.run_key} was stopped; no trial starts")
    started = time.perf_counter()
    budget = budget_for(job.run_key, job.epoch_budget) if job.epoch_budget else None
    if budget is not None and not budget.take():  # the first epoch, before any trial exists
        return None
    study = open_study(job)
    seen: dict[str, Any] = {"epochs": 0, "train_seconds": 0.0, "run_id": None}
    curves = _Curves(client)

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        run_id = _start_trial_run(client, job, trial.number)
        seen["run_id"] = curves.run_id = run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        status = "FAILED"
        try:
            values = _train_trial(trial, job, client, run_id, seen, curves, budget)
            status = "FINISHED"
            return values
        except optuna.TrialPruned:
            status = "KILLED"
            client.set_tag(run_id, TAG_STATE, "PRUNED")
            raise
        except TrialStopped:
            status = "KILLED"
            client.set_tag(run_id, TAG_STATE, "STOPPED")
            raise
        except Exception as exc:
            client.set_tag(run_id, TAG_STATE, "FAIL")
            client.set_tag(run_id, "mlsys.tuning.error", repr(exc)[:4000])
            raise
        finally:
            curves.pending.append(
                Metric("train_seconds", seen["train_seconds"], int(time.time() * 1000), 0)
            )
            curves.flush()
            client.set_terminated(run_id, status)

    try:
        study.optimize(objective, n_trials=1)  # first fails the trials of dead workers
    finally:
        _end_lost_trial_runs(study, job, client)
    trial = _this_trial(study, seen["run_id"])
    return TrialOutcome(
        number=trial.number,
        state=trial.state.name,
        values=trial.values,
        params=trial.params,
        epochs=seen["epochs"],
        train_seconds=seen["train_seconds"],
        trial_seconds=time.perf_counter() - started,
        mlflow_run_id=seen["run_id"],
        budget_left=None if budget is None else budget.left,
    )


def _train_trial(
    trial: optuna.Trial,
    job: StudyJob,
    client: MlflowClient,
    run_id: str,
    seen: dict[str, Any],
    curves: _Curves,
    budget: EpochBudget | None,
) -> float | tuple[float, float]:
    config = suggest(trial, job.space, job.base)
    client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in {**config.model_dump(), **trial.params}.items()],
    )
    data = load_prepared(job.data.path)
    model_config = model_config_for(job.data.cardinalities, job.data.n_numeric, config)
    single = job.search.objectives == "auc"
    # Optuna prunes single-objective studies only; a Pareto search trains every trial.
    gate = EpochGate(trial, budget, prune=single, run_key=job.run_key)
    outside = 0.0  # seconds spent in the epoch callback: logging and pruning, not training

    def on_epoch(m: EpochMetrics) -> None:
        nonlocal outside
        start = time.perf_counter()
        seen["epochs"] = m.epoch
        stamp = int(time.time() * 1000)
        curves.add(
            Metric("train_loss", m.train_loss, stamp, m.epoch),
            Metric("val_loss", m.val_loss, stamp, m.epoch),
            Metric("val_auc", m.val_auc, stamp, m.epoch),
        )
        try:
            gate.after(m.epoch, m.val_auc)
        finally:
            outside += time.perf_counter() - start

    trainer = Trainer(config, model_config)
    start = time.perf_counter()
    try:
        # setup seeds the process-wide RNGs and draws the initial weights from them: one
        # trial thread at a time, so parallel trials start from their seed's weights.
        # (Dropout masks still come from the shared RNG while trials train side by side.)
        with _SETUP_LOCK:
            trainer.setup(data.x_train, data.y_train, data.x_valid, data.y_valid)
        result = trainer.train(on_epoch=on_epoch, before_epoch=gate.before)
    finally:
        seen["train_seconds"] = time.perf_counter() - start - outside
    if result.refused:
        # Cut short by the budget: its AUC is not that of its full schedule.
        trial.set_user_attr("stopped_by", "budget")
        trial.set_user_attr("epochs", len(result.history))
        raise optuna.TrialPruned(f"epoch budget spent after epoch {len(result.history)}")
    auc = objective_auc(result)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    trial.set_user_attr("n_params", n_params)
    trial.set_user_attr("epochs", len(result.history))
    stamp = int(time.time() * 1000)
    curves.pending += [
        Metric("val_auc_best", auc, stamp, 0),
        Metric("n_params", float(n_params), stamp, 0),
        Metric("best_epoch", float(result.best_epoch), stamp, 0),
    ]
    return auc if single else (auc, float(n_params))


class EpochGate:
    """What a trial does around each epoch, in one place so that ``bench/tuning_replay.py``
    budgets and prunes a replayed trial exactly as a trained one.

    ``run_trial`` takes the first epoch from the budget before the trial exists (a spent
    budget starts no trial); every later epoch is taken just before it trains. After each
    epoch a pruned study hears its validation AUC and may stop the trial there.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        budget: EpochBudget | None,
        prune: bool,
        run_key: str | None = None,
    ) -> None:
        self.trial, self.budget, self.prune, self.run_key = trial, budget, prune, run_key

    def before(self, epoch: int) -> bool:
        """May ``epoch`` train? False when the budget is spent (the trainer stops there);
        :class:`TrialStopped` when the run was stopped."""
        if self.run_key in _stopped:
            raise TrialStopped(f"tuning run {self.run_key} was stopped before epoch {epoch}")
        return self.budget is None or epoch == 1 or self.budget.take()

    def after(self, epoch: int, val_auc: float) -> None:
        """Report the finished epoch; raise ``optuna.TrialPruned`` when the pruner stops it."""
        if not self.prune:
            return
        self.trial.report(val_auc, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}, val AUC {val_auc:.4f}")


def objective_auc(result: TrainResult) -> float:
    """A finished trial's objective. The trainer keeps the weights of its best epoch (lowest
    validation loss): that model's AUC is what the final training run would reproduce."""
    return result.history[result.best_epoch - 1].val_auc if result.best_epoch else float("nan")


class _Curves:
    """Per-epoch metrics, written at most every ``FLUSH_SECONDS`` and when the trial ends.

    One MLflow write per epoch cost a large share of a short trial (a SQLite commit each);
    long epochs still show live curves.
    """

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.run_id = client, ""
        self.pending: list[Metric] = []
        self.flushed_at = time.monotonic()

    def add(self, *metrics: Metric) -> None:
        self.pending += metrics
        if time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending = []
        self.flushed_at = time.monotonic()


def _start_trial_run(client: MlflowClient, job: StudyJob, number: int) -> str:
    run = client.create_run(
        job.experiment_id,
        run_name=f"{job.name}-trial-{number}",
        tags={
            PARENT_RUN_TAG: str(job.parent_run_id),
            TAG_STAGE: "tune-trial",
            TAG_STUDY: job.name,
            TAG_TRIAL: str(number),
            TAG_FEATURE_SET: job.data.feature_set,
        },
    )
    return run.info.run_id


def _end_lost_trial_runs(study: optuna.Study, job: StudyJob, client: MlflowClient) -> None:
    """End KILLED (state ``LOST``) the MLflow runs of trials whose worker died outright.

    Optuna's heartbeat marks such a trial FAIL once its grace period is over, when the next
    trial starts; its MLflow run had no process left to end it and stayed RUNNING. Only the
    runs under this tracking store's parent: each store's runs are ended by its workers.

    The failed trials are read before the running runs: a live worker ends its run before
    Optuna fails its trial, so a run still RUNNING after its trial was already FAIL has no
    worker. Read the other way round, a trial stopped in another thread between the two
    reads would be taken for lost and its STOPPED state overwritten.
    """
    try:
        failed = {
            t.number
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        }
        if not failed:
            return
        runs = client.search_runs(
            [str(job.experiment_id)],
            filter_string=(
                f"tags.`{PARENT_RUN_TAG}` = '{job.parent_run_id}'"
                f" and tags.`{TAG_STAGE}` = 'tune-trial' and attributes.status = 'RUNNING'"
            ),
        )
        for run in runs:
            if int(run.data.tags.get(TAG_TRIAL, -1)) in failed:
                client.set_tag(run.info.run_id, TAG_STATE, "LOST")
                client.set_terminated(run.info.run_id, "KILLED")
    except MlflowException as err:
        # Housekeeping: the trial this worker ran is what its caller needs.
        log.warning("could not end the runs of lost trials of %s: %s", job.name, err)


def _this_trial(study: optuna.Study, run_id: str | None) -> optuna.trial.FrozenTrial:
    for trial in reversed(study.get_trials(deepcopy=False)):
        if run_id and trial.user_attrs.get("mlflow_run_id") == run_id:
            return trial
    raise RuntimeError("the trial this worker ran is not in the study")  # pragma: no cover
