"""The train flow launches torchrun through its task; a Prefect retry of that task resumes
from the checkpoint the failed attempt left, and a bug or bad input is not retried."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.train import train
from mlsys_core.config import Settings
from mlsys_core.features.store import FeatureSetRef
from mlsys_core.tracking import tracking_client
from mlsys_core.training.checkpoint import CheckpointStore
from mlsys_core.training.config import TrainConfig
from mlsys_core.training.distributed import LaunchConfig
from mlsys_core.training.launch import TrainingFailed, job_key
from tests.mlsys_core.training.faults import Killer

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

CONFIG = TrainConfig(epochs=2, batch_size=256, dropout=0.0, patience=5, device="cpu")


def task_run_counts(flow_run_id) -> list[int]:  # noqa: ANN001
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [r.run_count for r in runs if r.name.startswith("train_model")]


def test_a_retry_of_the_training_task_resumes_from_the_checkpoint(
    settings: Settings, make_feature_set: Callable[[Settings], FeatureSetRef]
) -> None:
    features = make_feature_set(settings)
    # No torchrun restarts: the lost rank fails the task, and Prefect's retry takes over.
    launch = LaunchConfig(
        strategy="ddp", nproc_per_node=2, max_restarts=0, checkpoint_every_steps=4
    )
    key = job_key(features, CONFIG, launch)
    store = CheckpointStore(settings.root / "checkpoints" / key)
    with Killer(settings.root / "jobs" / key, lambda: bool(store.steps())) as killer:
        state = train(features=features, config=CONFIG, launch=launch, return_state=True)
    assert len(killer.killed) == 1
    trained = state.result()
    assert trained.resumed_from_step is not None and trained.resumed_from_step >= 4
    assert task_run_counts(state.state_details.flow_run_id) == [2]  # one retry
    run = tracking_client(settings.mlflow_uri).get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlsys.model_uri"] == trained.model_uri
    assert run.data.tags["mlsys.resumed_from_step"] == str(trained.resumed_from_step)


def test_a_failing_worker_fails_the_flow_at_once_without_retry(
    settings: Settings, make_feature_set: Callable[[Settings], FeatureSetRef]
) -> None:
    features = make_feature_set(settings)
    # A feature-set version that is not in the lake: every rank raises on loading it.
    gone = features.snapshot.model_copy(
        update={"snapshot_id": "0" * 20, "path": str(settings.lake_dir / "nowhere")}
    )
    missing = features.model_copy(update={"snapshot": gone})
    launch = LaunchConfig(strategy="ddp", nproc_per_node=2, max_restarts=0)
    state = train(features=missing, config=CONFIG, launch=launch, return_state=True)
    assert state.is_failed()
    with pytest.raises(TrainingFailed, match=r"on rank \d: LakeError: snapshot .*0{20} is missing"):
        state.result()
    assert task_run_counts(state.state_details.flow_run_id) == [1]  # not retried
