"""Studies live in Optuna RDB storage, so any worker that knows the study name and the storage
URL can join: threads of one flow run, processes, or machines sharing a Postgres database.

``load_if_exists`` makes a rerun continue the study instead of starting over, and each
process keeps one ``Study`` per job, so its trial threads share one sampler (and its state).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import warnings

import optuna
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from mlsys_core.training.config import TrainConfig
from mlsys_core.tuning.data import PreparedRef
from mlsys_core.tuning.samplers import SearchConfig, make_pruner, make_sampler
from mlsys_core.tuning.space import SearchSpace

# MLflow tags on the tuning parent run, its trial runs and the final training run.
TAG_STAGE = "mlsys.stage"
TAG_STUDY = "mlsys.tuning.study"
TAG_STORAGE = "mlsys.tuning.storage"
TAG_PARENT = "mlsys.tuning.parent_run"
TAG_TRIAL = "mlsys.tuning.trial"
TAG_FEATURE_SET = "mlsys.feature_set"
PARENT_RUN_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by
# Study user attribute: the MLflow parent run every worker nests its trials under.
PARENT_RUN_ATTR = "mlflow_parent_run_id"

# A worker that dies mid-trial stops its heartbeat; after the grace period the next worker
# that starts a trial marks that trial FAIL instead of leaving it RUNNING forever.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120


class TuningError(ValueError):
    """A study that cannot be opened or used as asked (bad storage, mismatched study)."""


class StudyJob(BaseModel):
    """Everything a trial needs, small and serializable: a task parameter, not an object."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    storage: str
    search: SearchConfig = SearchConfig()
    space: SearchSpace = SearchSpace()
    base: TrainConfig = TrainConfig()
    data: PreparedRef
    epoch_budget: int | None = Field(
        default=None,
        ge=1,
        description="Training epochs this run's trials may spend in all (None: no limit); "
        "the trial that would exceed it stops before that epoch.",
    )
    experiment_id: str | None = None
    parent_run_id: str | None = None
    run_key: str | None = Field(
        default=None, description="This tuning run's key (its epoch budget's), set by start_study."
    )


def redacted(url: str) -> str:
    """The storage URL without its password, fit for tags and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable storage URL>"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    try:
        is_sqlite = make_url(url).get_backend_name() == "sqlite"
    except ArgumentError as exc:
        raise TuningError(f"not a database URL for Optuna storage: {redacted(url)}") from exc
    # SQLite takes one writer at a time; parallel trials wait for the lock instead of failing.
    engine = {"connect_args": {"timeout": 60}} if is_sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
            )
        except (SQLAlchemyError, ImportError) as exc:
            raise TuningError(f"cannot open Optuna storage {redacted(url)}: {exc}") from exc


_studies: dict[str, optuna.Study] = {}
_studies_lock = threading.Lock()


def open_study(job: StudyJob) -> optuna.Study:
    """This process's handle on the job's study, created on first use (then loaded)."""
    key = job.model_dump_json(include={"name", "storage", "search", "space"}) + str(job.base.epochs)
    with _studies_lock:
        if key not in _studies:
            _studies[key] = _create_or_load(job)
        return _studies[key]


def _create_or_load(job: StudyJob) -> optuna.Study:
    storage = open_storage(job.storage)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=job.name,
            directions=job.search.directions,
            pruner=make_pruner(job.search.pruner, job.base.epochs),
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. an existing study with other directions
        raise TuningError(f"cannot use study {job.name!r}: {exc}") from exc
    if [d.name.lower() for d in study.directions] != job.search.directions:
        raise TuningError(
            f"study {job.name!r} exists with directions "
            f"{[d.name.lower() for d in study.directions]}, this job needs "
            f"{job.search.directions}: pick another study name"
        )
    # Seed per process from the trials already there, so a resumed study or a second worker
    # does not replay the draws the first one made.
    done = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(job.search.sampler, job.space, seed_offset=done)
    return study


def forget_studies() -> None:
    """Drop this process's study handles (a fresh sampler next time)."""
    with _studies_lock:
        _studies.clear()


def start_study(job: StudyJob, client: MlflowClient, experiment_id: str) -> StudyJob:
    """Open or resume the study and its MLflow parent run in ``experiment_id``; the job
    returned carries both, and this run's key.

    A resumed study keeps its parent run, so every trial of a study, whichever run or worker
    made it, is nested under one parent.
    """
    study = open_study(job)
    # Keyed by tracking store: workers that log to different MLflow stores keep their own
    # parent run instead of overwriting each other's.
    store = hashlib.sha256(client.tracking_uri.encode()).hexdigest()[:12]
    attr = f"{PARENT_RUN_ATTR}:{store}"
    parent = _existing_parent(client, study.user_attrs.get(attr))
    if parent is None:
        run = client.create_run(
            experiment_id,
            run_name=f"tune-{job.name}",
            tags={
                TAG_STAGE: "tune",
                TAG_STUDY: job.name,
                TAG_STORAGE: redacted(job.storage),
                TAG_FEATURE_SET: job.data.feature_set,
            },
        )
        parent = run.info.run_id
        params = {
            "sampler": job.search.sampler.name,
            "pruner": job.search.pruner.name,
            "objectives": job.search.objectives,
            "max_epochs": job.base.epochs,
            "space": job.space.model_dump_json(exclude_none=True),
        }
        client.log_batch(parent, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        study.set_user_attr(attr, parent)
    else:
        client.update_run(parent, status="RUNNING")
    return job.model_copy(
        update={
            "experiment_id": experiment_id,
            "parent_run_id": parent,
            "run_key": f"{parent}-{uuid.uuid4().hex[:12]}",
        }
    )


def _existing_parent(client: MlflowClient, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:  # another tracking store, or deleted for good
        return None
    return run_id if run.info.lifecycle_stage == "active" else None
