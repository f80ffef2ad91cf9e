"""Fault tolerance with real torchrun groups (gloo, 2 CPU ranks) on the small feature set:
a SIGKILLed rank is restarted and training resumes from the last checkpoint; exhausted
restarts fail fast; SIGTERM leaves the MLflow run KILLED, never RUNNING."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training import launch as launch_core
from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.launch import WorkersLost, job_key
from mlsys_core.training.run import TrainedModel
from mlsys_core.training.trainer import TrainConfig
from tests.mlsys_core.training.faults import Killer

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

CONFIG = TrainConfig(epochs=3, batch_size=256, dropout=0.0, patience=5, device="cpu")
DDP = LaunchConfig(
    strategy="ddp", nproc_per_node=2, max_restarts=1, checkpoint_every_steps=4, keep_checkpoints=3
)


@dataclass(frozen=True)
class Lake:
    settings: Settings
    feature_set: FeatureSetRef


@pytest.fixture(scope="module")
def lake(
    tmp_path_factory: pytest.TempPathFactory,
    make_feature_set: Callable[[Settings], FeatureSetRef],
) -> Lake:
    settings = Settings(state_dir=tmp_path_factory.mktemp("launch_state"))
    return Lake(settings, make_feature_set(settings))


@pytest.fixture(scope="module")
def uninterrupted(lake: Lake) -> TrainedModel:
    """The same training without faults, as one in-process run (same global batch)."""
    return launch_core.train(lake.feature_set, CONFIG, lake.settings, LaunchConfig())


def dirs(lake: Lake, launch: LaunchConfig) -> tuple[Path, CheckpointStore]:
    key = job_key(lake.feature_set, CONFIG, launch)
    root = lake.settings.root
    return root / "jobs" / key, CheckpointStore(root / "checkpoints" / key)


def runs_by_status(settings: Settings) -> dict[str, list[str]]:
    client = MlflowClient(settings.mlflow_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    out: dict[str, list[str]] = {}
    for run in client.search_runs([experiment.experiment_id]):
        out.setdefault(run.info.status, []).append(run.info.run_id)
    return out


def test_sigkill_of_a_rank_restarts_the_group_and_resumes(
    lake: Lake, uninterrupted: TrainedModel
) -> None:
    job_dir, store = dirs(lake, DDP)
    with ThreadPoolExecutor(1) as pool, Killer(job_dir, lambda: bool(store.steps())) as killer:
        future = pool.submit(launch_core.train, lake.feature_set, CONFIG, lake.settings, DDP)
        trained = future.result(timeout=300)
    assert len(killer.killed) == 1
    assert trained.resumed_from_step is not None and trained.resumed_from_step >= 4
    assert "failed (exitcode: -9)" in (job_dir / "torchrun.log").read_text()  # seen by torchrun
    for metric in ("test_auc", "test_log_loss"):
        assert trained.metrics[metric] == pytest.approx(uninterrupted.metrics[metric], rel=0.01), (
            metric
        )
    run = MlflowClient(lake.settings.mlflow_uri).get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlsys.resumed_from_step"] == str(trained.resumed_from_step)
    assert run.data.params["strategy"] == "ddp" and run.data.params["world_size"] == "2"
    # The killed attempt's rank 0 got SIGTERM from torchrun and closed its run.
    assert trained.run_id not in runs_by_status(lake.settings).get("RUNNING", [])
    assert store.steps() == []  # a finished job clears its checkpoints


def test_a_rank_0_killed_outright_leaves_no_run_running(lake: Lake) -> None:
    """SIGKILL gives rank 0 no chance to end its MLflow run; the launcher ends it KILLED."""
    job_dir, store = dirs(lake, DDP)
    before = set(runs_by_status(lake.settings).get("KILLED", []))
    with ThreadPoolExecutor(1) as pool, Killer(job_dir, lambda: bool(store.steps()), rank=0) as k:
        future = pool.submit(launch_core.train, lake.feature_set, CONFIG, lake.settings, DDP)
        trained = future.result(timeout=300)
    assert len(k.killed) == 1
    statuses = runs_by_status(lake.settings)
    assert "RUNNING" not in statuses
    killed = set(statuses.get("KILLED", [])) - before
    assert len(killed) == 1 and trained.run_id not in killed
    assert trained.run_id in statuses["FINISHED"]


def test_exhausted_restarts_fail_fast_with_a_clear_error(lake: Lake) -> None:
    launch = DDP.model_copy(update={"max_restarts": 1, "collective_timeout_s": 10.0})
    job_dir, _ = dirs(lake, launch)
    started = time.monotonic()
    with Killer(job_dir, lambda: True, times=2) as killer:
        with pytest.raises(WorkersLost, match="restarts are exhausted") as failure:
            launch_core.train(lake.feature_set, CONFIG, lake.settings, launch)
    elapsed = time.monotonic() - started
    assert len(killer.killed) == 2  # the first attempt and its one restart
    assert elapsed < 120
    assert "max_restarts=1" in str(failure.value)
    assert "RUNNING" not in runs_by_status(lake.settings)


def test_sigterm_ends_the_mlflow_run_killed(lake: Lake) -> None:
    launch = DDP.model_copy(update={"max_restarts": 0, "checkpoint_every_steps": 2})
    job_dir, store = dirs(lake, launch)
    before = set(runs_by_status(lake.settings).get("KILLED", []))
    # SIGTERM to torchrun itself, as a scheduler stopping the job would send it.
    with Killer(job_dir, lambda: bool(store.steps()), rank=0, sig=signal.SIGTERM, agent=True):
        with pytest.raises(WorkersLost):
            launch_core.train(lake.feature_set, CONFIG, lake.settings, launch)
    statuses = runs_by_status(lake.settings)
    assert "RUNNING" not in statuses
    assert len(set(statuses.get("KILLED", [])) - before) == 1
