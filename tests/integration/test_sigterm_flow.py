"""SIGTERM to a process running a flow (a scheduler stopping it, a cancelled run). The train
flow: every process of the torchrun group ends and the MLflow run is KILLED, never RUNNING or
FINISHED. The tune flow: its trials stop at their next epoch instead of training on while
the stopped flow waits for them, and their runs and the study's parent run end KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.tracking import tracking_client
from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.launch import job_key
from mlsys_core.tuning.study import TAG_STUDY
from mlsys_core.tuning.trial import TAG_STATE
from tests.integration.conftest import REPO
from tests.mlsys_core.training.test_launch import (
    CONFIG,
    group_pids,
    runs_by_status,
    wait_for,
    wait_gone,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.distributed]

LAUNCH = LaunchConfig(strategy="ddp", nproc_per_node=2, max_restarts=0, checkpoint_every_steps=2)

FLOW = """
import sys
from flows.train import train
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.config import TrainConfig

train(
    config=TrainConfig.model_validate_json(sys.argv[1]),
    spec=sys.argv[2],
    launch=LaunchConfig.model_validate_json(sys.argv[3]),
)
"""


@contextmanager
def flow_process(
    script: str, args: list[str], settings: Settings, log: Path
) -> Iterator[subprocess.Popen]:
    """``python -c script *args`` on the embedded Prefect server, as `make demo` runs flows,
    killed at the end if still running."""
    env = {**os.environ, "MLSYS_STATE_DIR": str(settings.root)}
    env.pop("PREFECT_API_URL", None)  # the embedded server, as `make demo` runs flows
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # as the Makefile
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], env=env, cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_to_the_flow_stops_the_group_and_kills_the_run(
    tmp_path: Path, make_feature_set: Callable[[Settings], FeatureSetRef]
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    features = make_feature_set(settings)
    key = job_key(features, CONFIG, LAUNCH)
    job_dir = settings.root / "jobs" / key
    store = CheckpointStore(settings.root / "checkpoints" / key)
    args = [CONFIG.model_dump_json(), features.snapshot.table, LAUNCH.model_dump_json()]
    log = tmp_path / "flow.log"
    with flow_process(FLOW, args, settings, log) as proc:
        wait_for(lambda: bool(store.steps()) and len(group_pids(job_dir)) == 3, 420, proc)
        group = group_pids(job_dir)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode != 0, log.read_text()[-3000:]
    assert wait_gone(group, 10) == set()  # torchrun and both ranks
    statuses = runs_by_status(settings)
    assert "RUNNING" not in statuses and "FINISHED" not in statuses, statuses
    assert len(statuses.get("KILLED", [])) == 1


TUNE = """
import sys
from flows.tune import tune
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training.config import TrainConfig

tune(
    features=FeatureSetRef.model_validate_json(sys.argv[1]),
    pruner="none",
    n_trials=4,
    parallelism=2,
    study_name="stopped",
    base_config=TrainConfig(epochs=1000, patience=1000, device="cpu"),
    train_final=False,
)
"""


def test_sigterm_to_the_tune_flow_stops_its_trials_and_kills_their_runs(
    tmp_path: Path, make_feature_set: Callable[[Settings], FeatureSetRef]
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    features = make_feature_set(settings)
    storage = settings.optuna_url()

    def two_trials_running() -> bool:
        # Only once the flow has made the database: two processes creating it would race.
        if "A new study created in RDB with name: stopped" not in log.read_text():
            return False
        study = optuna.load_study(study_name="stopped", storage=storage)
        return sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials) == 2

    log = tmp_path / "flow.log"
    with flow_process(TUNE, [features.model_dump_json()], settings, log) as proc:
        wait_for(two_trials_running, 420, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode != 0, log.read_text()[-3000:]

    states = [t.state.name for t in optuna.load_study(study_name="stopped", storage=storage).trials]
    assert states == ["FAIL", "FAIL"], states  # neither trained on, nor another one started
    client = tracking_client(settings.mlflow_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_STUDY}` = 'stopped'"
    )
    trials = [r for r in runs if r.data.tags.get(TAG_STATE) == "STOPPED"]
    parents = [r for r in runs if r not in trials]
    assert len(trials) == 2 and len(parents) == 1, [r.info.run_name for r in runs]
    assert {r.info.status for r in runs} == {"KILLED"}
    for run in trials:  # stopped at an epoch boundary, its curve logged up to there
        epochs = len(client.get_metric_history(run.info.run_id, "val_auc"))
        assert epochs < 1000
    assert "Cancelled" in log.read_text()  # the trial tasks, in Prefect's log
