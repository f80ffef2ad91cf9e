"""SIGTERM to a process running the train flow (a scheduler stopping it, a cancelled run):
every process of the torchrun group ends and the MLflow run is KILLED, never RUNNING or
FINISHED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.launch import job_key
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
from mlsys_core.training.trainer import TrainConfig

train(
    config=TrainConfig.model_validate_json(sys.argv[1]),
    spec=sys.argv[2],
    launch=LaunchConfig.model_validate_json(sys.argv[3]),
)
"""


def test_sigterm_to_the_flow_stops_the_group_and_kills_the_run(
    tmp_path: Path, make_feature_set: Callable[[Settings], FeatureSetRef]
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    features = make_feature_set(settings)
    key = job_key(features, CONFIG, LAUNCH)
    job_dir = settings.root / "jobs" / key
    store = CheckpointStore(settings.root / "checkpoints" / key)
    env = {**os.environ, "MLSYS_STATE_DIR": str(settings.root)}
    env.pop("PREFECT_API_URL", None)  # the embedded server, as `make demo` runs flows
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # as the Makefile
    args = [CONFIG.model_dump_json(), features.snapshot.table, LAUNCH.model_dump_json()]
    log = tmp_path / "flow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOW, *args], env=env, cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: bool(store.steps()) and len(group_pids(job_dir)) == 3, 420, proc)
        group = group_pids(job_dir)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, log.read_text()[-3000:]
    assert wait_gone(group, 10) == set()  # torchrun and both ranks
    statuses = runs_by_status(settings)
    assert "RUNNING" not in statuses and "FINISHED" not in statuses, statuses
    assert len(statuses.get("KILLED", [])) == 1
