"""Trials on real (small) data: nested MLflow runs, pruning, resume, Pareto search, two
processes joining one SQLite study, and clear errors for unusable studies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from mlsys_core.config import Settings
from mlsys_core.data.lake import Lake
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.tracking import configure_mlflow, tracking_client
from mlsys_core.training.config import ModelConfig, TrainConfig
from mlsys_core.training.trainer import EpochMetrics, Trainer
from mlsys_core.tuning import study as study_module
from mlsys_core.tuning.budget import EpochBudget
from mlsys_core.tuning.data import load_prepared, prepare_data
from mlsys_core.tuning.report import best_trial, finish_study
from mlsys_core.tuning.samplers import PrunerConfig, SamplerConfig, SearchConfig
from mlsys_core.tuning.space import Choice, IntRange, SearchSpace
from mlsys_core.tuning.study import (
    PARENT_RUN_TAG,
    StudyJob,
    TuningError,
    forget_studies,
    open_study,
    redacted,
    start_study,
)
from mlsys_core.tuning.trial import (
    TAG_STATE,
    EpochGate,
    TrialStopped,
    _end_lost_trial_runs,
    _start_trial_run,
    run_trial,
    stop_trials,
    trials_stop_on_exit,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
REPO = Path(__file__).resolve().parents[3]
BASE = TrainConfig(epochs=3, patience=3, device="cpu")
ONE_EPOCH = TrainConfig(epochs=1, device="cpu")
# Small networks and big batches: the tests check the plumbing, not what tuning finds.
TINY = SearchSpace(
    width=Choice(choices=[16, 32]),
    depth=IntRange(low=1, high=2),
    batch_size=Choice(choices=[1024, 2048]),
    max_embedding_dim=Choice(choices=[2, 4]),
)


@pytest.fixture(scope="module")
def state(
    tmp_path_factory: pytest.TempPathFactory, make_feature_set: Callable[[Settings], FeatureSetRef]
) -> tuple[Settings, FeatureSetRef]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("tuning_state"))
    return settings, make_feature_set(settings)


def _prepare(state):  # noqa: ANN001, ANN202
    settings, features = state
    return prepare_data(features, Lake(settings.lake_dir), settings.root / "tuning" / "data")


def _start(job: StudyJob, settings: Settings) -> StudyJob:
    client = configure_mlflow(settings.tracking)
    experiment = client.get_experiment_by_name(settings.experiment)
    return start_study(job, client, experiment.experiment_id)


def _client(settings: Settings) -> MlflowClient:
    return tracking_client(settings.mlflow_uri)


def _job(state, name: str, base: TrainConfig = BASE, **search) -> StudyJob:  # noqa: ANN001
    settings, features = state
    return StudyJob(
        name=name,
        storage=settings.optuna_url(),
        search=SearchConfig(**search),
        space=TINY,
        base=base,
        data=_prepare(state),
    )


def test_data_is_prepared_once_per_feature_set(state):
    settings, features = state
    first = _prepare(state)
    stamp = Path(first.path).stat().st_mtime_ns
    again = _prepare(state)
    assert again == first and Path(first.path).stat().st_mtime_ns == stamp
    data = load_prepared(first.path)
    assert data.x_train.shape == (first.rows["train"], data.x_valid.shape[1])
    assert data.x_train.dtype == np.float32 and set(np.unique(data.y_train)) == {0.0, 1.0}


def test_trials_are_nested_mlflow_runs_with_per_epoch_curves(state):
    settings, _ = state
    job = _start(
        _job(
            state, "nested", pruner=PrunerConfig(name="none"), sampler=SamplerConfig(name="random")
        ),
        settings,
    )
    outcomes = [run_trial(job, _client(settings)) for _ in range(2)]
    client = tracking_client(settings.mlflow_uri)
    children = client.search_runs(
        [job.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{job.parent_run_id}'"
    )
    assert {r.info.run_id for r in children} == {o.mlflow_run_id for o in outcomes}
    for outcome in outcomes:
        run = client.get_run(outcome.mlflow_run_id)
        assert run.info.status == "FINISHED" and outcome.state == "COMPLETE"
        assert float(run.data.params["learning_rate"]) == pytest.approx(
            outcome.params["learning_rate"]
        )
        curve = client.get_metric_history(outcome.mlflow_run_id, "val_auc")
        assert [m.step for m in curve] == [1, 2, 3]
        # The objective is the AUC of the epoch whose weights the trainer keeps.
        best_epoch = int(run.data.metrics["best_epoch"])
        assert outcome.values[0] == pytest.approx(curve[best_epoch - 1].value)
        assert 0 < outcome.train_seconds < outcome.trial_seconds

    report = finish_study(job, _client(settings))
    parent = client.get_run(job.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlsys.stage"] == "tune"
    assert parent.data.metrics["trials_complete"] == 2
    assert report.best_values[0] == max(o.values[0] for o in outcomes)
    logged = {a.path for a in client.list_artifacts(job.parent_run_id, "plots")}
    assert set(report.plots) == logged
    assert {"plots/optimization_history.png", "plots/parallel_coordinate.png"} <= logged


def test_a_pruned_trial_stops_training(state):
    settings, _ = state
    job = _start(
        _job(
            state,
            "pruning",
            sampler=SamplerConfig(name="random", seed=1),
            pruner=PrunerConfig(name="median", n_startup_trials=1, n_warmup_steps=0),
        ),
        settings,
    )
    outcomes = [run_trial(job, _client(settings)) for _ in range(5)]
    pruned = [o for o in outcomes if o.state == "PRUNED"]
    assert pruned, [o.values for o in outcomes]
    client = tracking_client(settings.mlflow_uri)
    for outcome in pruned:
        assert outcome.epochs < BASE.epochs
        run = client.get_run(outcome.mlflow_run_id)
        assert run.info.status == "KILLED" and run.data.tags["mlsys.tuning.state"] == "PRUNED"
        assert len(client.get_metric_history(outcome.mlflow_run_id, "val_auc")) == outcome.epochs


def test_an_epoch_budget_is_spent_exactly(state):
    settings, _ = state
    job = _job(
        state,
        "budget",
        base=BASE,  # 3 epochs per trial at most: the third trial must stop after one
        sampler=SamplerConfig(name="random", seed=2),
        pruner=PrunerConfig(name="none"),
    ).model_copy(update={"epoch_budget": 7})
    job = _start(job, settings)
    outcomes = []
    while (outcome := run_trial(job, _client(settings))) is not None:
        outcomes.append(outcome)
        assert len(outcomes) <= 7, "the budget did not stop the trials"
    # Patience 3 cannot stop a 3-epoch trial early: 3 + 3, then 1 epoch left for the third.
    assert [o.epochs for o in outcomes] == [3, 3, 1]
    assert [o.state for o in outcomes] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [o.budget_left for o in outcomes] == [4, 1, 0]
    study = optuna.load_study(study_name="budget", storage=job.storage)
    # Cut short before its next epoch: pruned, not a complete trial with a partial AUC.
    assert study.trials[2].user_attrs["stopped_by"] == "budget"
    assert len(study.trials) == 3  # the refused call started no trial
    assert run_trial(job, _client(settings)) is None


def test_the_epoch_budget_is_shared_by_parallel_trials(state):
    settings, _ = state
    job = _job(
        state,
        "budget-threads",
        base=BASE,
        sampler=SamplerConfig(name="random", seed=3),
        pruner=PrunerConfig(name="none"),
    ).model_copy(update={"epoch_budget": 8})
    job = _start(job, settings)
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = [o for o in pool.map(lambda _: run_trial(job, _client(settings)), range(6)) if o]
    assert sum(o.epochs for o in outcomes) == 8


def test_the_epoch_gate_takes_every_epoch_but_the_first_from_the_budget():
    study = optuna.create_study(direction="maximize")
    budget = EpochBudget(3)
    assert budget.take()  # what run_trial takes before the trial exists
    gate = EpochGate(study.ask(), budget, prune=False)
    assert [gate.before(epoch) for epoch in (1, 2, 3, 4)] == [True, True, True, False]
    assert budget.left == 0
    assert gate.before(1)  # the first epoch was paid for already
    unbudgeted = EpochGate(study.ask(), None, prune=False)
    assert all(unbudgeted.before(epoch) for epoch in range(1, 50))


def test_the_epoch_gate_reports_each_epoch_and_raises_when_the_pruner_stops():
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.6)
    )
    trial = study.ask()
    gate = EpochGate(trial, None, prune=True)
    gate.after(1, 0.7)
    with pytest.raises(optuna.TrialPruned, match="epoch 2, val AUC 0.5500"):
        gate.after(2, 0.55)
    assert study.trials[0].intermediate_values == {1: 0.7, 2: 0.55}
    # A Pareto search is not pruned by Optuna: nothing is reported, nothing stops it.
    silent = study.ask()
    EpochGate(silent, None, prune=False).after(1, 0.1)
    assert study.trials[1].intermediate_values == {}


def test_a_stopped_run_stops_its_trial_at_the_next_epoch_and_starts_no_other(state):
    settings, _ = state
    long = TrainConfig(epochs=1000, patience=1000, device="cpu")
    job = _start(_job(state, "stopped", long, pruner=PrunerConfig(name="none")), settings)
    study = optuna.load_study(study_name=job.name, storage=job.storage)
    client = _client(settings)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_trial, job, client)
        deadline = time.monotonic() + 120
        while not study.trials and time.monotonic() < deadline:
            time.sleep(0.2)
        stop_trials(job, client)
        with pytest.raises(TrialStopped, match="was stopped before epoch"):
            running.result(timeout=120)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["mlsys.tuning.state"] == "STOPPED"
    assert len(client.get_metric_history(run.info.run_id, "val_auc")) < long.epochs
    assert client.get_run(job.parent_run_id).info.status == "KILLED"
    with pytest.raises(TrialStopped, match="no trial starts"):
        run_trial(job, client)
    assert len(study.trials) == 1
    # Another run of the same study is not stopped: it runs its trials.
    other = _start(_job(state, "stopped", ONE_EPOCH, pruner=PrunerConfig(name="none")), settings)
    assert run_trial(other, client).state == "COMPLETE"


@pytest.mark.parametrize(
    ("raised", "status"), [(KeyboardInterrupt, "KILLED"), (ValueError, "FAILED")]
)
def test_leaving_the_trials_wait_by_an_exception_stops_them(state, raised, status):
    settings, _ = state
    client = _client(settings)
    job = _start(_job(state, f"left-by-{raised.__name__}", ONE_EPOCH), settings)
    with pytest.raises(raised), trials_stop_on_exit(job, client):
        raise raised()
    assert client.get_run(job.parent_run_id).info.status == status
    with pytest.raises(TrialStopped):
        run_trial(job, client)


def test_leaving_the_trials_wait_normally_stops_nothing(state):
    settings, _ = state
    client = _client(settings)
    job = _start(_job(state, "left-normally", ONE_EPOCH), settings)
    with trials_stop_on_exit(job, client):
        pass
    assert client.get_run(job.parent_run_id).info.status == "RUNNING"
    assert run_trial(job, client).state == "COMPLETE"


def test_trial_pruned_raised_in_the_epoch_callback_leaves_the_trainer(state):
    settings, features = state
    ref = _prepare(state)
    data = load_prepared(ref.path)
    trainer = Trainer(
        TrainConfig(epochs=5, batch_size=2048, device="cpu"),
        ModelConfig(cardinalities=ref.cardinalities, n_numeric=ref.n_numeric, hidden=[16]),
    )
    trainer.setup(data.x_train, data.y_train, data.x_valid, data.y_valid)

    def prune_at_two(m: EpochMetrics) -> None:
        if m.epoch == 2:
            raise optuna.TrialPruned("stop")

    with pytest.raises(optuna.TrialPruned):
        trainer.train(on_epoch=prune_at_two)
    assert trainer.epoch == 2


def test_a_seeded_search_repeats_trial_for_trial(state, tmp_path: Path):
    """What bench/tuning.py's README relies on: a seeded TPE + Hyperband search on one
    torch thread gives the same configs, AUCs, epochs and pruning decisions every time.

    Same study name in two databases: Hyperband puts a trial in a bracket by a hash of the
    study name and trial number, so another name prunes other trials.
    """
    import torch  # noqa: PLC0415

    settings, _ = state
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for db in ("a", "b"):
            job = _job(
                state,
                "repeat",
                sampler=SamplerConfig(name="tpe", seed=11, n_startup_trials=3),
                pruner=PrunerConfig(name="hyperband", min_resource=1, reduction_factor=3),
            ).model_copy(update={"storage": f"sqlite:///{tmp_path / db}.db"})
            job = _start(job, settings)
            runs.append(
                [
                    (o.params, o.values, o.epochs, o.state)
                    for o in (run_trial(job, _client(settings)) for _ in range(7))
                ]
            )
            forget_studies()
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1]
    assert len({json.dumps(params, sort_keys=True) for params, *_ in runs[0]}) == 7
    assert any(state == "PRUNED" for *_, state in runs[0]), runs[0]


def test_rerunning_resumes_the_study_under_the_same_parent_run(state):
    settings, _ = state
    job = _job(state, "resume", base=ONE_EPOCH, pruner=PrunerConfig(name="none"))
    first = _start(job, settings)
    before = [run_trial(first, _client(settings)) for _ in range(2)]
    forget_studies()  # as a new process would: a fresh sampler, seeded past the 2 trials
    second = _start(job, settings)
    after = [run_trial(second, _client(settings)) for _ in range(2)]
    assert second.parent_run_id == first.parent_run_id
    study = optuna.load_study(study_name="resume", storage=job.storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert [o.number for o in before + after] == [0, 1, 2, 3]
    assert before[0].params != after[0].params  # the resumed sampler does not replay draws


def test_auc_against_model_size_gives_a_pareto_front(state):
    settings, _ = state
    job = _start(
        _job(
            state,
            "pareto",
            base=ONE_EPOCH,
            sampler=SamplerConfig(name="nsga2", population_size=2),
            pruner=PrunerConfig(name="none"),
            objectives="auc_vs_size",
        ),
        settings,
    )
    outcomes = [run_trial(job, _client(settings)) for _ in range(3)]
    study = optuna.load_study(study_name="pareto", storage=job.storage)
    for outcome, trial in zip(outcomes, study.trials, strict=True):
        assert len(outcome.values) == 2
        assert outcome.values[1] == trial.user_attrs["n_params"] > 0
    best = best_trial(study)
    assert best in study.best_trials
    assert best.values[0] == max(t.values[0] for t in study.best_trials)
    assert finish_study(job, _client(settings)).best_number == best.number


@pytest.mark.slow
def test_two_processes_join_one_sqlite_study(state, tmp_path):
    settings, _ = state
    job = _job(state, "joined", base=ONE_EPOCH, pruner=PrunerConfig(name="none"))
    job = _start(job, settings)
    code = (
        "import sys\n"
        "from mlflow import MlflowClient\n"
        "from mlsys_core.tuning.study import StudyJob\n"
        "from mlsys_core.tuning.trial import run_trial\n"
        "job = StudyJob.model_validate_json(sys.argv[1])\n"
        "client = MlflowClient(sys.argv[2])\n"
        "print([run_trial(job, client).number for _ in range(2)])\n"
    )
    args = [sys.executable, "-c", code, job.model_dump_json(), settings.mlflow_uri]
    workers = [
        subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    numbers = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        numbers += json.loads(out.strip().splitlines()[-1])
    assert sorted(numbers) == [0, 1, 2, 3]  # each trial number given out once
    study = optuna.load_study(study_name="joined", storage=job.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4


def test_a_trial_whose_worker_died_is_failed_and_its_run_ended(state, monkeypatch):
    """A worker killed outright (SIGKILL, a lost machine) leaves its trial RUNNING in the
    study and in MLflow; the next worker's trial fails it by its stale heartbeat and ends its
    run, instead of leaving it RUNNING for good."""
    settings, _ = state
    long = TrainConfig(epochs=1000, patience=1000, device="cpu")
    dead = _start(_job(state, "lost", long, pruner=PrunerConfig(name="none")), settings)
    code = (
        "import sys\n"
        "from mlflow import MlflowClient\n"
        "from mlsys_core.tuning.study import StudyJob\n"
        "from mlsys_core.tuning.trial import run_trial\n"
        "run_trial(StudyJob.model_validate_json(sys.argv[1]), MlflowClient(sys.argv[2]))\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code, dead.model_dump_json(), settings.mlflow_uri], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = _client(settings)

    def trial_runs(status: str) -> list:
        return client.search_runs(
            [dead.experiment_id],
            filter_string=(
                f"tags.`{PARENT_RUN_TAG}` = '{dead.parent_run_id}'"
                f" and attributes.status = '{status}'"
            ),
        )

    try:
        deadline = time.monotonic() + 120
        while not trial_runs("RUNNING") and worker.poll() is None:
            assert time.monotonic() < deadline, "the worker's trial never started"
            time.sleep(0.2)
    finally:
        worker.kill()
    assert worker.wait() == -9, worker.stderr.read()[-3000:]
    (lost,) = trial_runs("RUNNING")

    # The next worker, in this process, with a grace period short enough for a test.
    monkeypatch.setattr(study_module, "GRACE_SECONDS", 1)
    forget_studies()
    time.sleep(2)  # the dead worker's last heartbeat is now older than the grace
    try:
        job = _start(_job(state, "lost", ONE_EPOCH, pruner=PrunerConfig(name="none")), settings)
        assert run_trial(job, client).state == "COMPLETE"
    finally:
        forget_studies()  # no study handle with the short grace outlives this test
    study = optuna.load_study(study_name="lost", storage=job.storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    run = client.get_run(lost.info.run_id)
    assert run.info.status == "KILLED" and run.data.tags["mlsys.tuning.state"] == "LOST"
    assert trial_runs("RUNNING") == []


def test_a_trial_stopped_beside_the_lost_run_check_keeps_its_state(state):
    """Two trials of one run in two threads, both stopped by SIGTERM: trial 0's worker,
    its trial ended, looks for runs of lost workers while trial 1's worker stops its own.
    Trial 1 is not lost: its run keeps the STOPPED state its worker gave it, not LOST.

    The client runs the other worker's steps, in their order (tag, end the run, then the
    study fails the trial), right after the search for RUNNING runs: the interleaving that
    made a CI run see one STOPPED trial of two.
    """
    settings, _ = state
    job = _start(_job(state, "beside", ONE_EPOCH, pruner=PrunerConfig(name="none")), settings)
    study = open_study(job)
    client = _client(settings)

    def stop(trial: optuna.Trial, run_id: str, client: MlflowClient) -> None:
        client.set_tag(run_id, TAG_STATE, "STOPPED")
        client.set_terminated(run_id, "KILLED")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    checking = study.ask()  # trial 0, whose worker checks
    stop(checking, _start_trial_run(client, job, checking.number), client)
    live = study.ask()  # trial 1, its worker still training
    run_id = _start_trial_run(client, job, live.number)

    class StoppedMeanwhile(MlflowClient):
        def search_runs(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            found = super().search_runs(*args, **kwargs)
            if study.trials[live.number].state == optuna.trial.TrialState.RUNNING:
                stop(live, run_id, self)
            return found

    try:
        _end_lost_trial_runs(study, job, StoppedMeanwhile(settings.mlflow_uri))
        _end_lost_trial_runs(study, job, client)  # and a later check
    finally:
        forget_studies()
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[TAG_STATE] == "STOPPED"


def test_unusable_studies_fail_with_a_clear_error(state):
    settings, _ = state
    with pytest.raises(TuningError, match="not a database URL"):
        _start(_job(state, "x").model_copy(update={"storage": "not a url"}), settings)
    _start(_job(state, "directions", pruner=PrunerConfig(name="none")), settings)
    forget_studies()
    pareto = _job(state, "directions", pruner=PrunerConfig(name="none"), objectives="auc_vs_size")
    with pytest.raises(TuningError, match="directions"):
        _start(pareto, settings)
    with pytest.raises(TuningError, match="started job"):
        run_trial(_job(state, "unstarted"), _client(settings))


def test_storage_urls_are_redacted_for_tags():
    url = "postgresql+psycopg://tuner:s3cret@db.example:5432/optuna"
    assert "s3cret" not in redacted(url) and "tuner" in redacted(url)


def test_storage_comes_from_the_parameter_then_the_environment_then_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLSYS_OPTUNA_STORAGE", raising=False)
    settings = Settings(state_dir=tmp_path)
    assert settings.optuna_url() == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    monkeypatch.setenv("MLSYS_OPTUNA_STORAGE", "postgresql://db/optuna")
    assert Settings(state_dir=tmp_path).optuna_url() == "postgresql://db/optuna"
    assert Settings(state_dir=tmp_path).optuna_url("sqlite:///x.db") == "sqlite:///x.db"
